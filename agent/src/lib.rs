//! cairn-agent: the per-VPS daemon (discovery, analysis, backup and restore executors).
//!
//! Empty until the fleet issue lands; the backup and restore engine it will drive
//! lives in `cairn-repo` and is usable today through `cairnctl repo`.
