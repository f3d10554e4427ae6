//! The controller's own loop (SPEC SCH-1..4, INT-7, RET-1..4): each tick it
//! queues the runs whose time has come, hands queued jobs to their agents
//! within the per-agent and fleet limits, gives up on runs whose agent
//! stays away, fails jobs that outlive `job_timeout`, and in the
//! maintenance window applies retention and runs gc.
//!
//! Every decision reads the controller's clock ([`crate::clock`]), so a
//! test steps time and watches weeks of schedules run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{DomainRecord, JobRecord, JobSpec, JobState, SnapshotRecord};
use crate::fleet::Fleet;
use crate::policy::{effective, Effective, Subject};
use crate::retention::{decide, Candidate};
use crate::schedule::{parse_cron, parse_tz, splay_offset, Timing, Window};
use crate::strategy::SizeClass;

/// Key of the maintenance run in the catalog's `fired` tree.
const MAINTENANCE_KEY: &str = "\0maintenance";
/// First wait before a failed scheduled run is retried; doubles each time.
pub const FIRST_BACKOFF: u64 = 300;

/// One domain with the settings every policy gave it.
pub struct DomainPlan {
    pub domain: DomainRecord,
    pub hostname: String,
    pub effective: Effective,
    /// (kind, cron) of each run; empty when the automatic plan is not made yet.
    pub runs: Vec<(String, String)>,
}

impl DomainPlan {
    pub fn key(&self, kind: &str) -> String {
        format!("{}\0{}\0{kind}", self.domain.agent_id, self.domain.name)
    }

    /// How the run of `kind` on `cron` is timed; an invalid setting (a
    /// policy checked at apply time never has one) is an error in words.
    pub fn timing(&self, kind: &str, cron: &str) -> Result<Timing, String> {
        let e = &self.effective;
        let tz = parse_tz(&e.timezone.value)?;
        let splay = humantime::parse_duration(&e.splay.value)
            .map_err(|err| format!("splay {:?}: {err}", e.splay.value))?;
        Ok(Timing {
            cron: parse_cron(cron, tz)?,
            splay_offset: splay_offset(&self.key(kind), splay.as_secs()),
            window: e.window.value.as_deref().map(Window::parse).transpose()?,
        })
    }
}

/// Every domain of every agent still enrolled, with its effective settings.
pub fn domain_plans(f: &Fleet) -> anyhow::Result<Vec<DomainPlan>> {
    domain_plans_under(f, &f.catalog.policies()?)
}

/// [`domain_plans`] as they would be under `policies`.
pub fn domain_plans_under(
    f: &Fleet,
    policies: &[crate::policy::Policy],
) -> anyhow::Result<Vec<DomainPlan>> {
    let agents: HashMap<String, _> = f
        .catalog
        .agents()?
        .into_iter()
        .filter(|a| !a.revoked)
        .map(|a| (a.id.clone(), a))
        .collect();
    let mut out = Vec::new();
    for d in f.catalog.domains()? {
        let Some(agent) = agents.get(&d.agent_id) else {
            continue;
        };
        let e = effective(
            policies,
            &Subject {
                agent_id: &agent.id,
                hostname: &agent.hostname,
                labels: &agent.labels,
                domain: &d.name,
                site_type: &d.site_type,
                size_class: SizeClass::of(d.size_bytes).as_str(),
            },
        );
        let runs = match &e.schedule.value {
            Some(runs) => runs.iter().map(|(k, c)| (k.clone(), c.clone())).collect(),
            None => f
                .catalog
                .plan(&d.agent_id, &d.name)?
                .map(|p| p.runs.into_iter().map(|r| (r.kind, r.cron)).collect())
                .unwrap_or_default(),
        };
        out.push(DomainPlan {
            hostname: agent.hostname.clone(),
            domain: d,
            effective: e,
            runs,
        });
    }
    Ok(out)
}

/// One domain's setting that a policy change moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub agent_id: String,
    pub domain: String,
    pub setting: String,
    pub from: String,
    pub to: String,
}

/// What replacing the fleet's policies with `next` changes, per domain.
pub fn policy_effects(
    f: &Fleet,
    next: &[crate::policy::Policy],
) -> anyhow::Result<Vec<SettingChange>> {
    let before = domain_plans(f)?;
    let after = domain_plans_under(f, next)?;
    let mut out = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        for (setting, from, to) in crate::policy::differences(&b.effective, &a.effective) {
            out.push(SettingChange {
                agent_id: b.domain.agent_id.clone(),
                domain: b.domain.name.clone(),
                setting,
                from,
                to,
            });
        }
    }
    Ok(out)
}

/// A run the scheduler will start.
#[derive(Debug, Clone)]
pub struct Upcoming {
    pub agent_id: String,
    pub domain: String,
    pub kind: String,
    pub cron: String,
    pub timezone: String,
    pub occurrence: i64,
    pub starts_at: i64,
    pub source: String,
}

/// Runs starting between `now` and `now + horizon`, soonest first.
pub fn upcoming(f: &Fleet, now: i64, horizon: i64) -> anyhow::Result<Vec<Upcoming>> {
    let mut out = Vec::new();
    for plan in domain_plans(f)? {
        for (kind, cron) in &plan.runs {
            let Ok(t) = plan.timing(kind, cron) else {
                continue;
            };
            let last = f.catalog.fired(&plan.key(kind))?.unwrap_or(now);
            for (occ, start) in t.upcoming(last, now, now + horizon, 1000) {
                out.push(Upcoming {
                    agent_id: plan.domain.agent_id.clone(),
                    domain: plan.domain.name.clone(),
                    kind: kind.clone(),
                    cron: cron.clone(),
                    timezone: plan.effective.timezone.value.clone(),
                    occurrence: occ,
                    starts_at: start,
                    source: plan.effective.schedule.source.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.starts_at.cmp(&b.starts_at).then(a.domain.cmp(&b.domain)));
    Ok(out)
}

/// Stored bytes referenced only by `forget` and by no snapshot in `keep`
/// (snapshot ids): what gc frees once they are forgotten.
pub fn bytes_only_in(f: &Fleet, forget: &[String], keep: &[String]) -> anyhow::Result<u64> {
    let trees = |ids: &[String]| -> Vec<cairn_repo::id::Id> {
        ids.iter()
            .filter_map(|s| s.parse().ok())
            .filter_map(|id| f.load_snapshot(&id).ok().map(|(_, s)| s.tree))
            .collect()
    };
    let gone = f.repo.reachable(&trees(forget))?;
    let kept = f.repo.reachable(&trees(keep))?;
    let idx = f.repo.index();
    Ok(gone
        .difference(&kept)
        .filter_map(|id| idx.get(id).map(|l| l.length as u64))
        .sum())
}

fn strength(kind: &str) -> u8 {
    match kind {
        "full" => 2,
        "differential" => 1,
        _ => 0,
    }
}

/// Queues every run that is due at `now`. A domain's first sighting only
/// records `now`: runs start from the next occurrence, never backfilled.
/// When several kinds are due at once the strongest runs (full over
/// differential over incremental) and the others count as done. A domain
/// with a backup still queued or running gets no second one: the due
/// occurrence is recorded as skipped.
pub fn queue_due(f: &Fleet, now: i64) -> anyhow::Result<Vec<JobRecord>> {
    let open = f.catalog.open_jobs()?;
    let busy: HashSet<(String, String)> = open
        .iter()
        .filter(|j| j.kind == "backup")
        .map(|j| (j.agent_id.clone(), j.domain.clone()))
        .collect();
    let mut queued = Vec::new();
    for plan in domain_plans(f)? {
        let mut due: Vec<(String, i64, u32)> = Vec::new();
        let mut fired = Vec::new();
        for (kind, cron) in &plan.runs {
            let key = plan.key(kind);
            let timing = match plan.timing(kind, cron) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(domain = %plan.domain.name, agent = %plan.domain.agent_id, error = %e, "cannot schedule");
                    continue;
                }
            };
            match f.catalog.fired(&key)? {
                None => f.catalog.set_fired(&key, now)?,
                Some(last) => {
                    if let Some((occ, n)) = timing.due(last, now) {
                        due.push((kind.clone(), occ, n));
                        fired.push((key, occ));
                    }
                }
            }
        }
        let Some((kind, occ, missed)) = due
            .iter()
            .max_by_key(|(k, occ, _)| (strength(k), *occ))
            .cloned()
        else {
            continue;
        };
        let d = &plan.domain;
        if busy.contains(&(d.agent_id.clone(), d.name.clone())) {
            for (k, t) in &fired {
                f.catalog.set_fired(k, *t)?;
            }
            tracing::warn!(domain = %d.name, agent = %d.agent_id, kind = %kind, "scheduled run skipped: the previous one is still queued or running");
            continue;
        }
        if missed > 1 {
            tracing::warn!(domain = %d.name, agent = %d.agent_id, kind = %kind, missed, "runs were missed (controller down?); one catch-up run");
        }
        let mut job = f.catalog.new_job(
            "backup",
            &d.name,
            &d.agent_id,
            JobSpec {
                backup_kind: kind,
                trigger: "schedule".into(),
                scheduled_for: occ,
                retries_left: plan.effective.retries.value,
                backoff_seconds: FIRST_BACKOFF,
                excludes: plan.effective.excludes.value.clone(),
                ..Default::default()
            },
            now,
        )?;
        job.priority = plan.effective.priority.value;
        let mut run = vec![job.clone()];
        // The site's database joins the run: "the site at time T" is one thing.
        if plan.effective.database.value && !d.databases.is_empty() {
            let mut db = f.catalog.new_job(
                "backup",
                &d.name,
                &d.agent_id,
                JobSpec {
                    backup_kind: "full".into(),
                    content: "database".into(),
                    cms_profile: plan.effective.cms_profile.value.clone().unwrap_or_default(),
                    run_id: job.id.clone(),
                    excludes: Vec::new(),
                    ..job.spec.clone()
                },
                now,
            )?;
            db.priority = job.priority;
            run[0].spec.run_id = job.id.clone();
            run.push(db);
        }
        f.catalog.queue(&run, &fired)?;
        tracing::info!(job = %job.id, domain = %d.name, agent = %d.agent_id, kind = %job.spec.backup_kind, jobs = run.len(), "scheduled run queued");
        queued.extend(run);
    }
    f.catalog.flush()?;
    Ok(queued)
}

/// Queues a test restore of each domain's newest file snapshot and database
/// dump when its `verify_every` has passed since the last one (VER-3): the
/// agent restores the files into a scratch directory and checks every byte
/// against the snapshot, and the dump into a scratch database on the site's
/// server, checking every table's row count; then removes both. A failed
/// check is a failed job; the duration is the domain's measured RTO. The first
/// sighting of a domain's cadence starts it; a domain with no dump yet, or
/// outside its window, waits.
pub fn queue_verifications(f: &Fleet, now: i64) -> anyhow::Result<Vec<JobRecord>> {
    let open: HashSet<(String, String)> = f
        .catalog
        .open_jobs()?
        .into_iter()
        .filter(|j| j.spec.trigger == "verify")
        .map(|j| (j.agent_id, j.domain))
        .collect();
    let mut queued = Vec::new();
    for plan in domain_plans(f)? {
        let Some(every) = &plan.effective.verify_every.value else {
            continue;
        };
        let d = &plan.domain;
        let every = match crate::retention::parse_days(every) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(domain = %d.name, agent = %d.agent_id, error = %e, "cannot schedule verification");
                continue;
            }
        };
        let key = format!("{}\0{}\0verify", d.agent_id, d.name);
        let Some(last) = f.catalog.fired(&key)? else {
            f.catalog.set_fired(&key, now)?;
            continue;
        };
        if now - last < every || open.contains(&(d.agent_id.clone(), d.name.clone())) {
            continue;
        }
        if let (Some(w), Ok(tz)) = (
            plan.effective
                .window
                .value
                .as_deref()
                .map(Window::parse)
                .transpose()
                .ok()
                .flatten(),
            parse_tz(&plan.effective.timezone.value),
        ) {
            if w.next_open(now, tz) > now {
                continue;
            }
        }
        // The newest snapshot of each content: files first, then the dump.
        let newest: Vec<(String, String)> = f.catalog.with_summaries(|s| {
            let Some(sum) = s.get(&d.agent_id, &d.name) else {
                return Vec::new();
            };
            ["files", "database"]
                .into_iter()
                .filter_map(|c| Some((c.to_string(), sum.newest.get(c)?.first()?.id.clone())))
                .collect()
        });
        if newest.is_empty() {
            continue;
        }
        let mut run = Vec::new();
        for (content, snapshot_id) in newest {
            run.push(f.catalog.new_job(
                "restore",
                &d.name,
                &d.agent_id,
                JobSpec {
                    snapshot_id,
                    content: if content == "database" {
                        content
                    } else {
                        String::new()
                    },
                    test: true,
                    trigger: "verify".into(),
                    ..Default::default()
                },
                now,
            )?);
        }
        if run.len() > 1 {
            let first = run[0].id.clone();
            for j in &mut run {
                j.spec.run_id = first.clone();
            }
        }
        f.catalog.queue(&run, &[(key, now)])?;
        tracing::info!(job = %run[0].id, domain = %d.name, agent = %d.agent_id, jobs = run.len(), "verification queued");
        queued.extend(run);
    }
    Ok(queued)
}

/// Shipments of the binary log kept per agent: each holds the whole spool,
/// so the newest few are all a point-in-time restore needs.
pub const BINLOG_SHIPMENTS_KEPT: usize = 3;

/// Queues a binary log shipment for each connected agent that streams
/// one, every `binlog_ship_every` (one at a time per agent). A shipment is
/// a `binlog` backup of the agent's spool: closed log files are not read
/// again, the growing one deduplicates against its last shipment.
pub fn queue_shipments(f: &Fleet, now: i64) -> anyhow::Result<usize> {
    let every = f.cfg.scheduler.binlog_ship_every()?;
    let streaming: Vec<String> = f
        .log_streams_in("streaming")
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    if streaming.is_empty() {
        return Ok(0);
    }
    let open: HashSet<String> = f
        .catalog
        .open_jobs()?
        .into_iter()
        .filter(|j| j.spec.content == "binlog")
        .map(|j| j.agent_id)
        .collect();
    let mut queued = 0;
    for agent in streaming {
        if open.contains(&agent) || !f.is_online(&agent) {
            continue;
        }
        let key = format!("{agent}\0binlog");
        if f.catalog
            .fired(&key)?
            .is_some_and(|last| now - last < every)
        {
            continue;
        }
        let mut job = f.catalog.new_job(
            "backup",
            "",
            &agent,
            JobSpec {
                backup_kind: "incremental".into(),
                content: "binlog".into(),
                trigger: "binlog".into(),
                ..Default::default()
            },
            now,
        )?;
        // Small and the recovery point of every database on the server:
        // ahead of site backups when slots are short.
        job.priority = 100;
        f.catalog.queue(&[job], &[(key, now)])?;
        queued += 1;
    }
    Ok(queued)
}

/// After a shipment succeeded: the agent's older shipments beyond the
/// newest few are forgotten (unless held or being restored from), and the
/// previous successful shipment's job record is dropped, so a shipment
/// every few seconds leaves neither snapshots nor jobs piling up.
pub fn after_shipment(f: &Fleet, job: &JobRecord) -> anyhow::Result<()> {
    let agent = &job.agent_id;
    let in_use: HashSet<String> = f
        .catalog
        .open_jobs()?
        .into_iter()
        .flat_map(|j| [j.spec.snapshot_id, j.spec.log_snapshot_id])
        .filter(|s| !s.is_empty())
        .collect();
    let holds = f.catalog.holds()?;
    let mut mine: Vec<SnapshotRecord> = f
        .catalog
        .snapshots(Some(""))?
        .into_iter()
        .filter(|s| s.content == "binlog" && s.agent_id == *agent)
        .collect();
    mine.sort_by_key(|s| std::cmp::Reverse(s.time));
    let old: Vec<SnapshotRecord> = mine
        .into_iter()
        .skip(BINLOG_SHIPMENTS_KEPT)
        .filter(|s| !in_use.contains(&s.id) && !holds.iter().any(|h| h.covers(s)))
        .collect();
    let ids: Vec<cairn_repo::id::Id> = old.iter().filter_map(|s| s.id.parse().ok()).collect();
    if !ids.is_empty() {
        f.store.forget(&ids)?;
        for s in &old {
            f.catalog.remove_snapshot(s)?;
        }
    }
    let key = format!("{agent}\0binlog-job");
    if let Some(prev) = f.catalog.fired(&key)? {
        let prev = format!("j{prev:08}");
        if prev != job.id
            && f.catalog
                .job(&prev)
                .is_ok_and(|p| p.state == JobState::Succeeded)
        {
            f.catalog.remove_job(&prev)?;
        }
    }
    if let Some(seq) = job.id.strip_prefix('j').and_then(|n| n.parse::<i64>().ok()) {
        f.catalog.set_fired(&key, seq)?;
    }
    Ok(())
}

/// Seconds between two scheduled runs of each (agent, domain): the
/// shortest of its kinds at `now`.
pub fn intervals(f: &Fleet, now: i64) -> anyhow::Result<Intervals> {
    Ok(intervals_and_tuning(f, now)?.0)
}

type Intervals = HashMap<(String, String), i64>;
type Tuning = HashMap<(String, String), crate::policy::AlertTuning>;

/// [`intervals`], and the alert thresholds policies set per domain.
fn intervals_and_tuning(f: &Fleet, now: i64) -> anyhow::Result<(Intervals, Tuning)> {
    let mut intervals = HashMap::new();
    let mut tuning = HashMap::new();
    for plan in domain_plans(f)? {
        let key = (plan.domain.agent_id.clone(), plan.domain.name.clone());
        let shortest = plan
            .runs
            .iter()
            .filter_map(|(kind, cron)| {
                let t = plan.timing(kind, cron).ok()?;
                let prev = t.cron.last_at_or_before(now)?;
                Some(t.cron.next_after(prev)? - prev)
            })
            .min();
        if let Some(s) = shortest {
            intervals.insert(key.clone(), s);
        }
        if let Some(t) = plan.effective.alerts.value {
            tuning.insert(key, t);
        }
    }
    Ok((intervals, tuning))
}

/// Evaluates the alert rules now and stores what changed (new, current,
/// resolved alerts).
pub fn refresh_alerts(f: &Fleet, now: i64) -> anyhow::Result<()> {
    let agents = f.catalog.agents()?;
    let online: HashSet<String> = f.sessions.lock().unwrap().keys().cloned().collect();
    let open = f.catalog.open_jobs()?;
    let (intervals, tuning) = intervals_and_tuning(f, now)?;
    let limits = f.cfg.alerts.limits()?;
    let certificates = f.certificates()?;
    let storage = f.storage_use()?;
    let log_streams_down = f.log_streams_in("unavailable");
    let findings = f.catalog.with_summaries(|summaries| {
        crate::alerts::evaluate(&crate::alerts::Inputs {
            now,
            agents: &agents,
            online: &online,
            summaries,
            open: &open,
            tuning: &tuning,
            intervals: &intervals,
            certificates: &certificates,
            storage,
            limits: &limits,
            log_streams_down: &log_streams_down,
        })
    });
    let current = f.catalog.alerts()?;
    let mut ids = Vec::new();
    let changed = crate::alerts::reconcile(&current, &findings, now, || {
        let id = f
            .catalog
            .next_id("al")
            .unwrap_or_else(|_| format!("al-{now}"));
        ids.push(id.clone());
        id
    });
    for a in changed.iter().filter(|a| ids.contains(&a.id)) {
        tracing::warn!(alert = %a.id, rule = %a.rule, agent = %a.agent_id, domain = %a.domain, message = %a.message, "alert firing");
    }
    for a in changed
        .iter()
        .filter(|a| a.state == crate::alerts::AlertState::Resolved)
    {
        tracing::info!(alert = %a.id, rule = %a.rule, agent = %a.agent_id, domain = %a.domain, "alert resolved");
    }
    let events = crate::notify::Event::of_changes(&current, &changed, now);
    let outbox = f.channels.route(&events);
    f.catalog.put_alerts(&changed, &outbox)?;
    if !outbox.is_empty() {
        f.notify_wake.notify_one();
    }
    Ok(())
}

/// Copies new audit entries into the repository (SPEC SEC-4), so the
/// record survives the controller's disk.
fn mirror_audit(f: &Fleet) -> anyhow::Result<()> {
    let done = f.catalog.audit_mirrored()?;
    if f.audit.head().seq > done {
        let now_there = f.audit.mirror(&f.repo, done)?;
        f.catalog.set_audit_mirrored(now_there)?;
    }
    Ok(())
}

/// Hands queued jobs to their agents, highest priority and oldest first,
/// within `agent_jobs` per agent and `fleet_jobs` in all. A scheduled run
/// whose agent has been away longer than `offline_give_up` fails (its
/// agent's absence is the error); others wait for the agent to return.
pub async fn pump(f: &Arc<Fleet>, now: i64) -> anyhow::Result<()> {
    let cfg = &f.cfg.scheduler;
    let give_up = cfg.offline_give_up()?;
    let open = f.catalog.open_jobs()?;
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    let mut running = 0usize;
    for j in open.iter().filter(|j| j.state == JobState::Running) {
        *per_agent.entry(j.agent_id.clone()).or_default() += 1;
        running += 1;
    }
    let mut queued: Vec<JobRecord> = open
        .into_iter()
        .filter(|j| j.state == JobState::Queued && j.not_before.is_none_or(|t| t <= now))
        .collect();
    queued.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(
                a.not_before
                    .unwrap_or(a.created_at)
                    .cmp(&b.not_before.unwrap_or(b.created_at)),
            )
            .then(a.id.cmp(&b.id))
    });
    for j in queued {
        if !j.spec.after.is_empty() && !prerequisites_met(f, &j) {
            continue;
        }
        if !f.is_online(&j.agent_id) {
            let waiting_since = j.not_before.unwrap_or(j.created_at);
            if j.spec.trigger == "schedule" && now - waiting_since >= give_up {
                let host = f.hostname_of(&j.agent_id);
                let msg = format!(
                    "agent {host} was offline for {}; the run did not happen",
                    humantime::format_duration(Duration::from_secs(
                        (now - waiting_since).max(0) as u64
                    ))
                );
                f.give_up(&j.id, msg);
            } else if !j.step.starts_with("waiting") {
                let _ = f
                    .catalog
                    .job_progress(&j.id, "waiting for the agent (offline)", 0, 0, 0);
            }
            continue;
        }
        let mine = per_agent.entry(j.agent_id.clone()).or_default();
        if *mine >= cfg.agent_jobs || running >= cfg.fleet_jobs {
            continue;
        }
        *mine += 1;
        running += 1;
        f.dispatch(j).await;
    }
    Ok(())
}

/// Whether the jobs `j` waits for have all succeeded. One that failed or
/// was cancelled fails `j` too: an in-place restore never runs without the
/// safety backup of what it replaces.
fn prerequisites_met(f: &Arc<Fleet>, j: &JobRecord) -> bool {
    for id in &j.spec.after {
        let state = f.catalog.job(id).map(|p| p.state);
        match state {
            Ok(JobState::Succeeded) => {}
            Ok(JobState::Queued | JobState::Running) => {
                if j.step.is_empty() {
                    let _ = f.catalog.job_progress(
                        &j.id,
                        &format!("waiting for the safety backup {id}"),
                        0,
                        0,
                        0,
                    );
                }
                return false;
            }
            Ok(s) => {
                f.give_up(
                    &j.id,
                    format!(
                        "the safety backup {id} ended {}; nothing was restored",
                        format!("{s:?}").to_lowercase()
                    ),
                );
                return false;
            }
            Err(_) => {
                f.give_up(&j.id, format!("job {id} it waits for is gone"));
                return false;
            }
        }
    }
    true
}

/// What retention would forget now, per domain, with the rule that decided.
#[derive(Debug, Clone)]
pub struct Forgettable {
    pub snapshot: SnapshotRecord,
    pub rule: String,
}

/// Applies each domain's effective retention to its snapshots (grouped by
/// agent, content and, where the policy has per-kind rules, kind). Held
/// snapshots and snapshots a running job stands on are kept.
pub fn retention_plan(f: &Fleet, only_domain: Option<&str>) -> anyhow::Result<Vec<Forgettable>> {
    let holds = f.catalog.holds()?;
    let plans = domain_plans(f)?;
    let rules: HashMap<(String, String), &DomainPlan> = plans
        .iter()
        .map(|p| ((p.domain.agent_id.clone(), p.domain.name.clone()), p))
        .collect();
    let in_use: HashSet<String> = f
        .catalog
        .open_jobs()?
        .into_iter()
        .filter(|j| j.state == JobState::Running)
        .flat_map(|j| {
            [
                j.spec.snapshot_id,
                j.spec.log_snapshot_id,
                j.snapshot_id.unwrap_or_default(),
            ]
        })
        .filter(|s| !s.is_empty())
        .collect();
    let mut shipments: BTreeMap<String, Vec<SnapshotRecord>> = BTreeMap::new();
    let mut groups: BTreeMap<(String, String, String), Vec<SnapshotRecord>> = BTreeMap::new();
    let mut rule_of: HashMap<(String, String, String), (crate::retention::Keep, String, String)> =
        HashMap::new();
    for s in f.catalog.snapshots(only_domain)? {
        if s.content == "binlog" {
            shipments.entry(s.agent_id.clone()).or_default().push(s);
            continue;
        }
        // A domain no agent reports any more keeps everything: retention
        // needs its policy, and a vanished site's last copies matter most.
        let Some(plan) = rules.get(&(s.agent_id.clone(), s.domain.clone())) else {
            continue;
        };
        let Some(ret) = &plan.effective.retention.value else {
            continue;
        };
        let (keep, group) = ret.rule_for(&s.content, &s.kind);
        let key = (s.agent_id.clone(), s.domain.clone(), group.clone());
        rule_of.entry(key.clone()).or_insert_with(|| {
            (
                keep.clone(),
                format!(
                    "{} ({group}: {})",
                    plan.effective.retention.source,
                    keep.describe()
                ),
                plan.effective.timezone.value.clone(),
            )
        });
        groups.entry(key).or_default().push(s);
    }
    let mut out = Vec::new();
    for (_, mut snaps) in shipments {
        snaps.sort_by_key(|s| std::cmp::Reverse(s.time));
        for s in snaps.into_iter().skip(BINLOG_SHIPMENTS_KEPT) {
            if in_use.contains(&s.id) || holds.iter().any(|h| h.covers(&s)) {
                continue;
            }
            out.push(Forgettable {
                snapshot: s,
                rule: format!(
                    "binary log: the newest {BINLOG_SHIPMENTS_KEPT} shipments hold all of it"
                ),
            });
        }
    }
    for (key, snaps) in groups {
        let (keep, why, tz) = &rule_of[&key];
        let tz = parse_tz(tz).map_err(anyhow::Error::msg)?;
        let cands: Vec<Candidate> = snaps
            .iter()
            .map(|s| Candidate {
                id: s.id.clone(),
                time: s.time,
                held: in_use.contains(&s.id) || holds.iter().any(|h| h.covers(s)),
            })
            .collect();
        let (_, gone) = decide(&cands, keep, tz).map_err(anyhow::Error::msg)?;
        let by_id: HashMap<&str, &SnapshotRecord> =
            snaps.iter().map(|s| (s.id.as_str(), s)).collect();
        for g in gone {
            out.push(Forgettable {
                snapshot: by_id[g.id.as_str()].clone(),
                rule: why.clone(),
            });
        }
    }
    Ok(out)
}

/// Forgets what retention names, then collects garbage. Runs beside
/// backups: gc keeps what open jobs stand on and packs younger than its grace.
pub fn maintain(f: &Fleet) -> anyhow::Result<(usize, crate::store::GcReport)> {
    let gone = retention_plan(f, None)?;
    let ids: Vec<cairn_repo::id::Id> = gone
        .iter()
        .filter_map(|g| g.snapshot.id.parse().ok())
        .collect();
    if !ids.is_empty() {
        f.store.forget(&ids)?;
        for g in &gone {
            f.catalog.remove_snapshot(&g.snapshot)?;
            tracing::info!(snapshot = %g.snapshot.id, domain = %g.snapshot.domain, agent = %g.snapshot.agent_id, rule = %g.rule, "snapshot forgotten by retention");
        }
        f.catalog.flush()?;
    }
    let report = f.store.gc(&crate::store::GcOptions {
        dry_run: false,
        grace: f.cfg.scheduler.gc_grace()?,
    })?;
    let m = &f.metrics;
    m.retention_forgotten
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    m.gc_packs_deleted
        .fetch_add(report.packs_deleted, Ordering::Relaxed);
    m.gc_bytes_freed
        .fetch_add(report.bytes_freed, Ordering::Relaxed);
    Ok((ids.len(), report))
}

/// The scheduler's loop; ticks every second (a fifth of one on a
/// simulated clock, so stepped time is acted on promptly).
pub async fn run(f: Arc<Fleet>) {
    let every = if crate::clock::simulated() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let timeout = f
        .cfg
        .job_timeout()
        .unwrap_or(Duration::from_secs(12 * 3600));
    let maintaining = Arc::new(AtomicBool::new(false));
    // Alerts read the jobs' history: every 15 s is prompt enough (every
    // tick on a simulated clock, which a test steps).
    let alert_every = if crate::clock::simulated() {
        Duration::ZERO
    } else {
        Duration::from_secs(15)
    };
    let mut alerts_at: Option<std::time::Instant> = None;
    // New audit entries reach the repository as promptly (at most one
    // object per 15 s, however many entries: a flood of refusals stays cheap).
    let mirror_every = alert_every;
    let mut mirrored_at: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::clock::now();
        let n = f.expire_jobs(timeout, now).await;
        if n > 0 {
            tracing::warn!(jobs = n, "failed jobs that outlived job_timeout");
        }
        let g = f.clone();
        if f.cfg.scheduler.run_schedules {
            let due = move || {
                queue_due(&g, now)?;
                queue_verifications(&g, now)?;
                queue_shipments(&g, now)
            };
            match tokio::task::spawn_blocking(due).await {
                Ok(Err(e)) => tracing::error!(error = %e, "scheduling"),
                Err(e) => tracing::error!(error = %e, "scheduling"),
                Ok(Ok(_)) => {}
            }
        }
        if alerts_at.is_none_or(|t| t.elapsed() >= alert_every) {
            alerts_at = Some(std::time::Instant::now());
            let g = f.clone();
            match tokio::task::spawn_blocking(move || refresh_alerts(&g, now)).await {
                Ok(Err(e)) => tracing::error!(error = %e, "evaluating alerts"),
                Err(e) => tracing::error!(error = %e, "evaluating alerts"),
                Ok(Ok(())) => {}
            }
        }
        if mirrored_at.is_none_or(|t| t.elapsed() >= mirror_every) {
            mirrored_at = Some(std::time::Instant::now());
            let g = f.clone();
            match tokio::task::spawn_blocking(move || mirror_audit(&g)).await {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "copying the audit log into the repository")
                }
                Err(e) => tracing::error!(error = %e, "copying the audit log into the repository"),
                Ok(Ok(())) => {}
            }
        }
        f.pump().await;
        if f.cfg.scheduler.run_schedules {
            maintenance_if_due(&f, now, &maintaining);
        }
        f.metrics.scheduler_tick.store(now, Ordering::Release);
        f.metrics.scheduler_ticks.fetch_add(1, Ordering::Release);
    }
}

fn maintenance_if_due(f: &Arc<Fleet>, now: i64, busy: &Arc<AtomicBool>) {
    if busy.load(Ordering::Acquire) {
        return;
    }
    let Ok(cron) = f.cfg.scheduler.maintenance_cron() else {
        return;
    };
    let timing = Timing {
        cron,
        splay_offset: 0,
        window: None,
    };
    let last = match f.catalog.fired(MAINTENANCE_KEY) {
        Ok(Some(t)) => t,
        Ok(None) => {
            let _ = f.catalog.set_fired(MAINTENANCE_KEY, now);
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the maintenance schedule");
            return;
        }
    };
    let Some((occ, _)) = timing.due(last, now) else {
        return;
    };
    busy.store(true, Ordering::Release);
    let (f, busy) = (f.clone(), busy.clone());
    f.metrics.maintenance_running.store(true, Ordering::Release);
    tokio::task::spawn_blocking(move || {
        match maintain(&f) {
            Ok((forgotten, gc)) => {
                tracing::info!(
                    forgotten,
                    packs_deleted = gc.packs_deleted,
                    bytes_freed = gc.bytes_freed,
                    "maintenance done"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "maintenance (retention and gc) failed; it runs again in the next window")
            }
        }
        let _ = f.catalog.set_fired(MAINTENANCE_KEY, occ);
        let _ = f.catalog.flush();
        f.metrics.maintenance_runs.fetch_add(1, Ordering::Relaxed);
        f.metrics
            .maintenance_running
            .store(false, Ordering::Release);
        busy.store(false, Ordering::Release);
    });
}
