//! cairn-agent: the per-VPS daemon. It enrolls with the controller, keeps one
//! session to it ([`daemon`]), and runs the jobs it is sent ([`jobs`]) against
//! the repository as the controller grants it ([`remote`]). The database
//! executors live in `cairn-dump`, shared with `cairnctl repo backup-db`. Domain
//! intelligence: [`discover`] finds the domains, [`analysis`] measures each
//! (type and database from [`sitecfg`], size and changes from [`activity`],
//! requests from [`traffic`]); the controller picks the strategy.

pub mod activity;
pub mod analysis;
pub mod binlog;
pub mod config;
pub mod daemon;
pub mod discover;
pub mod jobs;
pub mod remote;
pub mod sitecfg;
pub mod traffic;
pub mod wal;
