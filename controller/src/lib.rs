//! cairn-controller: catalog, scheduler, retention, PKI and web status.
//!
//! Empty until the fleet issue lands; `cairnctl repo forget`/`gc` cover retention
//! for a repository opened directly.
