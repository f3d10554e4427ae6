//! End-to-end tests: the real `cairnctl` binary against real storage.
//! Requirement ids in test names' comments refer to ../shared/SPEC.md.

mod access;
mod alerts;
mod cluster;
mod crash;
mod dashboard;
mod db;
mod fleet;
mod fleet_db;
mod fleet_gc;
mod golden;
mod hostile;
mod inplace;
mod install;
mod intel;
mod maintenance;
mod notify;
mod pitr;
mod s3;
mod safety;
mod schedule;
mod schemas;
mod units;
