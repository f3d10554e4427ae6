//! Who may do what (SPEC SEC-2). cairnctl users hold client certificates
//! issued by the controller's CA (`cairnctl user add NAME --role R`); the
//! controller knows each by its certificate's fingerprint, with a role:
//!
//! - auditor: reads everything, changes nothing;
//! - operator: also starts backups and restores, cancels jobs, adds holds,
//!   acknowledges alerts, tests channels; never deletes (no forget, gc,
//!   policy or hold removal, agent removal), never issues certificates or
//!   enrollment tokens;
//! - admin: everything.
//!
//! The bootstrap admin written by `cairn-controller init` (pki/admins)
//! is an admin named "admin". Every AdminService call asks [`needed`] with
//! its own name: one table, checked against the proto by a test.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Auditor,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "auditor" => Ok(Role::Auditor),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?} (admin, operator or auditor)")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Calls that only read.
const READ: &[&str] = &[
    "ListAgents",
    "ListDomains",
    "GetDomain",
    "ListSnapshots",
    "ListJobs",
    "GetJob",
    "WatchJob",
    "ListPolicies",
    "ListSchedule",
    "ListHolds",
    "RetentionPreview",
    "ListAlerts",
    "ListChannels",
    "ListUsers",
    "ListAudit",
    "VerifyAudit",
    "GetVersion",
];

/// Calls that run the fleet without deleting or granting anything.
const OPERATE: &[&str] = &[
    "StartBackup",
    "StartRestore",
    "Rollback",
    "CancelJob",
    "AddHold",
    "AckAlert",
    "TestChannel",
];

/// Calls that delete, change policy, or grant access: admin, as is any
/// call not listed (kept for the test that every call is listed).
#[cfg_attr(not(test), allow(dead_code))]
const ADMINISTER: &[&str] = &[
    "RemoveAgent",
    "CreateToken",
    "Forget",
    "Gc",
    "ApplyPolicy",
    "DeletePolicy",
    "LabelAgent",
    "RemoveHold",
    "RunMaintenance",
    "AddUser",
    "RevokeUser",
];

/// The least role a call needs; a call not in the tables needs admin.
pub fn needed(call: &str) -> Role {
    if READ.contains(&call) {
        Role::Auditor
    } else if OPERATE.contains(&call) {
        Role::Operator
    } else {
        Role::Admin
    }
}

/// Whether the call changes anything (and so is written to the audit log
/// even when it succeeds; refusals are written for every call).
pub fn changes(call: &str) -> bool {
    !READ.contains(&call)
}

/// The caller of an admin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.role.as_str())
    }
}

/// A cairnctl user, as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub cert_sha256: String,
    pub created_at: i64,
    pub created_by: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// A user name: 1-64 of letters, digits, `.`, `-`, `_`, starting with a
/// letter (it names files cairnctl writes).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?}: 1-64 letters, digits, '.', '-' or '_', starting with a letter"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call of the AdminService is in exactly one table.
    #[test]
    fn every_admin_call_has_a_role() {
        let proto = include_str!("../../proto/proto/cairn/admin/v1/admin.proto");
        let calls: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().trim())
            .collect();
        assert!(calls.len() > 30, "{calls:?}");
        for c in &calls {
            let n = [READ, OPERATE, ADMINISTER]
                .iter()
                .filter(|t| t.contains(c))
                .count();
            assert_eq!(
                n, 1,
                "{c} must be in exactly one of READ, OPERATE, ADMINISTER"
            );
        }
        for t in [READ, OPERATE, ADMINISTER] {
            for c in t {
                assert!(calls.contains(c), "{c} is not an AdminService call");
            }
        }
    }

    /// Every handler checks the role of its own call first.
    #[test]
    fn every_handler_asks_for_its_own_role() {
        let src = include_str!("admin_service.rs");
        for c in READ.iter().chain(OPERATE).chain(ADMINISTER) {
            assert!(
                src.contains(&format!("self.allow(&req, \"{c}\")?;")),
                "the {c} handler does not check its role"
            );
        }
    }

    #[test]
    fn operators_run_and_auditors_read() {
        for c in [
            "Forget",
            "Gc",
            "DeletePolicy",
            "RemoveHold",
            "AddUser",
            "CreateToken",
        ] {
            assert_eq!(needed(c), Role::Admin, "{c}");
        }
        assert_eq!(needed("StartBackup"), Role::Operator);
        assert_eq!(needed("ListAudit"), Role::Auditor);
        assert_eq!(needed("SomethingNew"), Role::Admin);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Auditor);
        assert!(check_name("alice").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("").is_err());
    }
}
