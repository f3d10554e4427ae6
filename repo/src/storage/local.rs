//! A repository in a local directory.
//!
//! Not through OpenDAL: crash safety needs write-to-temp, fsync, rename, fsync of
//! the directory, in that order, which OpenDAL's fs service does not promise.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{ObjectInfo, Storage, StorageError, StorageResult};

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn err(&self, op: &'static str, key: &str, e: std::io::Error) -> StorageError {
        if e.kind() == ErrorKind::NotFound {
            return StorageError::NotFound {
                location: self.location(),
                key: key.to_string(),
            };
        }
        let transient = matches!(
            e.kind(),
            ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock
        );
        StorageError::Backend {
            location: self.location(),
            op,
            key: key.to_string(),
            message: e.to_string(),
            transient,
        }
    }

    fn create_dirs(&self, dir: &Path) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(dir)?;
        // Repository directories are private to the owner (SEC-5, DESIGN §7).
        let mut d = dir;
        while d.starts_with(&self.root) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))?;
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        Ok(())
    }
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &str, data: &[u8]) -> StorageResult<()> {
        let path = self.path(key);
        let dir = path.parent().expect("keys have a parent").to_path_buf();
        self.create_dirs(&dir)
            .map_err(|e| self.err("mkdir", key, e))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{:016x}",
            path.file_name().unwrap().to_string_lossy(),
            rand::random::<u64>()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.err("put", key, e)
        })
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        Some(self.root.join("data"))
    }

    fn put_file(&self, key: &str, staged: &Path) -> StorageResult<()> {
        let path = self.path(key);
        let dir = path.parent().expect("keys have a parent").to_path_buf();
        self.create_dirs(&dir)
            .map_err(|e| self.err("mkdir", key, e))?;
        // The staging file is already fsynced; rename, then make the rename durable.
        fs::rename(staged, &path).map_err(|e| self.err("put_file", key, e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err("put_file", key, e))
    }

    fn get(&self, key: &str) -> StorageResult<Vec<u8>> {
        fs::read(self.path(key)).map_err(|e| self.err("get", key, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = File::open(self.path(key))?;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        read().map_err(|e| self.err("get_range", key, e))
    }

    fn stat(&self, key: &str) -> StorageResult<ObjectInfo> {
        let m = fs::metadata(self.path(key)).map_err(|e| self.err("stat", key, e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: m.len(),
            modified: m.modified().ok(),
        })
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let start = self.path(prefix);
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.err("list", prefix, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let ft = entry.file_type().map_err(|e| self.err("list", prefix, e))?;
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if ft.is_file() && !name.starts_with('.') {
                    let m = match entry.metadata() {
                        Ok(m) => m,
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => return Err(self.err("list", prefix, e)),
                    };
                    let rel = entry
                        .path()
                        .strip_prefix(&self.root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push(ObjectInfo {
                        key: rel,
                        size: m.len(),
                        modified: m.modified().ok(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}
