//! cairn-controller: the fleet's center (catalog, schedules, PKI, status page).
//!
//! Today: the sled-backed [`catalog`] (issue 3, in progress). The gRPC
//! services, PKI and web status page come next.

pub mod catalog;
