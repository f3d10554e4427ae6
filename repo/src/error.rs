//! The error type of cairn-repo. Variants carry the object involved.

use std::path::PathBuf;

use crate::id::Id;
use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("wrong passphrase: no key file in {repo} opens with it")]
    WrongPassphrase { repo: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("repository {repo} already exists (it has a config object)")]
    AlreadyExists { repo: String },
    #[error("no repository at {repo} (no config object)")]
    NotARepository { repo: String },
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("blob {id} is not in the index")]
    BlobNotFound { id: Id },
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    #[error("snapshot prefix {0:?} is ambiguous")]
    AmbiguousSnapshot(String),
    #[error("path {path:?} not found in snapshot")]
    PathNotFound { path: String },
    #[error("refusing hostile entry {name:?} in {dir:?}: {reason}")]
    HostileEntry {
        dir: String,
        name: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error("this repository is held by {holder} (pid {pid} on {host}); run {what} through it instead (`cairnctl {what}`), or stop it first")]
    Leased {
        holder: String,
        host: String,
        pid: u32,
        what: String,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
