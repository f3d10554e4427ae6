//! The status page (MON-1, first cut): `/` (HTML), `/api/status` (JSON),
//! `/metrics` (Prometheus text) and `/healthz`. Binds 127.0.0.1 by default;
//! it shows names, sizes and states, never a secret.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::catalog::JobState;
use crate::fleet::{now, Fleet};
use crate::strategy::Activity;

pub fn router(fleet: Arc<Fleet>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(fleet)
}

#[derive(Serialize)]
struct Status {
    agents: Vec<AgentStatus>,
    domains: Vec<DomainStatus>,
    running_jobs: Vec<JobStatus>,
}

#[derive(Serialize)]
struct AgentStatus {
    id: String,
    hostname: String,
    online: bool,
    last_seen: i64,
}

#[derive(Serialize)]
struct DomainStatus {
    name: String,
    agent: String,
    site_type: String,
    size_bytes: u64,
    /// high, medium or low (SPEC INT-2).
    activity: String,
    /// The controller's recommendation (SPEC INT-5).
    strategy: String,
    last_backup: Option<i64>,
    last_snapshot: Option<String>,
}

#[derive(Serialize)]
struct JobStatus {
    id: String,
    kind: String,
    domain: String,
    agent: String,
    step: String,
    files: u64,
    bytes: u64,
    total_bytes: u64,
}

fn status(f: &Fleet) -> Status {
    let mut last = std::collections::HashMap::new();
    for s in f.catalog.snapshots(None).unwrap_or_default() {
        last.insert(s.domain.clone(), (s.time, s.id));
    }
    Status {
        agents: f
            .catalog
            .agents()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !a.revoked)
            .map(|a| AgentStatus {
                online: f.is_online(&a.id),
                id: a.id,
                hostname: a.hostname,
                last_seen: a.last_seen,
            })
            .collect(),
        domains: f
            .catalog
            .domains()
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                let l = last.get(&d.name).cloned();
                let plan = f.catalog.plan(&d.agent_id, &d.name).ok().flatten();
                let changes = d.analysis.as_ref().map_or(0, |a| a.changes_24h);
                DomainStatus {
                    last_backup: l.as_ref().map(|l| l.0),
                    last_snapshot: l.map(|l| l.1),
                    activity: Activity::of(changes).as_str().into(),
                    strategy: plan.map(|p| p.strategy).unwrap_or_default(),
                    site_type: d.site_type,
                    name: d.name,
                    agent: d.agent_id,
                    size_bytes: d.size_bytes,
                }
            })
            .collect(),
        running_jobs: f
            .catalog
            .jobs()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| j.state == JobState::Running)
            .map(|j| JobStatus {
                id: j.id,
                kind: j.kind,
                domain: j.domain,
                agent: j.agent_id,
                step: j.step,
                files: j.files,
                bytes: j.bytes,
                total_bytes: j.total_bytes,
            })
            .collect(),
    }
}

async fn api_status(State(f): State<Arc<Fleet>>) -> Json<Status> {
    Json(
        tokio::task::spawn_blocking(move || status(&f))
            .await
            .expect("status task"),
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ago(t: i64) -> String {
    let d = (now() - t).max(0);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

async fn page(State(f): State<Arc<Fleet>>) -> Html<String> {
    let s = tokio::task::spawn_blocking(move || status(&f))
        .await
        .expect("status task");
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <title>Cairn fleet</title><style>body{font:14px system-ui;margin:2em}\
         table{border-collapse:collapse;margin-bottom:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}\
         .on{color:#080}.off{color:#b00}progress{width:12em}</style></head><body><h1>Cairn fleet</h1>",
    );
    let online = s.agents.iter().filter(|a| a.online).count();
    let _ = write!(h, "<h2>Agents ({online} of {} online)</h2><table><tr><th>agent</th><th>host</th><th>state</th><th>last seen</th></tr>", s.agents.len());
    for a in &s.agents {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td></tr>",
            esc(&a.id),
            esc(&a.hostname),
            if a.online { "on" } else { "off" },
            if a.online { "online" } else { "offline" },
            ago(a.last_seen)
        );
    }
    h.push_str("</table><h2>Domains</h2><table><tr><th>domain</th><th>agent</th><th>type</th><th>size</th><th>activity</th><th>strategy</th><th>last backup</th></tr>");
    for d in &s.domains {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} MB</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.name),
            esc(&d.agent),
            esc(&d.site_type),
            d.size_bytes as f64 / 1e6,
            esc(&d.activity),
            esc(&d.strategy),
            d.last_backup.map(ago).unwrap_or_else(|| "never".into())
        );
    }
    h.push_str("</table><h2>Running jobs</h2><table><tr><th>job</th><th>kind</th><th>domain</th><th>step</th><th>progress</th></tr>");
    for j in &s.running_jobs {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><progress max={} value={}></progress> {} files</td></tr>",
            esc(&j.id),
            esc(&j.kind),
            esc(&j.domain),
            esc(&j.step),
            j.total_bytes.max(1),
            j.bytes,
            j.files
        );
    }
    h.push_str("</table></body></html>");
    Html(h)
}

async fn metrics(State(f): State<Arc<Fleet>>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || render_metrics(&f))
        .await
        .expect("metrics task");
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// A Prometheus label value: domain names come from agents, so quotes,
/// backslashes and line breaks are escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One per-domain figure of [`crate::health::Health`] (None: unknown).
type HealthFigure = fn(&crate::health::Health) -> Option<f64>;

fn render_metrics(f: &Fleet) -> String {
    let m = &f.metrics;
    let mut out = String::new();
    let agents = f.catalog.agents().unwrap_or_default();
    let enrolled = agents.iter().filter(|a| !a.revoked).count();
    let connected = f.sessions.lock().unwrap().len();
    let _ = writeln!(out, "# HELP cairn_agents_connected Agents with an open session.\n# TYPE cairn_agents_connected gauge\ncairn_agents_connected {connected}");
    let _ = writeln!(out, "# HELP cairn_agents_enrolled Enrolled agents not removed.\n# TYPE cairn_agents_enrolled gauge\ncairn_agents_enrolled {enrolled}");
    let _ = writeln!(
        out,
        "# HELP cairn_jobs_total Jobs ended, by kind and outcome.\n# TYPE cairn_jobs_total counter"
    );
    let mut jobs: Vec<_> = m
        .jobs
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    jobs.sort();
    for ((kind, outcome), n) in jobs {
        let _ = writeln!(
            out,
            "cairn_jobs_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let open = f.catalog.open_jobs().unwrap_or_default();
    let running = open.iter().filter(|j| j.state == JobState::Running).count();
    let queued = open.iter().filter(|j| j.state == JobState::Queued).count();
    let now = crate::fleet::now();
    let startable = open
        .iter()
        .filter(|j| {
            j.state == JobState::Queued
                && j.not_before.is_none_or(|t| t <= now)
                && f.is_online(&j.agent_id)
        })
        .count();
    let _ = writeln!(out, "# HELP cairn_jobs_running Jobs running now.\n# TYPE cairn_jobs_running gauge\ncairn_jobs_running {running}");
    let _ = writeln!(out, "# HELP cairn_job_duration_seconds Wall time of ended jobs.\n# TYPE cairn_job_duration_seconds summary\ncairn_job_duration_seconds_sum {}\ncairn_job_duration_seconds_count {}", *m.job_seconds_sum.lock().unwrap(), m.job_seconds_count.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_received_bytes_total Pack and index bytes agents uploaded through the controller.\n# TYPE cairn_received_bytes_total counter\ncairn_received_bytes_total {}", m.bytes_received.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_received_packs_total Packs agents uploaded through the controller.\n# TYPE cairn_received_packs_total counter\ncairn_received_packs_total {}", m.packs_received.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_refused_uploads_total Packs and snapshots from agents refused because they failed verification.\n# TYPE cairn_refused_uploads_total counter\ncairn_refused_uploads_total {}", m.refused_objects.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_blobs_asked_total Blob ids agents asked about (HaveBlobs).\n# TYPE cairn_blobs_asked_total counter\ncairn_blobs_asked_total {}", m.blobs_asked.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_blobs_known_total Asked blob ids the repository had, so were never sent.\n# TYPE cairn_blobs_known_total counter\ncairn_blobs_known_total {}", m.blobs_known.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_jobs_queued Jobs waiting to start (limits, backoff, offline agents).\n# TYPE cairn_jobs_queued gauge\ncairn_jobs_queued {queued}");
    let _ = writeln!(out, "# HELP cairn_jobs_startable Queued jobs whose agent is online and whose backoff has passed; the scheduler starts them as limits allow.\n# TYPE cairn_jobs_startable gauge\ncairn_jobs_startable {startable}");
    let _ = writeln!(out, "# HELP cairn_scheduler_tick_timestamp_seconds Controller-clock time of the scheduler's last pass.\n# TYPE cairn_scheduler_tick_timestamp_seconds gauge\ncairn_scheduler_tick_timestamp_seconds {}", m.scheduler_tick.load(Ordering::Acquire));
    let _ = writeln!(out, "# HELP cairn_scheduler_ticks_total Scheduler passes finished.\n# TYPE cairn_scheduler_ticks_total counter\ncairn_scheduler_ticks_total {}", m.scheduler_ticks.load(Ordering::Acquire));
    let _ = writeln!(out, "# HELP cairn_maintenance_running 1 while retention and gc run.\n# TYPE cairn_maintenance_running gauge\ncairn_maintenance_running {}", u8::from(m.maintenance_running.load(Ordering::Acquire)));
    let _ = writeln!(out, "# HELP cairn_maintenance_runs_total Maintenance passes (retention, then gc) finished.\n# TYPE cairn_maintenance_runs_total counter\ncairn_maintenance_runs_total {}", m.maintenance_runs.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_retention_forgotten_snapshots_total Snapshots retention forgot.\n# TYPE cairn_retention_forgotten_snapshots_total counter\ncairn_retention_forgotten_snapshots_total {}", m.retention_forgotten.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_gc_deleted_packs_total Packs gc deleted.\n# TYPE cairn_gc_deleted_packs_total counter\ncairn_gc_deleted_packs_total {}", m.gc_packs_deleted.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_gc_freed_bytes_total Bytes gc freed.\n# TYPE cairn_gc_freed_bytes_total counter\ncairn_gc_freed_bytes_total {}", m.gc_bytes_freed.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP cairn_ingest_throttled_seconds_total Time uploads waited for the ingest bandwidth cap.\n# TYPE cairn_ingest_throttled_seconds_total counter\ncairn_ingest_throttled_seconds_total {}", m.ingest_throttled_micros.load(Ordering::Relaxed) as f64 / 1e6);
    let firing: Vec<_> = f
        .catalog
        .alerts()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.state == crate::alerts::AlertState::Firing)
        .collect();
    let _ = writeln!(
        out,
        "# HELP cairn_alerts_firing Alerts firing now, by rule.\n# TYPE cairn_alerts_firing gauge"
    );
    for (rule, _) in crate::alerts::RULES {
        let n = firing.iter().filter(|a| a.rule == *rule).count();
        let _ = writeln!(out, "cairn_alerts_firing{{rule=\"{rule}\"}} {n}");
    }
    let sent = f.metrics.notifications.0.lock().unwrap().clone();
    let _ = writeln!(out, "# HELP cairn_notifications_total Notification messages by channel and outcome (sent, failed attempts, dropped after a day).\n# TYPE cairn_notifications_total counter");
    for c in &f.channels.0 {
        for outcome in ["sent", "failed", "dropped"] {
            let n = sent
                .get(&(c.cfg.name.clone(), outcome))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "cairn_notifications_total{{channel=\"{}\",outcome=\"{outcome}\"}} {n}",
                c.cfg.name
            );
        }
    }
    let online: std::collections::HashSet<String> =
        f.sessions.lock().unwrap().keys().cloned().collect();
    let _ = writeln!(out, "# HELP cairn_agent_online Whether the agent has a session now.\n# TYPE cairn_agent_online gauge");
    for a in agents.iter().filter(|a| !a.revoked) {
        let _ = writeln!(
            out,
            "cairn_agent_online{{agent=\"{}\"}} {}",
            label(&a.id),
            u8::from(online.contains(&a.id))
        );
    }
    // The newest snapshot of each (agent, domain, content).
    let mut newest: std::collections::BTreeMap<(String, String, String), (i64, u64)> =
        Default::default();
    for s in f.catalog.snapshots(None).unwrap_or_default() {
        let slot = newest
            .entry((s.agent_id, s.domain, s.content))
            .or_insert((s.time, s.total_bytes));
        if s.time >= slot.0 {
            *slot = (s.time, s.total_bytes);
        }
    }
    let _ = writeln!(out, "# HELP cairn_domain_last_success_timestamp_seconds Time of the domain's newest snapshot, by content (files or database).\n# TYPE cairn_domain_last_success_timestamp_seconds gauge");
    for ((agent, domain, content), (time, _)) in &newest {
        let _ = writeln!(
            out,
            "cairn_domain_last_success_timestamp_seconds{{agent=\"{}\",domain=\"{}\",content=\"{}\"}} {time}",
            label(agent),
            label(domain),
            label(content)
        );
    }
    let _ = writeln!(out, "# HELP cairn_domain_snapshot_bytes Bytes the domain's newest snapshot holds, by content.\n# TYPE cairn_domain_snapshot_bytes gauge");
    for ((agent, domain, content), (_, bytes)) in &newest {
        let _ = writeln!(
            out,
            "cairn_domain_snapshot_bytes{{agent=\"{}\",domain=\"{}\",content=\"{}\"}} {bytes}",
            label(agent),
            label(domain),
            label(content)
        );
    }
    let health = crate::health::current(f, now).unwrap_or_default();
    let per_domain: [(&str, &str, &str, HealthFigure); 5] = [
        ("cairn_domain_health", "Health score 0-100 (recent backup, verification, errors, content, retention, compression).", "gauge", |h| Some(h.score as f64)),
        ("cairn_domain_rpo_seconds", "Age of the domain's newest restorable snapshot.", "gauge", |h| h.rpo_seconds.map(|v| v as f64)),
        ("cairn_domain_rto_seconds", "Duration of the last successful test restore, scaled to the domain's size now.", "gauge", |h| h.rto_seconds.map(|v| v as f64)),
        ("cairn_domain_last_duration_seconds", "Wall time of the domain's newest successful backup.", "gauge", |h| h.last_duration_seconds.map(|v| v as f64)),
        ("cairn_domain_dedup_ratio", "Bytes backed up per byte stored, over the domain's snapshots.", "gauge", |h| h.dedup_ratio),
    ];
    for (name, help, kind, value) in per_domain {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for d in &health {
            if let Some(v) = value(&d.health) {
                let _ = writeln!(
                    out,
                    "{name}{{agent=\"{}\",domain=\"{}\"}} {v}",
                    label(&d.agent),
                    label(&d.domain)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP cairn_fleet_domains Domains by health band.\n# TYPE cairn_fleet_domains gauge"
    );
    for (band, n) in crate::health::distribution(&health) {
        let _ = writeln!(out, "cairn_fleet_domains{{health=\"{band}\"}} {n}");
    }
    let stored: u64 = f
        .repo
        .index()
        .packs()
        .values()
        .flatten()
        .map(|e| u64::from(e.length))
        .sum();
    let _ = writeln!(out, "# HELP cairn_repository_stored_bytes Bytes of blobs the repository's index holds (compressed, encrypted).\n# TYPE cairn_repository_stored_bytes gauge\ncairn_repository_stored_bytes {stored}");
    let _ = writeln!(out, "# HELP cairn_snapshots Snapshots in the catalog.\n# TYPE cairn_snapshots gauge\ncairn_snapshots {}", f.catalog.snapshots(None).map(|s| s.len()).unwrap_or(0));
    let _ = writeln!(out, "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}", f.started_at);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("shop.test"), "shop.test");
        assert_eq!(
            super::label("a\"b\\c\nd"),
            "a\\\"b\\\\c\\nd",
            "a hostile domain name cannot break the exposition format"
        );
    }
}
