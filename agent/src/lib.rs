//! cairn-agent: the per-VPS daemon. It enrolls with the controller, keeps one
//! session to it ([`daemon`]), and runs the jobs it is sent ([`jobs`]) against
//! the repository as the controller grants it ([`remote`]). The database
//! executors ([`db`]) are shared with `cairnctl repo backup-db`. Domain
//! intelligence (issue 4) has begun: a site's own database settings
//! ([`sitecfg`]) and seed 000's strategy and schedule choice ([`strategy`]).

pub mod config;
pub mod daemon;
pub mod db;
pub mod jobs;
pub mod remote;
pub mod sitecfg;
pub mod strategy;
