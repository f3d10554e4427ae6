//! cairn-proto: the gRPC contracts between controller, agents and cairnctl.
//!
//! Empty until the fleet issue lands: the repository engine (`cairn-repo`) works
//! offline through `cairnctl repo` and needs no wire protocol yet.
