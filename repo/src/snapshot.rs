//! Snapshots: the last object a backup writes, pointing at its root tree.
//!
//! # Layout (format v1)
//! `snapshots/<id>` is one envelope (see `crypto`) holding the JSON form of
//! [`Snapshot`]; `<id>` is the unkeyed BLAKE3 of the stored bytes.

use serde::{Deserialize, Serialize};

use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Every file re-read and re-hashed.
    Full,
    /// Unchanged files (size, mtime, ctime, inode) reuse the latest snapshot's blobs.
    Incremental,
    /// Unchanged files reuse the last full snapshot's blobs.
    Differential,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Kind::Full),
            "incremental" => Ok(Kind::Incremental),
            "differential" => Ok(Kind::Differential),
            _ => Err(format!(
                "unknown kind {s:?}: expected full, incremental or differential"
            )),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Full => "full",
            Kind::Incremental => "incremental",
            Kind::Differential => "differential",
        })
    }
}

/// What a snapshot holds. Change detection and `latest` only compare
/// snapshots of the same content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// A directory tree (a site's files).
    #[default]
    Files,
    /// Database dumps under `db/`, each with a manifest beside it.
    Database,
    /// A server's MariaDB/MySQL binary log files as shipped so far, for
    /// point-in-time database restores (domain empty: the whole server).
    Binlog,
}

impl Content {
    fn is_files(&self) -> bool {
        *self == Content::Files
    }
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Content::Files => "files",
            Content::Database => "database",
            Content::Binlog => "binlog",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    /// Sum of the sizes of every file in the snapshot.
    pub total_bytes: u64,
    /// Bytes actually read from disk (unchanged files in incrementals are not read).
    pub bytes_read: u64,
    /// Plaintext bytes of blobs the repository did not have.
    pub bytes_new: u64,
    /// Bytes those new blobs take in storage (compressed, encrypted).
    pub stored_bytes: u64,
    pub blobs_new: u64,
    /// `bytes_new / stored_bytes`: the compression ratio of what was added.
    pub ratio: f64,
    pub duration_ms: u64,
    /// Files that changed while read, vanished, or could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub time: chrono::DateTime<chrono::Utc>,
    pub domain: String,
    pub host: String,
    pub kind: Kind,
    /// Absent (files) in snapshots written before databases were supported.
    #[serde(default, skip_serializing_if = "Content::is_files")]
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    pub tree: Id,
    /// The directory or database that was backed up (never a credential).
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    pub stats: Stats,
    pub tool_version: String,
    /// Fleet snapshots: the agent that made it and the job it was made for,
    /// both stamped by the controller (absent in `cairnctl repo` snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Fleet snapshots of one run (a site's files and database at one time)
    /// share it; stamped by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

pub const TOOL_VERSION: &str = concat!("cairn ", env!("CARGO_PKG_VERSION"));
