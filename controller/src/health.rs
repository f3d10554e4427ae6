//! Health, RPO and RTO per domain (SPEC MON-5, DR-1), as one pure function
//! over what the catalog knows of a domain ([`Facts`]), so the status page,
//! the JSON API and `/metrics` show the same figures.
//!
//! The score is seed 004's weighting: recent backup 30, verification 25,
//! error trend 20, type diversity 10, retention coverage 10, compression 5.
//! Bands: excellent ≥ 95, good ≥ 80, warning ≥ 60, critical below.
//! Measured RPO is the age of the newest restorable snapshot; RTO is the
//! duration of the last successful test restore scaled to the domain's
//! size now.

use std::collections::HashMap;

use serde::Serialize;

use crate::catalog::{DomainRecord, JobState};
use crate::summary::{DomainSummary, Summaries};

/// A test restore this recent counts in full; up to 30 days, partly.
const VERIFIED_FRESH: i64 = 8 * 86_400;
const VERIFIED_STALE: i64 = 30 * 86_400;
/// Without a schedule, a day is the expected interval.
const DEFAULT_INTERVAL: i64 = 86_400;

/// What the catalog knows of one domain.
#[derive(Debug)]
pub struct Facts<'a> {
    pub domain: Option<&'a DomainRecord>,
    /// Seconds between two scheduled runs (0: none known).
    pub interval: i64,
    /// Its snapshots and ended jobs, summed.
    pub summary: &'a DomainSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub score: u32,
    /// excellent, good, warning or critical.
    pub band: &'static str,
    /// Age of the newest restorable snapshot; None: never backed up.
    pub rpo_seconds: Option<i64>,
    /// What the schedule promises: 1.5 × its interval.
    pub rpo_target_seconds: i64,
    pub rpo_met: bool,
    /// Last test restore's duration scaled to today's size.
    pub rto_seconds: Option<i64>,
    pub last_verified: Option<i64>,
    /// Consecutive failed backups, newest first.
    pub failure_streak: u32,
    /// Wall time of the newest successful backup.
    pub last_duration_seconds: Option<i64>,
    /// Bytes backed up per byte stored (dedup and compression), all snapshots.
    pub dedup_ratio: Option<f64>,
    /// Each part's points, for "why this score".
    pub parts: Vec<(&'static str, u32, u32)>,
}

pub fn band(score: u32) -> &'static str {
    match score {
        95.. => "excellent",
        80..=94 => "good",
        60..=79 => "warning",
        _ => "critical",
    }
}

pub fn assess(f: &Facts, now: i64) -> Health {
    let sum = f.summary;
    let interval = if f.interval > 0 {
        f.interval
    } else {
        DEFAULT_INTERVAL
    };
    let target = interval + interval / 2;
    let newest = sum.newest_time();
    let rpo = newest.map(|t| (now - t).max(0));
    let age_points = match rpo {
        None => 0,
        Some(a) if a <= interval => 30,
        Some(a) if a <= target => 20,
        Some(a) if a <= 3 * interval => 10,
        Some(_) => 0,
    };

    let verified = sum.last_good_test.as_ref();
    let last_test_failed = sum
        .last_test
        .as_ref()
        .is_some_and(|j| j.state == JobState::Failed);
    let last_verified = verified.and_then(|j| j.finished_at);
    let verify_points = match last_verified.map(|t| now - t) {
        _ if last_test_failed => 0,
        Some(a) if a <= VERIFIED_FRESH => 25,
        Some(a) if a <= VERIFIED_STALE => 12,
        _ => 0,
    };

    let streak = sum.failure_streak;
    let recent = &sum.backups;
    let failed = recent
        .iter()
        .filter(|j| j.state == JobState::Failed)
        .count();
    let error_points = if streak >= 3 || recent.is_empty() && newest.is_none() {
        0
    } else if recent.is_empty() {
        20
    } else {
        (20 * (recent.len() - failed) / recent.len()) as u32
    };

    let has_db = f.domain.is_some_and(|d| !d.databases.is_empty());
    let has_files = sum.newest.keys().any(|c| c != "database");
    let has_dump = sum.has("database");
    let diversity_points = match (has_files, has_dump, has_db) {
        (true, true, _) | (true, false, false) => 10,
        (true, false, true) | (false, true, _) => 5,
        _ => 0,
    };

    let points = sum.snapshots;
    let retention_points = match points {
        7.. => 10,
        3..=6 => 6,
        1..=2 => 3,
        _ => 0,
    };

    let dedup_ratio =
        (sum.stored_bytes > 0).then(|| sum.total_bytes as f64 / sum.stored_bytes as f64);
    let compression_points = match dedup_ratio {
        Some(r) if r >= 2.0 => 5,
        Some(r) if r >= 1.25 => 3,
        Some(_) => 1,
        None => 0,
    };

    let parts = vec![
        ("recent backup", age_points, 30),
        ("verification", verify_points, 25),
        ("error trend", error_points, 20),
        ("type diversity", diversity_points, 10),
        ("retention coverage", retention_points, 10),
        ("compression", compression_points, 5),
    ];
    let score = parts.iter().map(|p| p.1).sum();

    let size_now = f.domain.map_or(0, |d| d.size_bytes);
    let rto = verified.and_then(|j| {
        let d = j.duration()?.max(1);
        if j.total_bytes > 0 && size_now > 0 {
            Some((d as f64 * size_now as f64 / j.total_bytes as f64).ceil() as i64)
        } else {
            Some(d)
        }
    });
    let last_duration = sum.last_good_backup.as_ref().and_then(|j| j.duration());
    Health {
        score,
        band: band(score),
        rpo_seconds: rpo,
        rpo_target_seconds: target,
        rpo_met: rpo.is_some_and(|r| r <= target),
        rto_seconds: rto,
        last_verified,
        failure_streak: streak,
        last_duration_seconds: last_duration,
        dedup_ratio,
        parts,
    }
}

/// One domain's health, with who it is.
#[derive(Debug, Clone, Serialize)]
pub struct DomainHealth {
    pub agent: String,
    pub domain: String,
    #[serde(flatten)]
    pub health: Health,
}

/// Health of every domain the catalog knows, sorted by domain.
pub fn of_fleet(
    domains: &[DomainRecord],
    summaries: &Summaries,
    intervals: &HashMap<(String, String), i64>,
    now: i64,
) -> Vec<DomainHealth> {
    let none = DomainSummary::default();
    let mut out: Vec<DomainHealth> = domains
        .iter()
        .map(|d| {
            let key = (d.agent_id.clone(), d.name.clone());
            let facts = Facts {
                domain: Some(d),
                interval: intervals.get(&key).copied().unwrap_or(0),
                summary: summaries.domains.get(&key).unwrap_or(&none),
            };
            DomainHealth {
                health: assess(&facts, now),
                agent: key.0,
                domain: key.1,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.domain, &a.agent).cmp(&(&b.domain, &b.agent)));
    out
}

/// Every domain's health now, read from the catalog.
pub fn current(f: &crate::fleet::Fleet, now: i64) -> anyhow::Result<Vec<DomainHealth>> {
    let intervals = crate::scheduler::intervals(f, now)?;
    let domains = f.catalog.domains()?;
    Ok(f.catalog
        .with_summaries(|s| of_fleet(&domains, s, &intervals, now)))
}

/// How many domains are in each band, worst first.
pub fn distribution(all: &[DomainHealth]) -> [(&'static str, usize); 4] {
    let n = |b: &str| all.iter().filter(|d| d.health.band == b).count();
    [
        ("critical", n("critical")),
        ("warning", n("warning")),
        ("good", n("good")),
        ("excellent", n("excellent")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{JobRecord, JobSpec, SnapshotRecord};

    fn facts<'a>(d: &'a DomainRecord, sums: &'a Summaries) -> Facts<'a> {
        Facts {
            domain: Some(d),
            interval: DAY,
            summary: sums.get("a1", "shop.test").unwrap(),
        }
    }

    const DAY: i64 = 86_400;

    fn snap(time: i64, content: &str) -> SnapshotRecord {
        SnapshotRecord {
            id: format!("s{time}{content}"),
            domain: "shop.test".into(),
            agent_id: "a1".into(),
            time,
            kind: "full".into(),
            content: content.into(),
            total_bytes: 1_000,
            stored_bytes: 300,
            run_id: String::new(),
        }
    }

    fn job(kind: &str, state: JobState, at: i64, secs: i64, test: bool) -> JobRecord {
        JobRecord {
            kind: kind.into(),
            total_bytes: 500_000,
            spec: JobSpec {
                test,
                ..Default::default()
            },
            attempt: 1,
            ..JobRecord::ended(&format!("j{at}"), state, at, secs)
        }
    }

    fn domain() -> DomainRecord {
        DomainRecord {
            binlog: false,
            name: "shop.test".into(),
            agent_id: "a1".into(),
            path: "/srv/shop".into(),
            size_bytes: 1_000_000,
            databases: vec!["mysql:shop".into()],
            aliases: vec![],
            site_type: "wordpress".into(),
            source: String::new(),
            root_missing: false,
            analysis: None,
        }
    }

    #[test]
    fn a_protected_domain_is_excellent_and_a_neglected_one_critical() {
        let now = 30 * DAY;
        let d = domain();
        let snaps: Vec<SnapshotRecord> = (0..8)
            .flat_map(|i| {
                [
                    snap(now - i * DAY - 3600, "files"),
                    snap(now - i * DAY - 3600, "database"),
                ]
            })
            .collect();
        let backups: Vec<JobRecord> = (0..8)
            .map(|i| {
                job(
                    "backup",
                    JobState::Succeeded,
                    now - i * DAY - 3700,
                    100,
                    false,
                )
            })
            .collect();
        let test = job("restore", JobState::Succeeded, now - 2 * DAY, 40, true);
        let mut jobs = backups.clone();
        jobs.push(test.clone());
        let sums = Summaries::of(&snaps, &jobs);
        let h = assess(&facts(&d, &sums), now);
        assert_eq!((h.score, h.band), (100, "excellent"), "{:?}", h.parts);
        assert_eq!(h.rpo_seconds, Some(3600));
        assert!(h.rpo_met);
        // 40 s for 500 kB restored; the site is 1 MB now: 80 s.
        assert_eq!(h.rto_seconds, Some(80));
        assert_eq!(h.last_duration_seconds, Some(100));

        // Three failures in a row, nothing verified, last success 4 days ago.
        let failing: Vec<JobRecord> = (0..3)
            .map(|i| job("backup", JobState::Failed, now - i * DAY, 5, false))
            .collect();
        let old = [snap(now - 4 * DAY, "files")];
        let sums = Summaries::of(&old, &failing);
        let h = assess(&facts(&d, &sums), now);
        assert_eq!(h.band, "critical", "{:?}", h.parts);
        assert_eq!(h.failure_streak, 3);
        assert!(!h.rpo_met);
        assert_eq!(h.rto_seconds, None, "never test-restored: RTO unknown");
        // The dump is missing although the site has a database: half marks.
        assert!(
            h.parts.contains(&("type diversity", 5, 10)),
            "{:?}",
            h.parts
        );

        // A failed test restore takes the verification points away.
        let bad = job("restore", JobState::Failed, now - DAY, 10, true);
        jobs.push(bad);
        let sums = Summaries::of(&snaps, &jobs);
        assert!(assess(&facts(&d, &sums), now)
            .parts
            .contains(&("verification", 0, 25)));
    }

    #[test]
    fn bands_follow_the_seed() {
        assert_eq!(band(95), "excellent");
        assert_eq!(band(94), "good");
        assert_eq!(band(80), "good");
        assert_eq!(band(79), "warning");
        assert_eq!(band(60), "warning");
        assert_eq!(band(59), "critical");
    }
}
