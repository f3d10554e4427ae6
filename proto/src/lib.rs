//! cairn-proto: the gRPC contracts between controller, agents and cairnctl
//! (DESIGN §6), generated at build time from `proto/cairn/*/v1/*.proto`.
//!
//! No logic lives here but the session protocol's version rule
//! ([`negotiate`]). Packages are versioned (`v1`); a field number is never
//! reused.

/// The agent session protocol this build speaks, newest. 3: the controller
/// takes packs holding groups of small blobs (repository format v1.1). 4: it
/// takes packs whose header names a group once (a group record, v1.2). 5:
/// it opens groups whose rows are laid out by column (v1.3).
pub const PROTOCOL: u32 = 5;
/// The first protocol whose controller takes grouped packs.
pub const GROUPS: u32 = 3;
/// The first protocol whose controller takes group records.
pub const GROUP_RECORDS: u32 = 4;
/// The first protocol whose controller opens groups laid out by column.
pub const GROUP_COLUMNS: u32 = 5;
/// The oldest it still speaks: agents and controllers one release apart
/// work together.
pub const MIN_PROTOCOL: u32 = 1;

/// The protocol a session speaks: the newest both sides know. `theirs` is
/// what the other side said ((0, 0) from a build before negotiation, which
/// speaks 1). Err: they share none, in words.
pub fn negotiate(theirs: (u32, u32)) -> Result<u32, String> {
    let (min, max) = match theirs {
        (_, 0) => (1, 1),
        (min, max) => (min.max(1), max),
    };
    let chosen = max.min(PROTOCOL);
    if chosen < min.max(MIN_PROTOCOL) || min > max {
        let older = if max < MIN_PROTOCOL {
            "the agent"
        } else {
            "the controller"
        };
        return Err(format!(
            "no common session protocol: the agent speaks {min}..={max}, the controller {MIN_PROTOCOL}..={PROTOCOL}; upgrade {older}"
        ));
    }
    Ok(chosen)
}

pub mod agent {
    // A Job (with its repository access and index segment) is much larger
    // than a cancel; generated code, so the lint does not apply.
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        tonic::include_proto!("cairn.agent.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("cairn.admin.v1");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn sessions_speak_the_newest_protocol_both_know() {
        use super::{negotiate, MIN_PROTOCOL, PROTOCOL};
        assert_eq!(
            negotiate((0, 0)),
            Ok(1),
            "a build before negotiation speaks 1"
        );
        assert_eq!(negotiate((MIN_PROTOCOL, PROTOCOL)), Ok(PROTOCOL));
        assert_eq!(
            negotiate((PROTOCOL, PROTOCOL + 1)),
            Ok(PROTOCOL),
            "a newer agent speaks down"
        );
        let newer = negotiate((PROTOCOL + 1, PROTOCOL + 2)).unwrap_err();
        assert!(newer.ends_with("upgrade the controller"), "{newer}");
        assert!(negotiate((3, 2)).is_err(), "an empty range is no range");
    }

    use super::agent::v1 as agent;

    #[test]
    fn services_have_their_design_names() {
        assert_eq!(
            agent::agent_service_server::SERVICE_NAME,
            "cairn.agent.v1.AgentService"
        );
        assert_eq!(
            super::admin::v1::admin_service_server::SERVICE_NAME,
            "cairn.admin.v1.AdminService"
        );
    }

    #[test]
    fn session_messages_round_trip() {
        let m = agent::AgentMessage {
            body: Some(agent::agent_message::Body::Hello(agent::Hello {
                agent_version: "0.1.0".into(),
                hostname: "web-1".into(),
                protocol: super::PROTOCOL,
                min_protocol: super::MIN_PROTOCOL,
                binlog: Some(agent::BinlogState {
                    state: "streaming".into(),
                    detail: "streaming from binlog.000001".into(),
                    format: "ROW".into(),
                }),
                wal: Some(agent::BinlogState {
                    state: "off".into(),
                    ..Default::default()
                }),
                inventory: Some(agent::Inventory {
                    domains: vec![agent::Domain {
                        name: "example.test".into(),
                        path: "/var/www/example.test".into(),
                        size_bytes: 42,
                        databases: vec![agent::Database {
                            engine: "mariadb".into(),
                            name: "wp".into(),
                            table_prefix: "wp_".into(),
                            binlog: true,
                        }],
                        site_type: "wordpress".into(),
                        analysis: Some(agent::Analysis {
                            changes_24h: 120,
                            trend: "rising".into(),
                            history: vec![agent::DaySample {
                                day: "2026-11-23".into(),
                                changes: 120,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                }),
            })),
        };
        let bytes = m.encode_to_vec();
        assert_eq!(agent::AgentMessage::decode(&bytes[..]).unwrap(), m);
    }
}
