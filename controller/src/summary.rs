//! What the status page, `/metrics`, health and alerts need of each
//! domain's history, kept up to date by the catalog as jobs end and
//! snapshots come and go, so none of them decodes every job and snapshot on
//! every request (a 5,000-domain fleet has hundreds of thousands).
//!
//! The summaries are derived data: the catalog rebuilds them from its trees
//! when it opens and changes them under one lock with the records they sum,
//! so they cannot drift from what is stored, crash or not.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::catalog::{JobRecord, JobState, SnapshotRecord};

/// Ended backups kept per domain for the error trend.
pub const RECENT_BACKUPS: usize = 10;
/// Ended job ids kept per domain for its page's run history.
pub const HISTORY: usize = 100;

/// The parts of an ended job the summaries keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobBrief {
    pub id: String,
    pub state: JobState,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub total_bytes: u64,
    pub error: Option<String>,
}

impl JobBrief {
    fn of(j: &JobRecord) -> JobBrief {
        JobBrief {
            id: j.id.clone(),
            state: j.state,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            total_bytes: j.total_bytes,
            error: j.error.clone(),
        }
    }

    /// Wall time, when it ran.
    pub fn duration(&self) -> Option<i64> {
        Some(self.finished_at? - self.started_at?).filter(|d| *d >= 0)
    }

    /// Ended jobs are ordered by when they ended, then were created.
    fn order(&self) -> (Option<i64>, i64, &str) {
        (self.finished_at, self.created_at, &self.id)
    }
}

/// The parts of a snapshot the summaries keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapBrief {
    pub id: String,
    pub time: i64,
    pub total_bytes: u64,
}

/// What an ended job says about its domain, for the alert rules.
pub fn subject(j: &JobRecord) -> Option<&'static str> {
    match (j.kind.as_str(), j.spec.content.as_str(), j.spec.test) {
        ("backup", "database", _) => Some("dump_failed"),
        ("backup", "binlog", _) => Some("log_shipping_failed"),
        ("backup", _, _) => Some("backup_failed"),
        ("restore", _, true) => Some("verify_failed"),
        _ => None,
    }
}

/// One domain (of one agent): its snapshots and ended jobs, summed.
#[derive(Debug, Clone, Default)]
pub struct DomainSummary {
    pub snapshots: u64,
    pub total_bytes: u64,
    pub stored_bytes: u64,
    /// By content ("files", "database"): its two newest snapshots, newest first.
    pub newest: BTreeMap<String, Vec<SnapBrief>>,
    /// Ended backups (files and dumps), newest first, at most [`RECENT_BACKUPS`].
    pub backups: Vec<JobBrief>,
    /// Consecutive failed backups, newest first.
    pub failure_streak: u32,
    pub last_good_backup: Option<JobBrief>,
    pub last_test: Option<JobBrief>,
    pub last_good_test: Option<JobBrief>,
    /// The newest ended job of each alert subject ([`subject`]).
    pub last_ended: BTreeMap<&'static str, JobBrief>,
    /// Its ended jobs' ids, newest last, at most [`HISTORY`].
    pub history: VecDeque<String>,
}

impl DomainSummary {
    /// Time of its newest snapshot, any content.
    pub fn newest_time(&self) -> Option<i64> {
        self.newest
            .values()
            .filter_map(|v| v.first())
            .map(|s| s.time)
            .max()
    }

    pub fn has(&self, content: &str) -> bool {
        self.newest.get(content).is_some_and(|v| !v.is_empty())
    }

    /// Adds an ended job. Jobs end in order (a rebuild feeds them sorted),
    /// so it is the newest; the failure streak counts on that.
    pub fn job_ended(&mut self, j: &JobRecord) {
        if !j.state.is_final() {
            return;
        }
        let b = JobBrief::of(j);
        self.history.push_back(j.id.clone());
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let newer = |old: &Option<JobBrief>| old.as_ref().is_none_or(|o| b.order() >= o.order());
        if let Some(what) = subject(j) {
            if self
                .last_ended
                .get(what)
                .is_none_or(|o| b.order() >= o.order())
            {
                self.last_ended.insert(what, b.clone());
            }
        }
        match (j.kind.as_str(), j.spec.test) {
            ("backup", _) => {
                if self.backups.first().is_none_or(|o| b.order() >= o.order()) {
                    self.failure_streak = match b.state {
                        JobState::Failed => self.failure_streak + 1,
                        _ => 0,
                    };
                }
                if b.state == JobState::Succeeded && newer(&self.last_good_backup) {
                    self.last_good_backup = Some(b.clone());
                }
                let at = self
                    .backups
                    .iter()
                    .position(|o| b.order() >= o.order())
                    .unwrap_or(self.backups.len());
                self.backups.insert(at, b);
                self.backups.truncate(RECENT_BACKUPS);
            }
            ("restore", true) => {
                if b.state == JobState::Succeeded && newer(&self.last_good_test) {
                    self.last_good_test = Some(b.clone());
                }
                if newer(&self.last_test) {
                    self.last_test = Some(b);
                }
            }
            _ => {}
        }
    }

    fn add_snapshot(&mut self, s: &SnapshotRecord) {
        self.snapshots += 1;
        self.total_bytes += s.total_bytes;
        self.stored_bytes += s.stored_bytes;
        let v = self.newest.entry(s.content.clone()).or_default();
        v.retain(|o| o.id != s.id);
        v.push(SnapBrief {
            id: s.id.clone(),
            time: s.time,
            total_bytes: s.total_bytes,
        });
        v.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        v.truncate(2);
    }

    fn remove_snapshot(&mut self, s: &SnapshotRecord, left: &[SnapshotRecord]) {
        self.snapshots = self.snapshots.saturating_sub(1);
        self.total_bytes = self.total_bytes.saturating_sub(s.total_bytes);
        self.stored_bytes = self.stored_bytes.saturating_sub(s.stored_bytes);
        // The newest two may have lost one: take them again from what is left.
        let mut v: Vec<SnapBrief> = left
            .iter()
            .filter(|o| o.content == s.content && o.agent_id == s.agent_id)
            .map(|o| SnapBrief {
                id: o.id.clone(),
                time: o.time,
                total_bytes: o.total_bytes,
            })
            .collect();
        v.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        v.truncate(2);
        if v.is_empty() {
            self.newest.remove(&s.content);
        } else {
            self.newest.insert(s.content.clone(), v);
        }
    }
}

/// Every domain's summary, by (agent, domain), and fleet-wide sums.
#[derive(Debug, Clone, Default)]
pub struct Summaries {
    pub domains: HashMap<(String, String), DomainSummary>,
    /// Bytes newly stored, by UTC day (seconds at midnight).
    pub stored_per_day: BTreeMap<i64, u64>,
    pub snapshots: u64,
}

fn day(t: i64) -> i64 {
    t - t.rem_euclid(86_400)
}

impl Summaries {
    /// Summaries of these records (any order).
    pub fn of(snapshots: &[SnapshotRecord], jobs: &[JobRecord]) -> Summaries {
        let mut s = Summaries::default();
        for snap in snapshots {
            s.snapshot_added(snap);
        }
        let mut ended: Vec<&JobRecord> = jobs.iter().filter(|j| j.state.is_final()).collect();
        ended.sort_by(|a, b| {
            (a.finished_at, a.created_at, &a.id).cmp(&(b.finished_at, b.created_at, &b.id))
        });
        for j in ended {
            s.job_ended(j);
        }
        s
    }

    pub fn get(&self, agent: &str, domain: &str) -> Option<&DomainSummary> {
        self.domains.get(&(agent.to_string(), domain.to_string()))
    }

    fn entry(&mut self, agent: &str, domain: &str) -> &mut DomainSummary {
        self.domains
            .entry((agent.to_string(), domain.to_string()))
            .or_default()
    }

    pub fn job_ended(&mut self, j: &JobRecord) {
        self.entry(&j.agent_id, &j.domain).job_ended(j);
    }

    pub fn snapshot_added(&mut self, s: &SnapshotRecord) {
        self.snapshots += 1;
        *self.stored_per_day.entry(day(s.time)).or_default() += s.stored_bytes;
        self.entry(&s.agent_id, &s.domain).add_snapshot(s);
    }

    /// `left`: the domain's snapshots after the removal.
    pub fn snapshot_removed(&mut self, s: &SnapshotRecord, left: &[SnapshotRecord]) {
        self.snapshots = self.snapshots.saturating_sub(1);
        if let Some(n) = self.stored_per_day.get_mut(&day(s.time)) {
            *n = n.saturating_sub(s.stored_bytes);
            if *n == 0 {
                self.stored_per_day.remove(&day(s.time));
            }
        }
        self.entry(&s.agent_id, &s.domain).remove_snapshot(s, left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, time: i64, content: &str, bytes: u64) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            domain: "shop.test".into(),
            agent_id: "a1".into(),
            time,
            kind: "full".into(),
            content: content.into(),
            total_bytes: bytes,
            stored_bytes: bytes / 10,
            run_id: String::new(),
        }
    }

    fn backup(id: &str, state: JobState, at: i64) -> JobRecord {
        JobRecord::ended(id, state, at, 5)
    }

    /// Kept as jobs end and snapshots land, a summary equals one built from
    /// the records at the end; removals take the newest from what is left.
    #[test]
    fn incremental_summaries_equal_a_rebuild() {
        let snaps: Vec<_> = (0..6)
            .map(|i| {
                snap(
                    &format!("s{i}"),
                    i * 100,
                    ["files", "database"][i as usize % 2],
                    1_000 * (i as u64 + 1),
                )
            })
            .collect();
        let jobs: Vec<_> = (0..14)
            .map(|i| {
                let state = if i % 4 == 3 || i >= 11 {
                    JobState::Failed
                } else {
                    JobState::Succeeded
                };
                backup(&format!("j{i:02}"), state, i * 50)
            })
            .collect();
        let mut live = Summaries::default();
        for (i, j) in jobs.iter().enumerate() {
            live.job_ended(j);
            if let Some(s) = snaps.get(i) {
                live.snapshot_added(s);
            }
        }
        let built = Summaries::of(&snaps, &jobs);
        let (a, b) = (
            live.get("a1", "shop.test").unwrap(),
            built.get("a1", "shop.test").unwrap(),
        );
        assert_eq!(a.backups, b.backups);
        assert_eq!(a.failure_streak, b.failure_streak);
        assert_eq!(b.backups.len(), RECENT_BACKUPS);
        assert_eq!(b.backups[0].id, "j13");
        assert_eq!(b.failure_streak, 3);
        assert_eq!(b.last_good_backup.as_ref().unwrap().id, "j10");
        assert_eq!(b.last_ended["backup_failed"].id, "j13");
        assert_eq!(a.newest, b.newest);
        assert_eq!(
            (b.snapshots, b.total_bytes, b.stored_bytes),
            (6, 21_000, 2_100)
        );
        assert_eq!(
            b.newest["files"]
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["s4", "s2"]
        );
        assert_eq!(b.newest_time(), Some(500));

        // Forget the newest dump: the one before takes its place.
        let mut after = built.clone();
        let left: Vec<_> = snaps.iter().filter(|s| s.id != "s5").cloned().collect();
        after.snapshot_removed(&snaps[5], &left);
        let rebuilt = Summaries::of(&left, &jobs);
        assert_eq!(
            after.get("a1", "shop.test").unwrap().newest,
            rebuilt.get("a1", "shop.test").unwrap().newest
        );
        assert_eq!(after.stored_per_day, rebuilt.stored_per_day);
        assert_eq!(after.snapshots, 5);
        assert_eq!(
            after.get("a1", "shop.test").unwrap().newest_time(),
            Some(400)
        );
    }
}
