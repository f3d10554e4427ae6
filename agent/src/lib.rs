//! cairn-agent: the per-VPS daemon's executors.
//!
//! Today: database backup and restore ([`db`]), used by `cairnctl repo
//! backup-db` / `restore-db` and, once the fleet core lands, by the agent's
//! jobs. File backup and restore live in `cairn-repo`.

pub mod db;
