//! Policies, agent labels, the fleet schedule, legal holds and retention:
//! how an operator tells the controller what to protect and for how long.

use std::collections::HashMap;

use anyhow::{Context, Result};
use cairn_proto::admin::v1 as pb;
use serde::Serialize;

use super::fleet::{status, time, Client};
use crate::cli::{HoldCommand, PolicyCommand, RetentionCommand};
use crate::{output, Exit, EXIT_USAGE};

fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    Exit(EXIT_USAGE, e.into()).into()
}

#[derive(Serialize)]
struct ChangeJson<'a> {
    agent: &'a str,
    domain: &'a str,
    setting: &'a str,
    from: &'a str,
    to: &'a str,
}

fn print_changes(r: &pb::PolicyChanges, json: bool) -> Result<()> {
    if json {
        return output::json(&serde_json::json!({
            "policy": r.name,
            "outcome": r.outcome,
            "dry_run": r.dry_run,
            "changes": r.changes.iter().map(|c| ChangeJson {
                agent: &c.agent_id,
                domain: &c.domain,
                setting: &c.setting,
                from: &c.from,
                to: &c.to,
            }).collect::<Vec<_>>(),
        }));
    }
    let verb = if r.dry_run { "would be" } else { "was" };
    println!("policy {} {verb} {}", output::safe(&r.name), r.outcome);
    if r.changes.is_empty() {
        println!("no domain's settings change");
        return Ok(());
    }
    let domains: std::collections::BTreeSet<(&str, &str)> = r
        .changes
        .iter()
        .map(|c| (c.agent_id.as_str(), c.domain.as_str()))
        .collect();
    println!(
        "{} setting(s) change on {} domain(s):",
        r.changes.len(),
        domains.len()
    );
    for c in &r.changes {
        println!(
            "  {} ({})  {}: {} → {}",
            output::safe(&c.domain),
            c.agent_id,
            c.setting,
            output::safe(&c.from),
            output::safe(&c.to)
        );
    }
    Ok(())
}

pub async fn policy(c: &mut Client, cmd: PolicyCommand, json: bool) -> Result<()> {
    match cmd {
        PolicyCommand::Apply { file, dry_run } => {
            let document = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the policy from stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| file.display().to_string())
                    .map_err(usage)?
            };
            let r = c
                .apply_policy(pb::ApplyPolicyRequest { document, dry_run })
                .await
                .map_err(status)?
                .into_inner();
            print_changes(&r, json)
        }
        PolicyCommand::Delete { name, dry_run } => {
            let r = c
                .delete_policy(pb::DeletePolicyRequest { name, dry_run })
                .await
                .map_err(status)?
                .into_inner();
            print_changes(&r, json)
        }
        PolicyCommand::List => {
            let r = c
                .list_policies(pb::ListPoliciesRequest::default())
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(
                    &r.policies
                        .iter()
                        .map(|p| {
                            serde_json::json!({"name": p.name, "order": p.order, "domains": p.domains})
                        })
                        .collect::<Vec<_>>(),
                );
            }
            println!("{:<24} {:>6} {:>8}", "policy", "order", "domains");
            for p in &r.policies {
                println!("{:<24} {:>6} {:>8}", p.name, p.order, p.domains.len());
            }
            Ok(())
        }
        PolicyCommand::Show { name } => {
            let r = c
                .list_policies(pb::ListPoliciesRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            let p = r.policies.into_iter().next().unwrap_or_default();
            if json {
                return output::json(
                    &serde_json::json!({"name": p.name, "order": p.order, "document": p.document, "domains": p.domains}),
                );
            }
            print!("{}", p.document);
            println!("\n# selects {} domain(s)", p.domains.len());
            for d in &p.domains {
                println!("#   {}", output::safe(d));
            }
            Ok(())
        }
    }
}

pub async fn label(c: &mut Client, agent: String, labels: Vec<String>, json: bool) -> Result<()> {
    let mut set = HashMap::new();
    let mut remove = Vec::new();
    for l in labels {
        match l.split_once('=') {
            Some((k, v)) => {
                set.insert(k.to_string(), v.to_string());
            }
            None if l.ends_with('-') => remove.push(l.trim_end_matches('-').to_string()),
            None => {
                return Err(usage(anyhow::anyhow!(
                    "label {l:?}: expected KEY=VALUE to set or KEY- to remove"
                )))
            }
        }
    }
    let a = c
        .label_agent(pb::LabelAgentRequest {
            agent_id: agent,
            set,
            remove,
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut labels: Vec<_> = a.labels.into_iter().collect();
    labels.sort();
    if json {
        return output::json(
            &serde_json::json!({"agent": a.agent_id, "labels": labels.into_iter().collect::<std::collections::BTreeMap<_, _>>()}),
        );
    }
    let words: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "agent {} labels: {}",
        a.agent_id,
        if words.is_empty() {
            "none".into()
        } else {
            words.join(" ")
        }
    );
    Ok(())
}

pub async fn schedule(c: &mut Client, next: &str, json: bool) -> Result<()> {
    let horizon = super::gc::parse_duration(next).map_err(usage)?;
    let r = c
        .list_schedule(pb::ListScheduleRequest {
            horizon_seconds: horizon.as_secs(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        return output::json(
            &r.runs
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "domain": u.domain, "agent": u.agent_id, "kind": u.kind,
                        "cron": u.cron, "timezone": u.timezone,
                        "occurrence": u.occurrence, "starts_at": u.starts_at, "source": u.source,
                    })
                })
                .collect::<Vec<_>>(),
        );
    }
    println!(
        "{:<19}  {:<28} {:<16} {:<12} {:<16} from",
        "starts", "domain", "agent", "kind", "cron"
    );
    for u in &r.runs {
        println!(
            "{:<19}  {:<28} {:<16} {:<12} {:<16} {}",
            time(u.starts_at),
            output::safe(&u.domain),
            u.agent_id,
            u.kind,
            u.cron,
            u.source
        );
    }
    if r.runs.is_empty() {
        println!("nothing starts within {next}");
    }
    Ok(())
}

pub async fn hold(c: &mut Client, cmd: HoldCommand, json: bool) -> Result<()> {
    let print = |h: &pb::Hold, verb: &str| {
        let what = if h.domain.is_empty() {
            format!("snapshot {}", h.snapshot_id)
        } else {
            format!("domain {}", output::safe(&h.domain))
        };
        println!(
            "{verb} hold {} on {what}: {}",
            h.hold_id,
            output::safe(&h.reason)
        );
    };
    let as_json = |h: &pb::Hold| {
        serde_json::json!({"id": h.hold_id, "domain": h.domain, "snapshot": h.snapshot_id,
            "reason": h.reason, "by": h.by, "at": h.at})
    };
    match cmd {
        HoldCommand::Add {
            domain,
            snapshot,
            reason,
        } => {
            let h = c
                .add_hold(pb::AddHoldRequest {
                    domain: domain.unwrap_or_default(),
                    snapshot_id: snapshot.unwrap_or_default(),
                    reason,
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(&as_json(&h));
            }
            print(&h, "added");
        }
        HoldCommand::Remove { hold } => {
            let h = c
                .remove_hold(pb::RemoveHoldRequest { hold_id: hold })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(&as_json(&h));
            }
            print(&h, "removed");
        }
        HoldCommand::List => {
            let r = c
                .list_holds(pb::ListHoldsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(&r.holds.iter().map(as_json).collect::<Vec<_>>());
            }
            println!(
                "{:<8} {:<40} {:<19}  {:<28} reason",
                "hold", "on", "since", "by"
            );
            for h in &r.holds {
                let on = if h.domain.is_empty() {
                    format!(
                        "snapshot {}",
                        h.snapshot_id.get(..16).unwrap_or(&h.snapshot_id)
                    )
                } else {
                    format!("domain {}", output::safe(&h.domain))
                };
                println!(
                    "{:<8} {:<40} {:<19}  {:<28} {}",
                    h.hold_id,
                    on,
                    time(h.at),
                    h.by,
                    output::safe(&h.reason)
                );
            }
        }
    }
    Ok(())
}

pub async fn retention(c: &mut Client, cmd: RetentionCommand, json: bool) -> Result<()> {
    match cmd {
        RetentionCommand::Preview { domain } => {
            let r = c
                .retention_preview(pb::RetentionPreviewRequest {
                    domain: domain.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                return output::json(&serde_json::json!({
                    "forget": r.forget.iter().map(|f| {
                        let s = f.snapshot.clone().unwrap_or_default();
                        serde_json::json!({"id": s.snapshot_id, "domain": s.domain, "agent": s.agent_id,
                            "time": s.time, "kind": s.kind, "content": s.content, "rule": f.rule})
                    }).collect::<Vec<_>>(),
                    "bytes_freed": r.bytes_freed,
                    "snapshots_kept": r.snapshots_kept,
                }));
            }
            for f in &r.forget {
                let s = f.snapshot.clone().unwrap_or_default();
                println!(
                    "forget {}  {:<28} {:<19} {:<12} by {}",
                    s.snapshot_id.get(..16).unwrap_or(&s.snapshot_id),
                    output::safe(&s.domain),
                    time(s.time),
                    s.kind,
                    f.rule
                );
            }
            println!(
                "{} snapshot(s) would be forgotten, {} kept; gc would free {}",
                r.forget.len(),
                r.snapshots_kept,
                output::bytes(r.bytes_freed)
            );
        }
        RetentionCommand::Apply => {
            let r = c
                .run_maintenance(pb::RunMaintenanceRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let gc = r.gc.unwrap_or_default();
            if json {
                return output::json(&serde_json::json!({
                    "forgotten": r.forgotten, "packs_deleted": gc.packs_deleted, "bytes_freed": gc.bytes_freed,
                }));
            }
            println!(
                "forgot {} snapshot(s); gc deleted {} pack(s), freed {}",
                r.forgotten,
                gc.packs_deleted,
                output::bytes(gc.bytes_freed)
            );
        }
    }
    Ok(())
}
