//! cairn-repo: the Cairn repository format v1 as a library.
//!
//! A repository is a set of objects on a storage backend (see [`storage`]):
//! `config`, `keys/`, `data/` (packs), `index/` and `snapshots/`. Everything but
//! the key files is encrypted with the repository's master key. This crate does no
//! networking of its own beyond the storage backends and knows nothing of gRPC or
//! the controller's catalog.
//!
//! Entry points: [`Repository::init`] / [`Repository::open`], then
//! [`backup::run`], [`restore::restore`], [`check::check`], [`gc::gc`].

pub mod audit;
pub mod backup;
pub mod beneath;
pub mod check;
pub mod chunker;
pub mod columns;
pub mod config;
pub mod content_edit;
pub mod crypto;
pub mod diff;
pub mod error;
pub mod exclude;
pub mod export;
pub mod gc;
pub mod group;
pub mod id;
pub mod index;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod repository;
pub mod restore;
pub mod saver;
pub mod secret;
pub mod snapshot;
pub mod stage;
pub mod storage;
pub mod stream;
pub mod tree;
pub mod xattr;

#[cfg(test)]
mod fidelity_tests;

pub use error::{Error, Result};
pub use id::Id;
pub use repository::Repository;
