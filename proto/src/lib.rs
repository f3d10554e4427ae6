//! cairn-proto: the gRPC contracts between controller, agents and cairnctl
//! (DESIGN §6), generated at build time from `proto/cairn/*/v1/*.proto`.
//!
//! No logic lives here. Packages are versioned (`v1`); a field number is never
//! reused.

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
                inventory: Some(agent::Inventory {
                    domains: vec![agent::Domain {
                        name: "example.test".into(),
                        path: "/var/www/example.test".into(),
                        size_bytes: 42,
                        databases: vec![agent::Database {
                            engine: "mariadb".into(),
                            name: "wp".into(),
                            table_prefix: "wp_".into(),
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
