//! `cairnctl alerts`: what the controller's rules found, and acknowledging
//! it; `cairnctl notify`: the channels that tell people.

use anyhow::Result;
use cairn_proto::admin::v1 as pb;

use super::fleet::{status, time, Client};
use crate::cli::{AlertsCommand, NotifyCommand};
use crate::output;

fn as_json(a: &pb::Alert) -> serde_json::Value {
    let opt = |t: i64| (t > 0).then_some(t);
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    serde_json::json!({
        "id": a.alert_id, "rule": a.rule, "agent": a.agent_id, "domain": text(&a.domain),
        "state": a.state, "message": a.message, "fired_at": a.fired_at,
        "last_seen": a.last_seen, "resolved_at": opt(a.resolved_at),
        "acked_by": text(&a.acked_by), "acked_at": opt(a.acked_at),
    })
}

pub async fn alerts(c: &mut Client, cmd: AlertsCommand, json: bool) -> Result<()> {
    match cmd {
        AlertsCommand::List { all } => {
            let r = c
                .list_alerts(pb::ListAlertsRequest { all })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(&r.alerts.iter().map(as_json).collect::<Vec<_>>());
            }
            if r.alerts.is_empty() {
                println!("no alerts {}", if all { "" } else { "firing" }.trim_end());
                return Ok(());
            }
            println!(
                "{:<10} {:<9} {:<15} {:<19}  {:<4} message",
                "alert", "state", "rule", "since", "ack"
            );
            for a in &r.alerts {
                println!(
                    "{:<10} {:<9} {:<15} {:<19}  {:<4} {}",
                    a.alert_id,
                    a.state,
                    a.rule,
                    time(a.fired_at),
                    if a.acked_by.is_empty() { "" } else { "yes" },
                    output::safe(&a.message)
                );
            }
        }
        AlertsCommand::Ack { alert } => {
            let a = c
                .ack_alert(pb::AckAlertRequest { alert_id: alert })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(&as_json(&a));
            }
            println!(
                "alert {} ({}) acknowledged by {}",
                a.alert_id, a.rule, a.acked_by
            );
        }
    }
    Ok(())
}

pub async fn notify(c: &mut Client, cmd: NotifyCommand, json: bool) -> Result<()> {
    match cmd {
        NotifyCommand::List => {
            let r = c
                .list_channels(pb::ListChannelsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let list: Vec<serde_json::Value> = r
                    .channels
                    .iter()
                    .map(|ch| {
                        serde_json::json!({
                            "name": ch.name, "kind": ch.kind, "target": ch.target,
                            "queued": ch.queued,
                            "last_sent": (ch.last_sent > 0).then_some(ch.last_sent),
                            "last_error": (!ch.last_error.is_empty()).then(|| ch.last_error.clone()),
                            "retry_at": (ch.retry_at > 0).then_some(ch.retry_at),
                            "digest": (!ch.digest.is_empty()).then(|| ch.digest.clone()),
                            "max_per_hour": ch.max_per_hour,
                        })
                    })
                    .collect();
                return output::json(&list);
            }
            if r.channels.is_empty() {
                println!("no notification channels ([[notify]] in controller.toml)");
                return Ok(());
            }
            println!(
                "{:<16} {:<8} {:>6} {:<19}  target / last error",
                "channel", "kind", "queued", "last sent"
            );
            for ch in &r.channels {
                println!(
                    "{:<16} {:<8} {:>6} {:<19}  {}",
                    ch.name,
                    ch.kind,
                    ch.queued,
                    if ch.last_sent > 0 {
                        time(ch.last_sent)
                    } else {
                        "never".into()
                    },
                    output::safe(&ch.target)
                );
                if !ch.last_error.is_empty() {
                    println!(
                        "{:<16} error: {} (retry at {})",
                        "",
                        output::safe(&ch.last_error),
                        time(ch.retry_at)
                    );
                }
            }
        }
        NotifyCommand::Test { channel } => {
            let r = c
                .test_channel(pb::TestChannelRequest {
                    name: channel.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(
                    &serde_json::json!({"channel": channel, "target": r.target, "sent": true}),
                );
            }
            println!("test message sent through {channel} ({})", r.target);
        }
    }
    Ok(())
}
