//! Extended attributes (SPEC RST-9), POSIX ACLs among them
//! (`system.posix_acl_access`, `system.posix_acl_default`): read from an open
//! descriptor on backup, set on one on restore. In a tree node they are a map
//! from name to base64 value.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustix::io::Errno;

/// Name → base64 of the value.
pub type Xattrs = BTreeMap<String, String>;

/// Linux's bounds: a name list and a value are each at most 64 KiB.
const MAX: usize = 64 << 10;

fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP || e == Errno::NODATA
}

/// Every extended attribute of the open file or directory `fd`. A file
/// system without them gives none.
pub fn read(fd: impl AsFd) -> io::Result<Xattrs> {
    let mut small = [0u8; 1024];
    let mut big;
    let list: &[u8] = match rustix::fs::flistxattr(&fd, &mut small[..]) {
        Ok(n) => &small[..n],
        Err(Errno::RANGE) => {
            big = vec![0u8; MAX];
            let n = rustix::fs::flistxattr(&fd, &mut big[..])?;
            &big[..n]
        }
        Err(e) if unsupported(e) => return Ok(Xattrs::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Xattrs::new();
    if list.is_empty() {
        return Ok(out);
    }
    let mut value = vec![0u8; MAX];
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(text) = std::str::from_utf8(name) else {
            continue;
        };
        let c = CString::new(name).expect("split on NUL");
        match rustix::fs::fgetxattr(&fd, c.as_c_str(), &mut value[..]) {
            Ok(n) => {
                out.insert(text.to_string(), B64.encode(&value[..n]));
            }
            // Removed since it was listed.
            Err(e) if unsupported(e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Sets `x` on the open `fd`; returns how many could not be set (a
/// namespace only root may write, or a file system without them).
pub fn write(fd: impl AsFd, x: &Xattrs) -> io::Result<u64> {
    let mut skipped = 0;
    for (name, value) in x {
        let Ok(value) = B64.decode(value) else {
            skipped += 1;
            continue;
        };
        let Ok(c) = CString::new(name.as_bytes()) else {
            skipped += 1;
            continue;
        };
        match rustix::fs::fsetxattr(&fd, c.as_c_str(), &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(e)
                if unsupported(e)
                    || e == Errno::PERM
                    || e == Errno::ACCESS
                    || e == Errno::INVAL =>
            {
                skipped += 1
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(skipped)
}
