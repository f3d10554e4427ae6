//! One domain's analysis (SPEC INT-2..INT-4, INT-6): its type and database,
//! its size and files after excludes, files changed in the last 24 hours,
//! requests from its access logs, and its history (average, trend). The
//! controller turns this into a strategy; the agent only measures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_repo::exclude::Excludes;

use crate::activity::{self, DaySample, History, Trend};
use crate::config::Discovery;
use crate::discover::Site;
use crate::sitecfg::{self, SiteDb, SiteType};

#[derive(Debug, Clone)]
pub struct Report {
    pub site: Site,
    pub site_type: SiteType,
    /// From the site's own config; the password never leaves the agent.
    pub database: Option<SiteDb>,
    pub files: u64,
    pub size_bytes: u64,
    pub changes_24h: u64,
    pub avg_daily_changes: f64,
    pub trend: Trend,
    /// None when no access log was found.
    pub requests_24h: Option<u64>,
    pub history: Vec<DaySample>,
    pub analyzed_at: i64,
    pub took: Duration,
}

/// The access logs to read for a site: those its web server or config names,
/// then the configured places that exist.
fn access_logs(site: &Site, discovery: &Discovery) -> Vec<PathBuf> {
    let mut logs = site.access_logs.clone();
    for t in &discovery.access_logs {
        let p = PathBuf::from(
            t.replace("{name}", &site.name)
                .replace("{root}", &site.root.to_string_lossy()),
        );
        if !logs.contains(&p) {
            logs.push(p);
        }
    }
    logs
}

/// Analyzes `site` as of `now` (Unix seconds) and records the day's sample in
/// the history under `state_dir` (when given).
pub fn analyze(site: &Site, discovery: &Discovery, state_dir: Option<&Path>, now: i64) -> Report {
    let started = Instant::now();
    let (site_type, database) = if site.root_missing {
        (SiteType::Static, None)
    } else {
        sitecfg::detect(&site.root)
    };
    let excludes = Excludes::with_defaults(&site.exclude).unwrap_or_else(|e| {
        tracing::warn!(domain = %site.name, error = %e, "bad excludes; using the defaults");
        Excludes::with_defaults::<&str>(&[]).expect("default excludes compile")
    });
    let walk = activity::walk(&site.root, &excludes, now);
    let requests_24h = crate::traffic::requests_last_day(&access_logs(site, discovery), now);
    let mut history = state_dir
        .map(|d| History::load(d, &site.name))
        .unwrap_or_default();
    if !site.root_missing {
        history.record(DaySample {
            day: activity::day_of(now),
            changes: walk.changed_24h,
            requests: requests_24h,
            size_bytes: walk.bytes,
        });
        if let Some(d) = state_dir {
            if let Err(e) = history.save(d, &site.name) {
                tracing::warn!(domain = %site.name, error = %e, "saving activity history");
            }
        }
    }
    Report {
        site: site.clone(),
        site_type,
        database,
        files: walk.files,
        size_bytes: walk.bytes,
        changes_24h: walk.changed_24h,
        avg_daily_changes: history.average_daily_changes(),
        trend: history.trend(),
        requests_24h,
        history: history.samples,
        analyzed_at: now,
        took: started.elapsed(),
    }
}
