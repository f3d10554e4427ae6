//! The repository's `config` object: format version, id and tuning, encrypted.
//!
//! # Layout (format v1)
//! One envelope (see `crypto`) holding JSON:
//! `{"version":1,"id":"<hex>","created":"…","chunker":{"min":…,"avg":…,"max":…},"pack_size":…,"zstd_level":…}`.

use serde::{Deserialize, Serialize};

use crate::id::Id;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    /// DESIGN §3's starting point: min 256 KiB / avg 1 MiB / max 4 MiB.
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub version: u32,
    pub id: Id,
    pub created: chrono::DateTime<chrono::Utc>,
    pub chunker: ChunkerParams,
    /// Target pack size in bytes; a pack is cut once it reaches this.
    pub pack_size: u32,
    /// zstd level for new blobs (3 = zstd's default, "balanced").
    pub zstd_level: i32,
}

impl RepoConfig {
    pub fn new() -> RepoConfig {
        RepoConfig {
            version: FORMAT_VERSION,
            id: Id::random(),
            created: chrono::Utc::now(),
            chunker: ChunkerParams::default(),
            pack_size: 16 * 1024 * 1024,
            zstd_level: 3,
        }
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig::new()
    }
}
