//! Alerts (SPEC MON-3, VER-4): rules evaluated over the catalog on every
//! scheduler tick. A rule's finding about one subject (an agent, or a
//! domain of an agent) is one alert: it fires once, stays firing (its
//! message and `last_seen` kept current) while the finding holds, and
//! resolves when it no longer does. Acknowledging an alert records who did
//! it; it stays listed until it resolves.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::catalog::{AgentRecord, JobRecord, JobState};
use crate::summary::Summaries;

/// What a rule found about one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub agent_id: String,
    /// Empty for an agent's own alerts.
    pub domain: String,
    pub message: String,
}

impl Finding {
    /// Alerts are de-duplicated on this.
    pub fn key(&self) -> String {
        alert_key(self.rule, &self.agent_id, &self.domain)
    }
}

pub fn alert_key(rule: &str, agent_id: &str, domain: &str) -> String {
    format!("{rule}\0{agent_id}\0{domain}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub rule: String,
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    pub state: AlertState,
    pub message: String,
    pub fired_at: i64,
    pub last_seen: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<i64>,
}

impl AlertRecord {
    pub fn key(&self) -> String {
        alert_key(&self.rule, &self.agent_id, &self.domain)
    }
}

/// The rules, by name, with what each says.
pub const RULES: &[(&str, &str)] = &[
    (
        "agent_offline",
        "an agent has been offline longer than [alerts] agent_offline",
    ),
    (
        "backup_failed",
        "a domain's latest file backup failed, retries spent",
    ),
    (
        "dump_failed",
        "a domain's latest database dump failed, retries spent",
    ),
    ("verify_failed", "a domain's latest test restore failed"),
    (
        "log_shipping_failed",
        "an agent's latest shipment of its binary log or WAL failed: point-in-time restores reach only the last good one",
    ),
    (
        "log_stream_down",
        "an agent set to stream its database server's binary log ([binlog]) or WAL ([wal]) cannot: point-in-time restores stop",
    ),
    (
        "backup_overdue",
        "no successful backup within 1.5× the domain's schedule interval",
    ),
    (
        "snapshot_shrunk",
        "a domain's newest file backup holds under half the bytes of the one before (deleted or defaced site?)",
    ),
    (
        "snapshot_grew",
        "a domain's newest file backup holds over 3× the bytes of the one before (dumped archives, a runaway log?)",
    ),
    (
        "storage_full",
        "the repository's storage is fuller than [alerts] storage_full percent",
    ),
    (
        "storage_growth",
        "the repository stored over [alerts] storage_growth times its usual day's bytes in a day",
    ),
    (
        "cert_expiring",
        "a certificate the fleet runs on (CA, controller, agent) expires within [alerts] cert_expiry",
    ),
];

/// Subject of the alerts about the controller's own state.
pub const CONTROLLER: &str = "controller";

/// A day must add at least this much before its growth is alerted on.
const GROWTH_FLOOR: u64 = 100_000_000;
/// Days of history the usual day is the median of; at least half must have data.
const GROWTH_HISTORY: i64 = 14;

/// Thresholds of the rules, from `[alerts]` in controller.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Seconds an agent may be away before it is alerted on.
    pub agent_offline: i64,
    /// Certificates expiring within this many seconds are alerted on.
    pub cert_expiry: i64,
    /// Percent of the repository's storage in use that is alerted on.
    pub storage_full: u8,
    /// A day storing this many times the median day is alerted on.
    pub storage_growth: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            agent_offline: 15 * 60,
            cert_expiry: 30 * 86_400,
            storage_full: 85,
            storage_growth: 3.0,
        }
    }
}

/// A certificate the fleet runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The agent it is, or [`CONTROLLER`].
    pub owner: String,
    /// "agent certificate", "CA certificate" …
    pub what: String,
    pub not_after: i64,
}

/// Snapshots smaller than this are too small for size alerts to mean much.
const SIZE_ALERT_FLOOR: u64 = 1_000_000;

/// What the rules read.
pub struct Inputs<'a> {
    pub now: i64,
    pub agents: &'a [AgentRecord],
    /// Agents with a session now.
    pub online: &'a HashSet<String>,
    /// Each domain's snapshots and ended jobs, summed (and the bytes
    /// stored per day, fleet-wide).
    pub summaries: &'a Summaries,
    /// Jobs queued or running.
    pub open: &'a [JobRecord],
    /// Per-domain thresholds from policies' `[alerts]`, where set.
    pub tuning: &'a HashMap<(String, String), crate::policy::AlertTuning>,
    /// (agent, domain) → seconds between two of its scheduled runs (the
    /// shortest of its kinds).
    pub intervals: &'a HashMap<(String, String), i64>,
    pub certificates: &'a [Certificate],
    /// The repository's storage now: (bytes used, capacity), when known.
    pub storage: Option<(u64, u64)>,
    pub limits: &'a Limits,
    /// Agents whose binary log stream is configured but down, with why.
    pub log_streams_down: &'a [(String, String)],
}

/// Every finding the rules make now.
pub fn evaluate(i: &Inputs) -> Vec<Finding> {
    let mut out = Vec::new();
    for a in i.agents.iter().filter(|a| !a.revoked) {
        let away = i.now - a.last_seen;
        if !i.online.contains(&a.id) && away > i.limits.agent_offline {
            out.push(Finding {
                rule: "agent_offline",
                agent_id: a.id.clone(),
                domain: String::new(),
                message: format!(
                    "agent {} ({}) offline for {}",
                    a.id,
                    a.hostname,
                    words(away)
                ),
            });
        }
    }
    let live: HashSet<&str> = i
        .agents
        .iter()
        .filter(|a| !a.revoked)
        .map(|a| a.id.as_str())
        .collect();
    // The newest ended job of each (agent, domain, what) decides, unless
    // one queued or running after it (a retry, say) has yet to.
    let mut pending: HashMap<(&str, &str, &str), (i64, &str)> = HashMap::new();
    for j in i.open {
        if let Some(what) = crate::summary::subject(j) {
            let slot = pending
                .entry((&j.agent_id, &j.domain, what))
                .or_insert((j.created_at, &j.id));
            *slot = (*slot).max((j.created_at, &j.id));
        }
    }
    let mut domains: Vec<_> = i
        .summaries
        .domains
        .iter()
        .filter(|((agent, _), _)| live.contains(agent.as_str()))
        .collect();
    domains.sort_by(|a, b| a.0.cmp(b.0));
    for ((agent, domain), sum) in &domains {
        for (rule, j) in &sum.last_ended {
            let decided = pending
                .get(&(agent.as_str(), domain.as_str(), *rule))
                .is_none_or(|p| *p < (j.created_at, j.id.as_str()));
            if j.state != JobState::Failed || !decided {
                continue;
            }
            let when = j.finished_at.unwrap_or(j.created_at);
            let what = if domain.is_empty() {
                format!("binary log of {agent}")
            } else {
                format!("{domain} on {agent}")
            };
            out.push(Finding {
                rule,
                agent_id: agent.clone(),
                domain: domain.clone(),
                message: format!(
                    "{what}: job {} failed {} ago: {}",
                    j.id,
                    words(i.now - when),
                    j.error.as_deref().unwrap_or("no reason given")
                ),
            });
        }
    }
    for (agent, why) in i.log_streams_down {
        if live.contains(agent.as_str()) {
            out.push(Finding {
                rule: "log_stream_down",
                agent_id: agent.clone(),
                domain: String::new(),
                message: format!("binary log of {agent} is not streamed: {why}"),
            });
        }
    }
    let mut watched: Vec<(&String, &String)> = i
        .intervals
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|((a, d), _)| (a, d))
        .chain(
            i.tuning
                .iter()
                .filter(|(_, t)| t.overdue.is_some())
                .map(|((a, d), _)| (a, d)),
        )
        .collect();
    watched.sort();
    watched.dedup();
    for (agent, domain) in watched {
        if !live.contains(agent.as_str()) {
            continue;
        }
        let key = (agent.clone(), domain.clone());
        let interval = i.intervals.get(&key).copied().unwrap_or(0);
        let limit = match i.tuning.get(&key).map(|t| t.overdue_seconds()) {
            Some(Ok(Some(limit))) => limit,
            _ => interval + interval / 2,
        };
        // A domain never backed up is the failure rules' business.
        let Some(last) = i.summaries.get(agent, domain).and_then(|s| s.newest_time()) else {
            continue;
        };
        if i.now - last > limit {
            out.push(Finding {
                rule: "backup_overdue",
                agent_id: agent.clone(),
                domain: domain.clone(),
                message: format!(
                    "{domain} on {agent}: last backup {} ago, {}",
                    words(i.now - last),
                    if interval > 0 {
                        format!("its schedule runs every {}", words(interval))
                    } else {
                        format!("its policy allows {}", words(limit))
                    }
                ),
            });
        }
    }
    // Sudden size changes between a domain's two newest file snapshots.
    for ((agent, domain), sum) in &domains {
        let Some([last, prev]) = sum.newest.get("files").map(Vec::as_slice) else {
            continue;
        };
        let (a, b) = (prev.total_bytes, last.total_bytes);
        let size = |n: u64| bytesize::ByteSize(n).display().si().to_string();
        let t = i.tuning.get(&((*agent).clone(), (*domain).clone()));
        let shrink = t.and_then(|t| t.shrink).unwrap_or(0.5);
        let grow = t.and_then(|t| t.grow).unwrap_or(3.0);
        let rule = if a >= SIZE_ALERT_FLOOR && (b as f64) < a as f64 * shrink {
            "snapshot_shrunk"
        } else if b >= SIZE_ALERT_FLOOR && b as f64 > a as f64 * grow {
            "snapshot_grew"
        } else {
            continue;
        };
        out.push(Finding {
            rule,
            agent_id: agent.clone(),
            domain: domain.clone(),
            message: format!(
                "{domain} on {agent}: snapshot {} holds {}, the one before {} ({:+.0}%)",
                &last.id[..last.id.len().min(8)],
                size(b),
                size(a),
                (b as f64 - a as f64) * 100.0 / (a.max(1) as f64)
            ),
        });
    }
    // Rules a policy muted for a domain.
    out.retain(|f| {
        i.tuning
            .get(&(f.agent_id.clone(), f.domain.clone()))
            .is_none_or(|t| !t.mute.iter().any(|r| r == f.rule))
    });
    out.extend(storage(i));
    for c in i.certificates {
        let left = c.not_after - i.now;
        if left <= i.limits.cert_expiry {
            let when = if left > 0 {
                format!("expires in {}", words(left))
            } else {
                format!("expired {} ago", words(-left))
            };
            out.push(Finding {
                rule: "cert_expiring",
                agent_id: c.owner.clone(),
                domain: String::new(),
                message: format!("the {} of {} {when}", c.what, c.owner),
            });
        }
    }
    out.sort_by_key(Finding::key);
    out
}

/// The storage rules: fullness, and a day that stored far more than usual.
fn storage(i: &Inputs) -> Vec<Finding> {
    let mut out = Vec::new();
    let size = |n: u64| bytesize::ByteSize(n).display().si().to_string();
    let finding = |rule, message| Finding {
        rule,
        agent_id: CONTROLLER.into(),
        domain: String::new(),
        message,
    };
    if let Some((used, capacity)) = i.storage.filter(|s| s.1 > 0) {
        let percent = used as f64 * 100.0 / capacity as f64;
        if percent >= f64::from(i.limits.storage_full) {
            out.push(finding(
                "storage_full",
                format!(
                    "the repository's storage is {percent:.0}% full ({} of {})",
                    size(used),
                    size(capacity)
                ),
            ));
        }
    }
    // The newest day with data (today or yesterday) against the median day
    // of the two weeks before it.
    let today = i.now - i.now.rem_euclid(86_400);
    if let Some((&day, &bytes)) = i
        .summaries
        .stored_per_day
        .range(today - 86_400..)
        .next_back()
    {
        let mut before: Vec<u64> = (1..=GROWTH_HISTORY)
            .map(|k| {
                i.summaries
                    .stored_per_day
                    .get(&(day - k * 86_400))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        before.sort_unstable();
        let usual = before[before.len() / 2];
        let known = before.iter().filter(|n| **n > 0).count() as i64;
        if known * 2 >= GROWTH_HISTORY
            && bytes >= GROWTH_FLOOR
            && bytes as f64 > usual as f64 * i.limits.storage_growth
        {
            out.push(finding(
                "storage_growth",
                format!(
                    "the repository stored {} on {}, its usual day stores {}",
                    size(bytes),
                    chrono::DateTime::from_timestamp(day, 0)
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_default(),
                    size(usual)
                ),
            ));
        }
    }
    out
}

/// What to store so the alert set matches `findings`: new firing alerts,
/// firing ones whose message moved, resolved ones. `next_id` names new ones.
pub fn reconcile(
    current: &[AlertRecord],
    findings: &[Finding],
    now: i64,
    mut next_id: impl FnMut() -> String,
) -> Vec<AlertRecord> {
    let firing: HashMap<String, &AlertRecord> = current
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| (a.key(), a))
        .collect();
    let found: HashSet<String> = findings.iter().map(Finding::key).collect();
    let mut out = Vec::new();
    for f in findings {
        match firing.get(&f.key()) {
            Some(a) => {
                // Stored again when its message moves (durations in words
                // change by the minute), not on every evaluation.
                if a.message != f.message {
                    out.push(AlertRecord {
                        message: f.message.clone(),
                        last_seen: now,
                        ..(*a).clone()
                    });
                }
            }
            None => out.push(AlertRecord {
                id: next_id(),
                rule: f.rule.into(),
                agent_id: f.agent_id.clone(),
                domain: f.domain.clone(),
                state: AlertState::Firing,
                message: f.message.clone(),
                fired_at: now,
                last_seen: now,
                resolved_at: None,
                acked_by: None,
                acked_at: None,
            }),
        }
    }
    for (key, a) in firing {
        if !found.contains(&key) {
            out.push(AlertRecord {
                state: AlertState::Resolved,
                resolved_at: Some(now),
                ..a.clone()
            });
        }
    }
    out
}

/// "3h 5m", "2d 4h", "45s".
pub fn words(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{JobSpec, SnapshotRecord};

    /// The rules' view of these records, as the catalog keeps it.
    fn kept(snaps: &[SnapshotRecord], jobs: &[JobRecord]) -> (Summaries, Vec<JobRecord>) {
        let open = jobs
            .iter()
            .filter(|j| !j.state.is_final())
            .cloned()
            .collect();
        (Summaries::of(snaps, jobs), open)
    }

    fn agent(id: &str, last_seen: i64) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            hostname: format!("{id}.example"),
            version: "t".into(),
            cert_sha256: String::new(),
            enrolled_at: 0,
            last_seen,
            revoked: false,
            labels: Default::default(),
        }
    }

    fn job(id: &str, domain: &str, content: &str, state: JobState, at: i64) -> JobRecord {
        JobRecord {
            domain: domain.into(),
            error: (state == JobState::Failed).then(|| "mariadb-dump: Access denied".into()),
            spec: JobSpec {
                content: content.into(),
                ..Default::default()
            },
            attempt: 1,
            ..JobRecord::ended(id, state, at, 10)
        }
    }

    fn snap(domain: &str, time: i64) -> SnapshotRecord {
        SnapshotRecord {
            id: format!("s{time}"),
            domain: domain.into(),
            agent_id: "a1".into(),
            time,
            kind: "full".into(),
            content: "files".into(),
            total_bytes: 1,
            stored_bytes: 1,
            run_id: String::new(),
        }
    }

    fn rules(i: &Inputs) -> Vec<(String, String)> {
        evaluate(i)
            .into_iter()
            .map(|f| (f.rule.to_string(), f.domain))
            .collect()
    }

    #[test]
    fn a_failed_shipment_and_a_stream_down_are_alerted_on() {
        let agents = [agent("a1", 1_000), agent("a2", 1_000)];
        let online = HashSet::from(["a1".to_string(), "a2".to_string()]);
        // a1's newest shipment failed; a2's failed, then one succeeded.
        let jobs = [
            job("j1", "", "binlog", JobState::Failed, 100),
            JobRecord {
                agent_id: "a2".into(),
                ..job("j2", "", "binlog", JobState::Failed, 100)
            },
            JobRecord {
                agent_id: "a2".into(),
                ..job("j3", "", "binlog", JobState::Succeeded, 200)
            },
        ];
        let (summaries, open) = kept(&[], &jobs);
        let down = [(
            "a2".to_string(),
            "the server's binary log is off".to_string(),
        )];
        let i = Inputs {
            now: 1_000,
            agents: &agents,
            online: &online,
            summaries: &summaries,
            open: &open,
            tuning: &HashMap::new(),
            intervals: &HashMap::new(),
            certificates: &[],
            storage: None,
            limits: &Limits::default(),
            log_streams_down: &down,
        };
        let found = evaluate(&i);
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.rule, f.agent_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [("log_shipping_failed", "a1"), ("log_stream_down", "a2")]
        );
        assert!(
            found[0]
                .message
                .starts_with("binary log of a1: job j1 failed"),
            "{found:?}"
        );
        assert!(found[1].message.contains("binary log is off"), "{found:?}");
    }

    #[test]
    fn each_rule_fires_on_its_finding_and_only_then() {
        let agents = [agent("a1", 1_000), agent("a2", 1_000)];
        let online = HashSet::from(["a1".to_string()]);
        let jobs = [
            // x: the dump failed, then a retry succeeded: no alert.
            job("j1", "x.test", "database", JobState::Failed, 100),
            job("j2", "x.test", "database", JobState::Succeeded, 200),
            // y: files succeeded, then failed: alert.
            job("j3", "y.test", "", JobState::Succeeded, 100),
            job("j4", "y.test", "", JobState::Failed, 300),
            // z: the dump failed and its retry is still queued: not yet.
            job("j5", "z.test", "database", JobState::Failed, 100),
            job("j6", "z.test", "database", JobState::Queued, 400),
            // w: the dump failed for good.
            job("j7", "w.test", "database", JobState::Failed, 500),
        ];
        let snaps = [snap("x.test", 1_000), snap("y.test", 100)];
        let intervals = HashMap::from([
            (("a1".to_string(), "x.test".to_string()), 3_600),
            (("a1".to_string(), "y.test".to_string()), 3_600),
        ]);
        let (summaries, open) = kept(&snaps, &jobs);
        let mut i = Inputs {
            now: 2_000,
            agents: &agents,
            online: &online,
            summaries: &summaries,
            open: &open,
            tuning: &HashMap::new(),
            intervals: &intervals,
            certificates: &[],
            storage: None,
            limits: &Limits {
                agent_offline: 900,
                ..Limits::default()
            },
            log_streams_down: &[],
        };
        assert_eq!(
            rules(&i),
            [
                ("agent_offline".into(), "".into()),
                ("backup_failed".into(), "y.test".into()),
                ("dump_failed".into(), "w.test".into()),
            ]
        );
        // Later: y's newest backup is 1.5 intervals old; a2 stays away.
        i.now = 100 + 5_401;
        let r = rules(&i);
        assert!(
            r.contains(&("backup_overdue".into(), "y.test".into())),
            "{r:?}"
        );
        assert!(
            !r.contains(&("backup_overdue".into(), "x.test".into())),
            "{r:?}"
        );
        let f = evaluate(&i);
        let off = f.iter().find(|f| f.rule == "agent_offline").unwrap();
        assert_eq!(off.agent_id, "a2");
        assert!(off.message.contains("1h 15m"), "{}", off.message);
        let failed = f.iter().find(|f| f.rule == "dump_failed").unwrap();
        assert!(
            failed.message.contains("Access denied"),
            "{}",
            failed.message
        );
    }

    #[test]
    fn a_sudden_drop_or_jump_in_size_is_told() {
        let agents = [agent("a1", 1_000)];
        let online = HashSet::from(["a1".to_string()]);
        let sized = |d: &str, t: i64, bytes: u64| SnapshotRecord {
            total_bytes: bytes,
            ..snap(d, t)
        };
        let snaps = [
            sized("hacked.test", 100, 80_000_000),
            sized("hacked.test", 200, 30_000_000),
            sized("ok.test", 100, 80_000_000),
            sized("ok.test", 200, 70_000_000),
            sized("logs.test", 100, 2_000_000),
            sized("logs.test", 200, 9_000_000),
            // Tiny sites swing without meaning anything.
            sized("tiny.test", 100, 900_000),
            sized("tiny.test", 200, 100),
        ];
        let (summaries, open) = kept(&snaps, &[]);
        let i = Inputs {
            now: 300,
            agents: &agents,
            online: &online,
            summaries: &summaries,
            open: &open,
            tuning: &HashMap::new(),
            intervals: &HashMap::new(),
            certificates: &[],
            storage: None,
            limits: &Limits::default(),
            log_streams_down: &[],
        };
        assert_eq!(
            rules(&i),
            [
                ("snapshot_grew".into(), "logs.test".into()),
                ("snapshot_shrunk".into(), "hacked.test".into()),
            ]
        );
        let f = evaluate(&i);
        assert!(
            f[1].message
                .contains("30.0 MB, the one before 80.0 MB (-62%)"),
            "{}",
            f[1].message
        );
        // A policy's [alerts]: ok.test alerts on any 10% drop, logs.test's
        // growth is muted, and a domain without a schedule is overdue after 1h.
        let tuned =
            |name: &str, t: crate::policy::AlertTuning| (("a1".to_string(), name.to_string()), t);
        let tuning = HashMap::from([
            tuned(
                "ok.test",
                crate::policy::AlertTuning {
                    shrink: Some(0.9),
                    ..Default::default()
                },
            ),
            tuned(
                "logs.test",
                crate::policy::AlertTuning {
                    mute: vec!["snapshot_grew".into()],
                    ..Default::default()
                },
            ),
            tuned(
                "tiny.test",
                crate::policy::AlertTuning {
                    overdue: Some("1h".into()),
                    ..Default::default()
                },
            ),
        ]);
        let i = Inputs {
            tuning: &tuning,
            now: 200 + 3_601,
            ..i
        };
        assert_eq!(
            rules(&i),
            [
                ("backup_overdue".into(), "tiny.test".into()),
                ("snapshot_shrunk".into(), "hacked.test".into()),
                ("snapshot_shrunk".into(), "ok.test".into()),
            ]
        );
    }

    #[test]
    fn full_or_fast_growing_storage_and_expiring_certificates_are_told() {
        const DAY: i64 = 86_400;
        const MB: u64 = 1_000_000;
        let now = 100 * DAY + 3_600;
        // Two weeks of ~200 MB a day, then 900 MB today.
        let snaps: Vec<SnapshotRecord> = (1..=14)
            .map(|k| SnapshotRecord {
                stored_bytes: 200 * MB + k as u64,
                ..snap("x.test", now - k * DAY)
            })
            .chain([SnapshotRecord {
                stored_bytes: 900 * MB,
                ..snap("x.test", now - 60)
            }])
            .collect();
        let (summaries, open) = kept(&snaps, &[]);
        let certificates = [
            Certificate {
                owner: "a1".into(),
                what: "agent certificate".into(),
                not_after: now + 10 * DAY,
            },
            Certificate {
                owner: CONTROLLER.into(),
                what: "CA certificate".into(),
                not_after: now + 400 * DAY,
            },
        ];
        let limits = Limits::default();
        let mut i = Inputs {
            now,
            agents: &[],
            online: &HashSet::new(),
            summaries: &summaries,
            open: &open,
            tuning: &HashMap::new(),
            intervals: &HashMap::new(),
            certificates: &certificates,
            storage: Some((90 * MB, 100 * MB)),
            limits: &limits,
            log_streams_down: &[],
        };
        let found = evaluate(&i);
        let rules: Vec<_> = found
            .iter()
            .map(|f| (f.rule, f.agent_id.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("cert_expiring", "a1"),
                ("storage_full", CONTROLLER),
                ("storage_growth", CONTROLLER),
            ]
        );
        assert!(
            found[0].message.contains("expires in 10d"),
            "{}",
            found[0].message
        );
        assert!(
            found[1].message.contains("90% full"),
            "{}",
            found[1].message
        );
        assert!(
            found[2].message.contains("900.0 MB"),
            "{}",
            found[2].message
        );
        // Room left, yesterday an ordinary day, certificates far from expiry: quiet.
        let ordinary: Vec<_> = snaps[..14].to_vec();
        let (summaries, _) = kept(&ordinary, &[]);
        i.summaries = &summaries;
        i.storage = Some((50 * MB, 100 * MB));
        i.certificates = &certificates[1..];
        assert_eq!(evaluate(&i), []);
    }

    #[test]
    fn alerts_fire_once_stay_current_and_resolve() {
        let finding = |msg: &str| Finding {
            rule: "agent_offline",
            agent_id: "a2".into(),
            domain: String::new(),
            message: msg.into(),
        };
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("al{n}")
        };
        let first = reconcile(&[], &[finding("offline for 16m")], 10, &mut id);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].state, AlertState::Firing);
        assert_eq!(first[0].fired_at, 10);
        // Unchanged: nothing to store.
        assert!(reconcile(&first, &[finding("offline for 16m")], 15, &mut id).is_empty());
        // Still offline: the same alert, brought up to date, no new one.
        let again = reconcile(&first, &[finding("offline for 20m")], 20, &mut id);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, "al1");
        assert_eq!(again[0].fired_at, 10);
        assert_eq!(again[0].message, "offline for 20m");
        // Back online: resolved, never deleted.
        let resolved = reconcile(&again, &[], 30, &mut id);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, AlertState::Resolved);
        assert_eq!(resolved[0].resolved_at, Some(30));
        // Away again: a new alert.
        let new = reconcile(&resolved, &[finding("offline for 16m")], 40, &mut id);
        assert_eq!(new[0].id, "al2");
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(words(45), "45s");
        assert_eq!(words(16 * 60), "16m");
        assert_eq!(words(3 * 3600 + 300), "3h 5m");
        assert_eq!(words(2 * 86_400 + 4 * 3600), "2d 4h");
    }
}
