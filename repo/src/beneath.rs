//! File-system access confined beneath one directory, for restores run as
//! root into trees that site users can change while we write.
//!
//! Every operation resolves its path from the held directory descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no component may be a
//! symlink or leave the directory, and the check happens in the kernel at the
//! moment of use, so swapping a directory for a symlink between our steps
//! makes the step fail instead of writing elsewhere. Where `openat2` is not
//! available (kernels before 5.6, some seccomp profiles) the same rule is
//! kept by walking one component at a time with `O_NOFOLLOW`. Metadata is set
//! on the open descriptor (`fchown`, `fchmod`, `futimens`), or for a symlink
//! relative to its parent's descriptor without following it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid};

pub struct Beneath {
    root: OwnedFd,
    path: PathBuf,
}

/// Set once `openat2` answered ENOSYS (or was refused by a filter).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Beneath {
    /// Opens `dir` (following symlinks in the path the operator gave).
    pub fn open(dir: &Path) -> io::Result<Beneath> {
        let root = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath {
            root,
            path: dir.to_path_buf(),
        })
    }

    /// The full path of `rel`, for messages.
    pub fn display(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Opens `rel` beneath the root; no component may be a symlink.
    fn open_at(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match rustix::fs::openat2(
                &self.root,
                rel,
                flags,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                Err(e) if e == rustix::io::Errno::AGAIN => {
                    // A concurrent rename anywhere in the tree; once more, then the walk.
                }
                other => return other.map_err(Into::into),
            }
        }
        self.walk_open(rel, flags, mode)
    }

    /// The fallback of `open_at`: one component at a time, each `O_NOFOLLOW`.
    fn walk_open(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let parts = components(rel)?;
        let Some((last, dirs)) = parts.split_last() else {
            return rustix::fs::openat(&self.root, ".", flags, mode).map_err(Into::into);
        };
        let mut dir: Option<OwnedFd> = None;
        for part in dirs {
            let at = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
            let next = rustix::fs::openat(
                at,
                *part,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            dir = Some(next);
        }
        let at = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
        rustix::fs::openat(at, *last, flags, mode).map_err(Into::into)
    }

    /// The parent directory of `rel`, opened beneath the root, and `rel`'s name.
    fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let fd = self.open_at(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((fd, name))
    }

    /// What is at `rel` (not following a final symlink), if anything.
    pub fn kind(&self, rel: &Path) -> io::Result<Option<rustix::fs::FileType>> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(rustix::fs::FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The status of what is at `rel` (not following a final symlink), if anything.
    pub fn stat(&self, rel: &Path) -> io::Result<Option<rustix::fs::Stat>> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the regular file at `rel` for reading (never blocking on a FIFO).
    pub fn read_file(&self, rel: &Path) -> io::Result<File> {
        Ok(File::from(self.open_at(
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )?))
    }

    /// What the symlink at `rel` points to.
    pub fn read_link(&self, rel: &Path) -> io::Result<std::ffi::OsString> {
        let (dir, name) = self.parent(rel)?;
        let t = rustix::fs::readlinkat(&dir, name, Vec::new())?;
        Ok(std::ffi::OsString::from_vec(t.into_bytes()))
    }

    /// The names in the directory at `rel` (`""` for the root), unsorted.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsString::from_vec(name));
            }
        }
        Ok(names)
    }

    pub fn mkdir(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)).map_err(Into::into)
    }

    /// Removes a file or symlink (never a directory) at `rel`.
    pub fn unlink(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(Into::into)
    }

    pub fn symlink(&self, target: &OsStr, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::symlinkat(target, &dir, name).map_err(Into::into)
    }

    /// A FIFO or device node at `rel` (mode 0600 until its metadata is set).
    pub fn mknod(&self, rel: &Path, kind: rustix::fs::FileType, dev: u64) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mknodat(&dir, name, kind, Mode::from_raw_mode(0o600), dev).map_err(Into::into)
    }

    /// Owner, mode and times of the FIFO or device node at `rel`, which is
    /// never opened (opening a device can act on it): changed through an
    /// O_PATH descriptor, so a symlink put in its place is never followed.
    pub fn set_node_meta(
        &self,
        rel: &Path,
        owner: Option<(u32, u32)>,
        mode: u32,
        mtime_ns: i64,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        if !matches!(
            kind,
            rustix::fs::FileType::Fifo
                | rustix::fs::FileType::CharacterDevice
                | rustix::fs::FileType::BlockDevice
        ) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: replaced while being restored", rel.display()),
            ));
        }
        // The descriptor's /proc link names this inode and no other.
        let own = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if let Some((uid, gid)) = owner {
            let _ = rustix::fs::chown(
                own.as_str(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            );
        }
        rustix::fs::chmod(own.as_str(), Mode::from_raw_mode(mode & 0o7777))?;
        rustix::fs::utimensat(&dir, name, &times(mtime_ns), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(Into::into)
    }

    /// A hard link at `rel` to the file at `existing` (never following a symlink).
    pub fn hard_link(&self, existing: &Path, rel: &Path) -> io::Result<()> {
        let (from_dir, from) = self.parent(existing)?;
        let (to_dir, to) = self.parent(rel)?;
        rustix::fs::linkat(&from_dir, from, &to_dir, to, AtFlags::empty()).map_err(Into::into)
    }

    /// Creates (or truncates) the regular file at `rel`, mode 0600 until its
    /// metadata is set.
    pub fn create_file(&self, rel: &Path) -> io::Result<File> {
        let fd = self.open_at(
            rel,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Opens the existing regular file at `rel` for writing.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        Ok(File::from(self.open_at(
            rel,
            OFlags::WRONLY,
            Mode::empty(),
        )?))
    }

    /// Sets owner (when `owner` is given), extended attributes, mode and
    /// times of the file or directory at `rel` through one descriptor.
    /// Ownership goes first: changing it clears setuid/setgid bits (and a
    /// file capability), which the attributes and the mode then set; the
    /// mode after the ACL, which it agrees with. Returns how many
    /// attributes could not be set.
    pub fn set_meta(
        &self,
        rel: &Path,
        owner: Option<(u32, u32)>,
        xattrs: &crate::xattr::Xattrs,
        mode: u32,
        mtime_ns: i64,
    ) -> io::Result<u64> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        if let Some((uid, gid)) = owner {
            // Best effort, as `chown` by an unprivileged user would be.
            let _ = rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        }
        let skipped = crate::xattr::write(&fd, xattrs)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))?;
        rustix::fs::futimens(&fd, &times(mtime_ns))?;
        Ok(skipped)
    }

    /// Owner and times of the symlink at `rel`, never of what it points to.
    pub fn set_symlink_meta(
        &self,
        rel: &Path,
        owner: Option<(u32, u32)>,
        mtime_ns: i64,
    ) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        if let Some((uid, gid)) = owner {
            let _ = rustix::fs::chownat(
                &dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            );
        }
        rustix::fs::utimensat(&dir, name, &times(mtime_ns), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(Into::into)
    }
}

fn times(mtime_ns: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The normal components of a relative path; anything else is refused.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) if !n.as_bytes().is_empty() => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

/// Whether an error means a symlink (or something else that is not a
/// directory) stood where the path needed a directory or a file.
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both_ways(check: impl Fn()) {
        check();
        NO_OPENAT2.store(true, Ordering::Relaxed);
        check();
        NO_OPENAT2.store(false, Ordering::Relaxed);
    }

    #[test]
    fn nothing_resolves_through_a_symlink_or_out_of_the_root() {
        both_ways(|| {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            let outside = tmp.path().join("outside");
            std::fs::create_dir_all(root.join("d")).unwrap();
            std::fs::create_dir(&outside).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
            let b = Beneath::open(&root).unwrap();
            let mut f = b.create_file(Path::new("d/ok")).unwrap();
            std::io::Write::write_all(&mut f, b"x").unwrap();
            for rel in ["link/x", "../outside/x", "link"] {
                let e = b.create_file(Path::new(rel)).unwrap_err();
                assert!(
                    is_symlink_refusal(&e) || e.kind() == io::ErrorKind::InvalidInput,
                    "{rel}: {e}"
                );
            }
            assert!(b.mkdir(Path::new("link/sub")).is_err());
            assert!(b
                .set_meta(Path::new("link"), None, &Default::default(), 0o777, 0)
                .is_err());
            b.set_symlink_meta(Path::new("link"), None, 5_000_000_000)
                .unwrap();
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
            assert_eq!(
                b.kind(Path::new("link")).unwrap(),
                Some(rustix::fs::FileType::Symlink)
            );
            b.set_meta(
                Path::new("d/ok"),
                None,
                &Default::default(),
                0o640,
                7_000_000_000,
            )
            .unwrap();
            let m = std::fs::metadata(root.join("d/ok")).unwrap();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777,
                0o640
            );
            assert_eq!(std::os::unix::fs::MetadataExt::mtime(&m), 7);
        });
    }
}
