//! The restore fidelity property (RST-9): any tree of files (dense and
//! sparse), directories, symlinks, FIFOs, hard links, device nodes (as
//! root), modes with setuid/setgid/sticky bits, user attributes and POSIX
//! ACLs comes back from a backup as it was, and a staged restore over a
//! different tree verifies and swaps to the same result.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;

use crate::restore::restore;
use crate::restore::tests::backed_up;

#[derive(Debug, Clone)]
enum Entry {
    File {
        data: Vec<u8>,
        /// Bytes of hole before the data (0: a dense file).
        hole: u64,
        mode: u32,
        note: Option<Vec<u8>>,
        /// Permissions of an ACL entry for uid 1000.
        acl: Option<u16>,
    },
    Symlink(String),
    Fifo(u32),
    /// A hard link to the n-th file (modulo the files made before it).
    Link(usize),
    /// A character device like /dev/null (made only as root).
    Null,
}

fn entry() -> impl Strategy<Value = Entry> {
    let mode = prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o400]);
    prop_oneof![
        6 => (
            prop::collection::vec(any::<u8>(), 0..9000),
            prop::sample::select(vec![0u64, 0, 1 << 20, 3 << 20]),
            mode.clone(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
            prop::option::of(0u16..8),
        )
            .prop_map(|(data, hole, mode, note, acl)| Entry::File { data, hole, mode, note, acl }),
        1 => "[a-z./]{1,20}".prop_map(Entry::Symlink),
        1 => mode.prop_map(Entry::Fifo),
        1 => (0usize..8).prop_map(Entry::Link),
        1 => Just(Entry::Null),
    ]
}

/// An ACL: user::rwx from `mode`, user:1000 with `perm`, group, mask, other.
fn acl(mode: u32, perm: u16) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, p, id) in [
        (0x01u16, ((mode >> 6) & 7) as u16, u32::MAX),
        (0x02, perm, 1000),
        (0x04, ((mode >> 3) & 7) as u16, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, (mode & 7) as u16, u32::MAX),
    ] {
        v.extend(tag.to_le_bytes());
        v.extend(p.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

fn build(root: &Path, entries: &[(u8, Entry)]) {
    for d in ["a", "a/b", "c"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let dirs = ["", "a", "a/b", "c"];
    let mut files = Vec::new();
    for (i, (dir, e)) in entries.iter().enumerate() {
        let path = root
            .join(dirs[*dir as usize % dirs.len()])
            .join(format!("e{i}"));
        match e {
            Entry::File {
                data,
                hole,
                mode,
                note,
                acl: perm,
            } => {
                let f = fs::File::create(&path).unwrap();
                if *hole > 0 {
                    f.set_len(*hole).unwrap();
                }
                std::os::unix::fs::FileExt::write_all_at(&f, data, *hole).unwrap();
                if let Some(v) = note {
                    rustix::fs::fsetxattr(&f, "user.note", v, rustix::fs::XattrFlags::empty())
                        .unwrap();
                }
                if let Some(p) = perm {
                    rustix::fs::fsetxattr(
                        &f,
                        "system.posix_acl_access",
                        &acl(*mode, *p),
                        rustix::fs::XattrFlags::empty(),
                    )
                    .unwrap();
                }
                f.set_permissions(fs::Permissions::from_mode(*mode))
                    .unwrap();
                files.push(path);
            }
            Entry::Symlink(t) => std::os::unix::fs::symlink(t, &path).unwrap(),
            Entry::Fifo(mode) => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Entry::Link(n) if !files.is_empty() => {
                fs::hard_link(&files[n % files.len()], &path).unwrap();
            }
            Entry::Link(_) => {}
            Entry::Null if crate::restore::is_root() => {
                let dev = fs::metadata("/dev/null").unwrap().rdev();
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::from_raw_mode(0o666),
                    dev,
                )
                .unwrap();
            }
            Entry::Null => {}
        }
    }
}

/// Everything a restore must keep, per path: kind, mode, size, contents or
/// target, rdev, attributes, which entries share an inode, and whether a
/// file is sparse (fewer blocks than its length needs).
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let t = m.file_type();
            let what = if t.is_symlink() {
                format!("link {:?}", fs::read_link(&p).unwrap())
            } else if t.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else if t.is_fifo() {
                format!("fifo {:o}", m.mode() & 0o7777)
            } else if t.is_char_device() {
                format!("char {:o} {}", m.mode() & 0o7777, m.rdev())
            } else {
                let f = fs::File::open(&p).unwrap();
                let sparse = m.blocks() * 512 + (1 << 20) <= m.len();
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                format!(
                    "file {:o} {} {} sparse={sparse} same-as={first} xattrs={:?}",
                    m.mode() & 0o7777,
                    m.len(),
                    blake3::hash(&fs::read(&p).unwrap()),
                    crate::xattr::read(&f).unwrap()
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_tree_comes_back_as_it_was(
        entries in prop::collection::vec((any::<u8>(), entry()), 1..24),
        other in prop::collection::vec((any::<u8>(), entry()), 0..6),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        build(&site, &entries);
        let want = describe(&site);
        let (repo, snap) = backed_up(tmp.path(), &site);
        repo.load_index().unwrap();

        let target = tmp.path().join("target");
        restore(&repo, &snap.tree, &target, &[]).unwrap();
        prop_assert_eq!(describe(&target), want.clone());

        // Over a live tree that differs: staged, verified, swapped.
        let live = tmp.path().join("www").join("live");
        build(&live, &other);
        let journal = crate::stage::Journal::open(&tmp.path().join("journal")).unwrap();
        crate::stage::restore_in_place(&repo, &snap.tree, &live, &journal, "p1", i64::MAX, &Default::default()).unwrap();
        prop_assert_eq!(describe(&live), want);
    }
}
