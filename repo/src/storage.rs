//! Storage backends: where repository objects live.
//!
//! Objects are named by slash-separated keys (`config`, `data/ab/<id>` …). A
//! `put` is atomic: readers see the whole object or none of it. Backends are
//! blocking (the backup pipeline runs on threads); async callers use
//! `spawn_blocking`.

mod local;
mod s3;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

pub use local::LocalStorage;
pub use s3::S3Storage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("{location}: object {key} not found")]
    NotFound { location: String, key: String },
    #[error("{location}: {op} {key}: {message}")]
    Backend {
        location: String,
        op: &'static str,
        key: String,
        message: String,
        transient: bool,
    },
    #[error("invalid repository location {0:?}: expected a path or s3://BUCKET[/PREFIX]")]
    BadLocation(String),
}

impl StorageError {
    /// Whether retrying the same call may succeed (timeouts, throttling, 5xx).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Backend {
                transient: true,
                ..
            }
        )
    }
}

pub type StorageResult<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

pub trait Storage: Send + Sync {
    /// Human-readable location with no credentials in it.
    fn location(&self) -> String;
    /// Atomically creates or replaces `key`, durably.
    fn put(&self, key: &str, data: &[u8]) -> StorageResult<()>;
    fn get(&self, key: &str) -> StorageResult<Vec<u8>>;
    fn get_range(&self, key: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>>;
    fn stat(&self, key: &str) -> StorageResult<ObjectInfo>;
    /// Every object whose key starts with `prefix` (a directory such as `data/`).
    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>>;
    /// Deletes `key`; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> StorageResult<()>;

    /// A local directory where large objects can be built on disk and then
    /// moved into place with [`Storage::put_file`]; `None` keeps them in memory.
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Makes a complete, fsynced staging file visible as `key` (atomically).
    fn put_file(&self, key: &str, path: &std::path::Path) -> StorageResult<()> {
        let data = std::fs::read(path).map_err(|e| StorageError::Backend {
            location: self.location(),
            op: "put_file",
            key: key.to_string(),
            message: e.to_string(),
            transient: false,
        })?;
        self.put(key, &data)
    }

    /// A request that lets its bearer create `key` (and nothing else) until
    /// `expires` from now, for writers that must hold no credential. `None`:
    /// this storage cannot presign.
    fn presign_put(
        &self,
        _key: &str,
        _expires: std::time::Duration,
    ) -> StorageResult<Option<Presigned>> {
        Ok(None)
    }
}

/// A presigned HTTP request: send it as is, with the object as its body.
#[derive(Clone)]
pub struct Presigned {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for Presigned {
    // The URL carries a signature: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presigned")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for dyn Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location())
    }
}

/// S3 settings, restic-style from the environment: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`.
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print credentials.
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    pub fn from_env(bucket: &str, prefix: &str) -> S3Config {
        S3Config::from_vars(bucket, prefix, |k| std::env::var(k).ok())
    }

    /// Like [`S3Config::from_env`], with the variables looked up by `var`.
    pub fn from_vars(bucket: &str, prefix: &str, var: impl Fn(&str) -> Option<String>) -> S3Config {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: var("AWS_ENDPOINT_URL").or_else(|| var("AWS_ENDPOINT_URL_S3")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        }
    }
}

/// Opens a location: `s3://BUCKET[/PREFIX]` (credentials from the environment)
/// or a local directory path (`file://` optional).
pub fn open(location: &str) -> StorageResult<Arc<dyn Storage>> {
    open_with_vars(location, |k| std::env::var(k).ok())
}

/// Like [`open`], with S3 settings looked up by `var` instead of the process
/// environment (an agent's storage grant).
pub fn open_with_vars(
    location: &str,
    var: impl Fn(&str) -> Option<String>,
) -> StorageResult<Arc<dyn Storage>> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::BadLocation(location.to_string()));
        }
        return Ok(Arc::new(S3Storage::new(S3Config::from_vars(
            bucket, prefix, var,
        ))?));
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if path.is_empty() || location.contains("://") && !location.starts_with("file://") {
        return Err(StorageError::BadLocation(location.to_string()));
    }
    Ok(Arc::new(LocalStorage::new(path)))
}

#[cfg(test)]
pub(crate) mod contract {
    //! The contract every backend must keep; run against local here and against
    //! a real Garage server by the end-to-end tests (`tests/`).
    pub use crate::storage::contract_suite as run;
}

/// The storage contract, public so the end-to-end tests run it against Garage.
pub fn contract_suite(s: &dyn Storage) {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    s.put("data/ab/obj1", &big).expect("put");
    s.put("data/cd/obj2", b"hello").expect("put small");
    s.put("snapshots/s1", b"snap").expect("put snapshot");
    assert_eq!(s.get("data/ab/obj1").expect("get"), big);
    assert_eq!(
        s.get_range("data/ab/obj1", 1000, 10).expect("range"),
        &big[1000..1010]
    );
    assert_eq!(
        s.get_range("data/ab/obj1", big.len() as u64 - 4, 4)
            .unwrap(),
        &big[big.len() - 4..]
    );
    assert_eq!(s.stat("data/cd/obj2").expect("stat").size, 5);
    let mut listed: Vec<_> = s
        .list("data/")
        .expect("list")
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("data/ab/obj1".to_string(), big.len() as u64),
            ("data/cd/obj2".into(), 5)
        ]
    );
    assert!(s.list("index/").expect("list empty").is_empty());
    s.put("data/cd/obj2", b"replaced").expect("replace");
    assert_eq!(s.get("data/cd/obj2").unwrap(), b"replaced");
    assert!(matches!(
        s.get("data/zz/missing"),
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.stat("data/zz/missing"),
        Err(StorageError::NotFound { .. })
    ));
    s.delete("data/cd/obj2").expect("delete");
    s.delete("data/cd/obj2").expect("delete missing is ok");
    assert!(matches!(
        s.get("data/cd/obj2"),
        Err(StorageError::NotFound { .. })
    ));
    let left: Vec<_> = s
        .list("")
        .expect("list all")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        left.contains(&"data/ab/obj1".to_string()) && left.contains(&"snapshots/s1".to_string())
    );
    assert!(
        !left.iter().any(|k| k.contains(".tmp")),
        "no temp objects left: {left:?}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_storage_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::LocalStorage::new(dir.path().join("repo"));
        super::contract::run(&s);
    }

    #[test]
    fn bad_locations_are_refused() {
        assert!(super::open("s3://").is_err());
        assert!(super::open("ftp://x").is_err());
        assert!(super::open("").is_err());
    }
}
