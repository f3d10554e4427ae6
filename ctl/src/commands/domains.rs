//! `cairnctl domains list|show`: what the agents found and measured, and the
//! controller's plan for each domain (SPEC INT-1..INT-7).

use anyhow::Result;
use cairn_proto::admin::v1 as pb;
use serde::Serialize;

use super::fleet::{status, time, Client};
use crate::output;

#[derive(Serialize)]
struct ScheduleJson {
    cron: String,
    kind: String,
}

#[derive(Serialize)]
struct DomainJson {
    name: String,
    agent: String,
    path: String,
    aliases: Vec<String>,
    site_type: String,
    source: String,
    root_missing: bool,
    databases: Vec<String>,
    size_bytes: u64,
    size_class: String,
    files: u64,
    activity: String,
    changes_24h: u64,
    avg_daily_changes: f64,
    trend: String,
    /// Null when the agent found no access log.
    requests_24h: Option<u64>,
    strategy: String,
    schedule: Vec<ScheduleJson>,
    reason: String,
    analyzed_at: Option<i64>,
    last_backup: Option<i64>,
    last_snapshot: Option<String>,
}

impl From<pb::DomainInfo> for DomainJson {
    fn from(d: pb::DomainInfo) -> Self {
        DomainJson {
            last_backup: (d.last_backup > 0).then_some(d.last_backup),
            last_snapshot: (!d.last_snapshot_id.is_empty()).then_some(d.last_snapshot_id),
            analyzed_at: (d.analyzed_at > 0).then_some(d.analyzed_at),
            requests_24h: d.has_traffic.then_some(d.requests_24h),
            schedule: d
                .schedule
                .into_iter()
                .map(|r| ScheduleJson {
                    cron: r.cron,
                    kind: r.kind,
                })
                .collect(),
            name: d.name,
            agent: d.agent_id,
            path: d.path,
            aliases: d.aliases,
            site_type: d.site_type,
            source: d.source,
            root_missing: d.root_missing,
            databases: d.databases,
            size_bytes: d.size_bytes,
            size_class: d.size_class,
            files: d.files,
            activity: d.activity,
            changes_24h: d.changes_24h,
            avg_daily_changes: d.avg_daily_changes,
            trend: d.trend,
            strategy: d.strategy,
            reason: d.reason,
        }
    }
}

fn traffic(d: &pb::DomainInfo) -> String {
    if d.has_traffic {
        format!("{}/day", d.requests_24h)
    } else {
        "-".into()
    }
}

pub async fn list(c: &mut Client, agent: Option<String>, json: bool) -> Result<()> {
    let r = c
        .list_domains(pb::ListDomainsRequest {
            agent_id: agent.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        let v: Vec<DomainJson> = r.domains.into_iter().map(DomainJson::from).collect();
        return output::json(&v);
    }
    println!(
        "{:<30} {:<16} {:<9} {:>10} {:<6}  {:<8} {:<7} {:>11}  {:<11}  last backup",
        "domain", "agent", "type", "size", "class", "activity", "trend", "traffic", "strategy"
    );
    for d in r.domains {
        let size = if d.root_missing {
            "missing".to_string()
        } else {
            output::bytes(d.size_bytes)
        };
        println!(
            "{:<30} {:<16} {:<9} {:>10} {:<6}  {:<8} {:<7} {:>11}  {:<11}  {}",
            output::safe(&d.name),
            d.agent_id,
            output::safe(&d.site_type),
            size,
            d.size_class,
            d.activity,
            d.trend,
            traffic(&d),
            d.strategy,
            time(d.last_backup),
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct DayJson {
    day: String,
    changes: u64,
    requests: Option<u64>,
    size_bytes: u64,
}

#[derive(Serialize)]
struct ChangeJson {
    at: i64,
    from: String,
    to: String,
    why: String,
}

#[derive(Serialize)]
struct DetailJson {
    #[serde(flatten)]
    domain: DomainJson,
    history: Vec<DayJson>,
    changes: Vec<ChangeJson>,
    /// How far point-in-time restores reach, or why they are off.
    point_in_time: String,
    /// Seconds of changes a restore now could lose; null without a copy.
    rpo_seconds: Option<i64>,
    policies: Vec<String>,
    settings: Vec<SettingJson>,
}

#[derive(Serialize)]
struct SettingJson {
    name: String,
    value: String,
    source: String,
}

pub async fn show(c: &mut Client, domain: String, agent: Option<String>, json: bool) -> Result<()> {
    let r = c
        .get_domain(pb::GetDomainRequest {
            name: domain,
            agent_id: agent.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let d = r.domain.unwrap_or_default();
    if json {
        return output::json(&DetailJson {
            history: r
                .history
                .into_iter()
                .map(|h| DayJson {
                    requests: h.has_traffic.then_some(h.requests),
                    day: h.day,
                    changes: h.changes,
                    size_bytes: h.size_bytes,
                })
                .collect(),
            changes: r
                .changes
                .into_iter()
                .map(|c| ChangeJson {
                    at: c.at,
                    from: c.from,
                    to: c.to,
                    why: c.why,
                })
                .collect(),
            domain: DomainJson::from(d),
            point_in_time: r.point_in_time,
            rpo_seconds: (r.rpo_seconds >= 0).then_some(r.rpo_seconds),
            policies: r.policies,
            settings: r
                .settings
                .into_iter()
                .map(|s| SettingJson {
                    name: s.name,
                    value: s.value,
                    source: s.source,
                })
                .collect(),
        });
    }
    let none = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    println!("domain      {}", output::safe(&d.name));
    if !d.aliases.is_empty() {
        println!("aliases     {}", output::safe(&d.aliases.join(" ")));
    }
    println!("agent       {}", d.agent_id);
    let missing = if d.root_missing { "  (missing)" } else { "" };
    println!("root        {}{missing}", output::safe(&d.path));
    println!("found in    {}", none(&d.source));
    println!("type        {}", none(&d.site_type));
    println!(
        "databases   {}",
        if d.databases.is_empty() {
            "-".into()
        } else {
            d.databases.join(" ")
        }
    );
    println!(
        "size        {} in {} files ({})",
        output::bytes(d.size_bytes),
        d.files,
        d.size_class
    );
    println!(
        "activity    {} ({} files changed in 24 h; {:.1}/day on average, {})",
        d.activity, d.changes_24h, d.avg_daily_changes, d.trend
    );
    println!("traffic     {}", traffic(&d));
    println!("analyzed    {}", time(d.analyzed_at));
    println!("strategy    {}", none(&d.strategy));
    println!("why         {}", none(&d.reason));
    for run in &d.schedule {
        println!("  {:<14} {}", run.cron, run.kind);
    }
    println!("last backup {}", time(d.last_backup));
    println!(
        "recovery pt {}",
        if r.rpo_seconds < 0 {
            "no copy yet".to_string()
        } else {
            format!("{} s of changes at risk", r.rpo_seconds)
        }
    );
    if !r.point_in_time.is_empty() {
        println!("point in time {}", output::safe(&r.point_in_time));
    }
    if !r.settings.is_empty() {
        let policies = if r.policies.is_empty() {
            "none".to_string()
        } else {
            r.policies.join(", ")
        };
        println!("\nsettings (policies applied in order: {policies})");
        for s in &r.settings {
            println!(
                "  {:<13} {:<44} from {}",
                s.name,
                output::safe(&s.value),
                s.source
            );
        }
    }
    if !r.history.is_empty() {
        println!(
            "\n{:<10}  {:>7}  {:>9}  {:>10}",
            "day", "changes", "requests", "size"
        );
        for h in &r.history {
            let req = if h.has_traffic {
                h.requests.to_string()
            } else {
                "-".into()
            };
            println!(
                "{:<10}  {:>7}  {:>9}  {:>10}",
                h.day,
                h.changes,
                req,
                output::bytes(h.size_bytes)
            );
        }
    }
    if !r.changes.is_empty() {
        println!("\nplan changes");
        for c in &r.changes {
            let from = if c.from.is_empty() { "none" } else { &c.from };
            println!(
                "  {}  {} → {}\n      because {}",
                time(c.at),
                from,
                c.to,
                c.why
            );
        }
    }
    Ok(())
}
