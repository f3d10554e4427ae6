//! The web listener: the dashboard (`/`, `/domain/AGENT/DOMAIN`, see
//! [`crate::dashboard`]), `/api/status` (JSON), `/metrics` (Prometheus text)
//! and `/healthz`. Binds 127.0.0.1 by default; bound beyond loopback it
//! needs `web_token_file`, and every path but `/healthz` asks for that
//! token (`Authorization: Bearer`, or once as `?token=`, kept in a cookie).
//! It shows names, sizes and states, never a secret.

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
        .route("/domain/{agent}/{domain}", get(domain_page))
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            fleet.clone(),
            require_token,
        ))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(fleet)
}

/// With `web_token_file`, every page asks for its token: a Bearer header
/// (Prometheus' `authorization`), a cookie set by a first `?token=` visit.
async fn require_token(
    State(f): State<Arc<Fleet>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(want) = f.web_token.as_deref() else {
        return next.run(req).await;
    };
    let same = |got: &str| {
        let (a, b) = (got.as_bytes(), want.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("cairn_token="))
        });
    if bearer.is_some_and(same) || cookie.is_some_and(same) {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("");
    if query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .is_some_and(same)
    {
        // Set once, then the address bar loses the token.
        return (
            axum::http::StatusCode::SEE_OTHER,
            [
                (header::LOCATION, req.uri().path().to_string()),
                (
                    header::SET_COOKIE,
                    format!("cairn_token={want}; HttpOnly; SameSite=Strict; Path=/"),
                ),
            ],
        )
            .into_response();
    }
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the token of web_token_file is required\n",
    )
        .into_response()
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
    // The newest snapshot of each domain, any content.
    let last: std::collections::HashMap<(String, String), (i64, String)> =
        f.catalog.with_summaries(|s| {
            s.domains
                .iter()
                .filter_map(|(k, d)| {
                    let n = d
                        .newest
                        .values()
                        .filter_map(|v| v.first())
                        .max_by_key(|s| s.time)?;
                    Some((k.clone(), (n.time, n.id.clone())))
                })
                .collect()
        });
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
                let l = last.get(&(d.agent_id.clone(), d.name.clone())).cloned();
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
            .open_jobs()
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

async fn page(State(f): State<Arc<Fleet>>) -> Result<Html<String>, WebError> {
    let html = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let now = now();
        let agents = f.catalog.agents()?;
        let online: std::collections::HashSet<String> =
            f.sessions.lock().unwrap().keys().cloned().collect();
        let domains = f.catalog.domains()?;
        let intervals = crate::scheduler::intervals(&f, now)?;
        let (health, stored_per_day) = f.catalog.with_summaries(|s| {
            (
                crate::health::of_fleet(&domains, s, &intervals, now),
                s.stored_per_day.clone(),
            )
        });
        let running: Vec<_> = f
            .catalog
            .open_jobs()?
            .into_iter()
            .filter(|j| j.state == JobState::Running)
            .collect();
        let upcoming = crate::scheduler::upcoming(&f, now, 86_400)?;
        let mut strategies = std::collections::HashMap::new();
        for d in &domains {
            if let Some(p) = f.catalog.plan(&d.agent_id, &d.name)? {
                strategies.insert((d.agent_id.clone(), d.name.clone()), p.strategy);
            }
        }
        Ok(crate::dashboard::fleet_page(&crate::dashboard::Fleet {
            now,
            agents: &agents,
            online: &online,
            domains: &domains,
            health: &health,
            alerts: &f.catalog.alerts()?,
            running: &running,
            upcoming: &upcoming,
            stored_per_day: &stored_per_day,
            stored_bytes: f.stored_bytes(),
            strategies: &strategies,
        }))
    })
    .await
    .map_err(|e| WebError(e.to_string()))??;
    Ok(Html(html))
}

async fn domain_page(
    State(f): State<Arc<Fleet>>,
    axum::extract::Path((agent, domain)): axum::extract::Path<(String, String)>,
) -> Result<Html<String>, WebError> {
    let html = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
        let now = now();
        let Some(record) = f
            .catalog
            .domains()?
            .into_iter()
            .find(|d| d.agent_id == agent && d.name == domain)
        else {
            return Ok(None);
        };
        let mut snapshots: Vec<_> = f
            .catalog
            .snapshots(Some(&domain))?
            .into_iter()
            .filter(|s| s.agent_id == agent)
            .collect();
        snapshots.sort_by_key(|s| s.time);
        let (history, health) = {
            let intervals = crate::scheduler::intervals(&f, now)?;
            f.catalog.with_summaries(|s| {
                let ids: Vec<String> = s
                    .get(&agent, &domain)
                    .map(|d| d.history.iter().cloned().collect())
                    .unwrap_or_default();
                let h = crate::health::of_fleet(std::slice::from_ref(&record), s, &intervals, now);
                (ids, h)
            })
        };
        // Its ended jobs the summary remembers, and those queued or running.
        let mut jobs: Vec<_> = f
            .catalog
            .open_jobs()?
            .into_iter()
            .filter(|j| j.agent_id == agent && j.domain == domain)
            .collect();
        for id in &history {
            jobs.push(f.catalog.job(id)?);
        }
        jobs.sort_by_key(|j| std::cmp::Reverse((j.created_at, j.id.clone())));
        let Some(health) = health.first() else {
            return Ok(None);
        };
        let mut alerts: Vec<_> = f
            .catalog
            .alerts()?
            .into_iter()
            .filter(|a| a.agent_id == agent && (a.domain == domain || a.domain.is_empty()))
            .collect();
        alerts.sort_by_key(|a| {
            (
                a.state != crate::alerts::AlertState::Firing,
                std::cmp::Reverse(a.fired_at),
            )
        });
        let snaps: Vec<_> = snapshots.iter().collect();
        let jobs: Vec<_> = jobs.iter().collect();
        let alerts: Vec<_> = alerts.iter().collect();
        Ok(Some(crate::dashboard::domain_page(
            &crate::dashboard::Domain {
                now,
                record: &record,
                health,
                snapshots: &snaps,
                jobs: &jobs,
                alerts: &alerts,
            },
        )))
    })
    .await
    .map_err(|e| WebError(e.to_string()))??;
    html.map(Html).ok_or_else(WebError::not_found)
}

/// A page that could not be built: 500 with the cause, logged once.
struct WebError(String);

impl WebError {
    fn not_found() -> WebError {
        WebError(String::new())
    }
}

impl From<anyhow::Error> for WebError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %e, "rendering a page");
        WebError(format!("{e:#}"))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> axum::response::Response {
        if self.0.is_empty() {
            (axum::http::StatusCode::NOT_FOUND, "no such domain\n").into_response()
        } else {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
        }
    }
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
    type Newest = std::collections::BTreeMap<(String, String, String), (i64, u64)>;
    let (newest, snapshots): (Newest, u64) = f.catalog.with_summaries(|s| {
        let newest = s
            .domains
            .iter()
            .flat_map(|((agent, domain), d)| {
                d.newest.iter().filter_map(move |(content, v)| {
                    let n = v.first()?;
                    Some((
                        (agent.clone(), domain.clone(), content.clone()),
                        (n.time, n.total_bytes),
                    ))
                })
            })
            .collect();
        (newest, s.snapshots)
    });
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
    let stored = f.stored_bytes();
    let _ = writeln!(out, "# HELP cairn_repository_stored_bytes Bytes of blobs the repository's index holds (compressed, encrypted).\n# TYPE cairn_repository_stored_bytes gauge\ncairn_repository_stored_bytes {stored}");
    let _ = writeln!(out, "# HELP cairn_snapshots Snapshots in the catalog.\n# TYPE cairn_snapshots gauge\ncairn_snapshots {snapshots}");
    let _ = writeln!(out, "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}", f.started_at);
    out
}

#[cfg(test)]
mod tests {
    /// Every metric the Grafana dashboard in deploy/ queries is one this
    /// controller exports.
    #[test]
    fn the_grafana_dashboard_queries_exported_metrics() {
        let dash = include_str!("../../deploy/grafana-dashboard.json");
        let src = include_str!("web.rs");
        let v: serde_json::Value = serde_json::from_str(dash).unwrap();
        let mut n = 0;
        for p in v["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("cairn_"))
                {
                    n += 1;
                    assert!(
                        src.contains(&format!("# HELP {name} "))
                            || src.contains(&format!("(\"{name}\"")),
                        "{name} (panel {}) is not exported",
                        p["title"]
                    );
                }
            }
        }
        assert!(n >= 15, "{n}");
    }

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
