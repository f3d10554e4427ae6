//! The fleet commands: cairnctl as an admin client of the controller
//! (`cairn.admin.v1.AdminService`, mutual TLS with the admin certificate).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_proto::admin::v1 as pb;
use cairn_proto::admin::v1::admin_service_client::AdminServiceClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::domains;
use crate::cli::{
    AgentsCommand, Command, Connection, DomainsCommand, JobsCommand, SnapshotsCommand, TokenCommand,
};
use crate::output;
use crate::Exit;

pub(super) type Client = AdminServiceClient<Channel>;

/// `cairnctl.toml`, as `cairn-controller init` writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlConfig {
    controller: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn config_path(conn: &Connection) -> Result<PathBuf> {
    if let Some(p) = &conn.config {
        return Ok(p.clone());
    }
    let home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("no --config, $CAIRN_CONFIG or $HOME")?;
    Ok(home.join("cairn/cairnctl.toml"))
}

/// The controller URL cairnctl dials.
pub(super) fn controller_url(conn: &Connection) -> Result<String> {
    if let Some(u) = &conn.controller {
        return Ok(u.clone());
    }
    let path = config_path(conn)?;
    let cfg: CtlConfig = toml::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| path.display().to_string())?;
    Ok(cfg.controller)
}

fn connect(conn: &Connection) -> Result<Client> {
    let path = config_path(conn)?;
    let usage = |e: anyhow::Error| Exit(crate::EXIT_USAGE, e);
    let text = std::fs::read_to_string(&path)
        .with_context(|| {
            format!(
                "{} (set CAIRN_CONFIG to the cairnctl.toml `cairn-controller init` wrote)",
                path.display()
            )
        })
        .map_err(usage)?;
    let cfg: CtlConfig = toml::from_str(&text)
        .with_context(|| path.display().to_string())
        .map_err(usage)?;
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| p.display().to_string());
    let identity = cairn_net::Identity {
        chain_pem: read(&cfg.cert)?,
        key_pem: read(&cfg.key)?,
    };
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(read(&cfg.ca)?), Some(&identity))?;
    let url = conn.controller.clone().unwrap_or(cfg.controller);
    Ok(AdminServiceClient::new(cairn_net::channel(&url, tls)?))
}

/// A refused or failed call, with an exit code that says which.
pub(super) fn status(s: tonic::Status) -> anyhow::Error {
    use tonic::Code::*;
    let code = match s.code() {
        InvalidArgument | NotFound | FailedPrecondition | AlreadyExists => crate::EXIT_USAGE,
        Unauthenticated | PermissionDenied => crate::EXIT_NOPERM,
        Unavailable => crate::EXIT_UNAVAILABLE,
        _ => crate::EXIT_FAILURE,
    };
    let msg = if s.code() == Unavailable {
        format!("controller unavailable: {}", s.message())
    } else {
        s.message().to_string()
    };
    Exit(code, anyhow::anyhow!(msg)).into()
}

/// `cairnctl version`: the controller's release and session protocols
/// (the client's is printed first, so it shows even when the controller
/// cannot be reached).
pub fn version(conn: &Connection, client: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let mut c = connect(conn)?;
    let v = rt
        .block_on(c.get_version(pb::GetVersionRequest {}))
        .map_err(status)?
        .into_inner();
    if conn.json {
        return output::json(&serde_json::json!({
            "client": { "version": client },
            "controller": {
                "version": v.version,
                "protocol": v.protocol,
                "min_protocol": v.min_protocol,
            },
        }));
    }
    println!(
        "controller {} (agent session protocols {}..={})",
        v.version, v.min_protocol, v.protocol
    );
    Ok(())
}

pub fn run(conn: &Connection, cmd: Command) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The channel's connection tasks need the runtime.
    let _guard = rt.enter();
    let mut c = connect(conn)?;
    rt.block_on(async {
        match cmd {
            Command::Agents(AgentsCommand::List) => agents(&mut c, conn.json).await,
            Command::Agents(AgentsCommand::Remove { agent }) => {
                c.remove_agent(pb::RemoveAgentRequest {
                    agent_id: agent.clone(),
                })
                .await
                .map_err(status)?;
                println!("removed agent {agent}: its certificate is refused from now on");
                Ok(())
            }
            Command::Runbook {
                domain,
                agent,
                format,
            } => super::runbook::runbook(&mut c, domain, agent, format == "md").await,
            Command::Domains(DomainsCommand::List { agent }) => {
                domains::list(&mut c, agent, conn.json).await
            }
            Command::Domains(DomainsCommand::Show { domain, agent }) => {
                domains::show(&mut c, domain, agent, conn.json).await
            }
            Command::Snapshots(SnapshotsCommand::List { domain }) => {
                snapshots(&mut c, domain, conn.json).await
            }
            Command::Token(TokenCommand::Create { ttl }) => token(&mut c, &ttl, conn.json).await,
            Command::Forget { snapshots } => {
                let r = c
                    .forget(pb::ForgetRequest {
                        snapshot_ids: snapshots,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                if conn.json {
                    return output::json(&r.forgotten);
                }
                for id in &r.forgotten {
                    println!("forgot snapshot {id}");
                }
                Ok(())
            }
            Command::Gc { dry_run, grace } => {
                let grace = super::gc::parse_duration(&grace)
                    .map_err(|e| Exit(crate::EXIT_USAGE, e))?;
                let r = c
                    .gc(pb::GcRequest {
                        dry_run,
                        grace_seconds: grace.as_secs(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                if conn.json {
                    return output::json(&serde_json::json!({
                        "dry_run": r.dry_run,
                        "blobs_live": r.blobs_live,
                        "packs_total": r.packs_total,
                        "packs_deleted": r.packs_deleted,
                        "packs_kept_young": r.packs_kept_young,
                        "bytes_freed": r.bytes_freed,
                        "segments_replaced": r.segments_replaced,
                    }));
                }
                let verb = if r.dry_run { "would" } else { "did" };
                println!(
                    "{} packs: {verb} delete {}, keep {} young; {verb} free about {}; {} live blobs",
                    r.packs_total,
                    r.packs_deleted,
                    r.packs_kept_young,
                    output::bytes(r.bytes_freed),
                    r.blobs_live
                );
                Ok(())
            }
            Command::Backup {
                domain,
                kind,
                agent,
                wait,
                files_only,
                db_only,
            } => {
                let content = match (files_only, db_only) {
                    (true, _) => "files",
                    (_, true) => "database",
                    _ => "",
                };
                let j = c
                    .start_backup(pb::StartBackupRequest {
                        domain,
                        kind,
                        agent_id: agent.unwrap_or_default(),
                        content: content.into(),
                        run_id: String::new(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                follow(&mut c, j, wait, conn.json).await
            }
            Command::Restore {
                snapshot,
                at,
                agent,
                target,
                paths,
                files_only,
                db_only,
                tables,
                into_database,
                test,
                in_place,
                dry_run,
                wait,
            } => {
                let (snapshot_id, domain, at) = match at {
                    None => (snapshot, String::new(), 0),
                    Some(t) => (
                        String::new(),
                        snapshot,
                        crate::output::moment(&t).map_err(|e| crate::usage(format!("--at {e}")))?,
                    ),
                };
                let j = c
                    .start_restore(pb::StartRestoreRequest {
                        snapshot_id,
                        domain,
                        at,
                        agent_id: agent.unwrap_or_default(),
                        target: target.unwrap_or_default(),
                        paths,
                        files_only,
                        db_only,
                        tables,
                        into_database: into_database.unwrap_or_default(),
                        test,
                        in_place,
                        dry_run,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                // A dry run's answer is its report: always wait for it.
                follow(&mut c, j, wait || dry_run, conn.json).await
            }
            Command::Rollback { job, wait } => {
                let j = c
                    .rollback(pb::RollbackRequest { job_id: job })
                    .await
                    .map_err(status)?
                    .into_inner();
                follow(&mut c, j, wait, conn.json).await
            }
            Command::Jobs(JobsCommand::List { domain, state }) => {
                jobs(&mut c, domain, state, conn.json).await
            }
            Command::Agents(AgentsCommand::Label { agent, labels }) => {
                super::policy::label(&mut c, agent, labels, conn.json).await
            }
            Command::Policy(p) => super::policy::policy(&mut c, p, conn.json).await,
            Command::Schedule { next } => super::policy::schedule(&mut c, &next, conn.json).await,
            Command::Hold(h) => super::policy::hold(&mut c, h, conn.json).await,
            Command::Retention(r) => super::policy::retention(&mut c, r, conn.json).await,
            Command::Alerts(a) => super::alerts::alerts(&mut c, a, conn.json).await,
            Command::Notify(n) => super::alerts::notify(&mut c, n, conn.json).await,
            Command::User(u) => super::users::users(&mut c, conn, u).await,
            Command::Audit(a) => super::users::audit(&mut c, a, conn.json).await,
            Command::Jobs(JobsCommand::Show { job }) => {
                let j = c
                    .get_job(pb::GetJobRequest { job_id: job })
                    .await
                    .map_err(status)?
                    .into_inner();
                print_job(&j, conn.json)
            }
            Command::Jobs(JobsCommand::Cancel { job }) => {
                let j = c
                    .cancel_job(pb::CancelJobRequest { job_id: job })
                    .await
                    .map_err(status)?
                    .into_inner();
                print_job(&j, conn.json)
            }
            Command::Jobs(JobsCommand::Watch { job }) => {
                let j = c
                    .get_job(pb::GetJobRequest { job_id: job })
                    .await
                    .map_err(status)?
                    .into_inner();
                follow(&mut c, j, true, conn.json).await
            }
            Command::Repo(_)
            | Command::Version
            | Command::Completions { .. }
            | Command::Man { .. } => unreachable!("handled by the caller"),
        }
    })
}

pub(super) fn time(t: i64) -> String {
    if t <= 0 {
        return "never".into();
    }
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct AgentJson {
    id: String,
    hostname: String,
    online: bool,
    last_seen: i64,
    version: String,
    domains: u32,
    labels: std::collections::BTreeMap<String, String>,
}

async fn agents(c: &mut Client, json: bool) -> Result<()> {
    let r = c
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(status)?
        .into_inner();
    if json {
        let v: Vec<AgentJson> = r
            .agents
            .into_iter()
            .map(|a| AgentJson {
                id: a.agent_id,
                hostname: a.hostname,
                online: a.online,
                last_seen: a.last_seen,
                version: a.version,
                domains: a.domains,
                labels: a.labels.into_iter().collect(),
            })
            .collect();
        return output::json(&v);
    }
    println!(
        "{:<24} {:<24} {:<8} {:>7}  {:<19}  version",
        "agent", "host", "state", "domains", "last seen"
    );
    for a in r.agents {
        println!(
            "{:<24} {:<24} {:<8} {:>7}  {:<19}  {}",
            a.agent_id,
            output::safe(&a.hostname),
            if a.online { "online" } else { "offline" },
            a.domains,
            time(a.last_seen),
            a.version
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct SnapshotJson {
    id: String,
    domain: String,
    agent: String,
    time: i64,
    kind: String,
    content: String,
    total_bytes: u64,
    stored_bytes: u64,
    /// The run it belongs to (a site's files and database at one time).
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
}

async fn snapshots(c: &mut Client, domain: Option<String>, json: bool) -> Result<()> {
    let r = c
        .list_snapshots(pb::ListSnapshotsRequest {
            domain: domain.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        let v: Vec<SnapshotJson> = r
            .snapshots
            .into_iter()
            .map(|s| SnapshotJson {
                id: s.snapshot_id,
                domain: s.domain,
                agent: s.agent_id,
                time: s.time,
                kind: s.kind,
                content: s.content,
                total_bytes: s.total_bytes,
                stored_bytes: s.stored_bytes,
                run: (!s.run_id.is_empty()).then_some(s.run_id),
            })
            .collect();
        return output::json(&v);
    }
    println!(
        "{:<10} {:<19}  {:<28} {:<16} {:<12} {:>10} {:>10}",
        "id", "time", "domain", "agent", "kind", "size", "stored"
    );
    for s in r.snapshots {
        println!(
            "{:<10} {:<19}  {:<28} {:<16} {:<12} {:>10} {:>10}",
            &s.snapshot_id[..8.min(s.snapshot_id.len())],
            time(s.time),
            output::safe(&s.domain),
            s.agent_id,
            s.kind,
            output::bytes(s.total_bytes),
            output::bytes(s.stored_bytes)
        );
    }
    Ok(())
}

/// `900`, `900s`, `15m`, `1h`, `2d` → seconds.
fn parse_ttl(s: &str) -> Result<u32> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u32 = num.parse().with_context(|| format!("bad --ttl {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!("bad --ttl {s:?}: use s, m, h or d"),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .with_context(|| format!("bad --ttl {s:?}"))
}

async fn token(c: &mut Client, ttl: &str, json: bool) -> Result<()> {
    let ttl_seconds = parse_ttl(ttl).map_err(|e| Exit(crate::EXIT_USAGE, e))?;
    let r = c
        .create_token(pb::CreateTokenRequest { ttl_seconds })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        #[derive(Serialize)]
        struct T {
            token: String,
            expires_at: i64,
            ca_sha256: String,
            join_command: String,
        }
        return output::json(&T {
            token: r.token,
            expires_at: r.expires_at,
            ca_sha256: r.ca_sha256,
            join_command: r.join_command,
        });
    }
    println!(
        "single-use token, valid until {} UTC. On the new server, run:\n",
        time(r.expires_at)
    );
    println!("  {}", r.join_command);
    Ok(())
}

fn state_name(s: i32) -> &'static str {
    match pb::JobState::try_from(s) {
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

#[derive(Serialize)]
struct JobJson {
    id: String,
    kind: String,
    domain: String,
    agent: String,
    state: &'static str,
    step: String,
    files: u64,
    bytes: u64,
    total_bytes: u64,
    bytes_per_second: u64,
    eta_seconds: u64,
    created_at: i64,
    finished_at: Option<i64>,
    snapshot: Option<String>,
    error: Option<String>,
    /// "schedule" for runs the controller queued itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_for: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<serde_json::Value>,
}

fn job_json(j: &pb::JobInfo) -> JobJson {
    JobJson {
        id: j.job_id.clone(),
        kind: j.kind.clone(),
        domain: j.domain.clone(),
        agent: j.agent_id.clone(),
        state: state_name(j.state),
        step: j.step.clone(),
        files: j.files,
        bytes: j.bytes,
        total_bytes: j.total_bytes,
        bytes_per_second: j.bytes_per_second,
        eta_seconds: j.eta_seconds,
        created_at: j.created_at,
        finished_at: (j.finished_at > 0).then_some(j.finished_at),
        snapshot: (!j.snapshot_id.is_empty()).then(|| j.snapshot_id.clone()),
        error: (!j.error.is_empty()).then(|| j.error.clone()),
        trigger: (!j.trigger.is_empty()).then(|| j.trigger.clone()),
        backup_kind: (!j.backup_kind.is_empty()).then(|| j.backup_kind.clone()),
        content: (!j.content.is_empty()).then(|| j.content.clone()),
        run: (!j.run_id.is_empty()).then(|| j.run_id.clone()),
        attempt: j.attempt,
        scheduled_for: (j.scheduled_for > 0).then_some(j.scheduled_for),
        not_before: (j.not_before > 0).then_some(j.not_before),
        after: j.after.clone(),
        report: serde_json::from_str(&j.report).ok(),
    }
}

/// The part of a dry run's report the text output lists.
#[derive(serde::Deserialize)]
struct Preview {
    paths: Vec<String>,
    #[serde(default)]
    more_paths: u64,
}

fn print_job(j: &pb::JobInfo, json: bool) -> Result<()> {
    if json {
        return output::json(&job_json(j));
    }
    println!(
        "job {} ({} of {} on {}): {}",
        j.job_id,
        j.kind,
        j.domain,
        j.agent_id,
        state_name(j.state)
    );
    if !j.snapshot_id.is_empty() {
        println!("snapshot {}", j.snapshot_id);
    }
    if j.state == pb::JobState::Succeeded as i32 && j.kind != "backup" && !j.step.is_empty() {
        println!("{}", output::safe(&j.step));
    }
    if let Ok(p) = serde_json::from_str::<Preview>(&j.report) {
        for path in &p.paths {
            println!("  {}", output::safe(path));
        }
        if p.more_paths > 0 {
            println!("  … and {} more", p.more_paths);
        }
    }
    if !j.after.is_empty() && j.state == pb::JobState::Queued as i32 {
        println!("waits for {}", j.after.join(", "));
    }
    if !j.error.is_empty() {
        println!("error: {}", output::safe(&j.error));
    }
    Ok(())
}

async fn jobs(
    c: &mut Client,
    domain: Option<String>,
    state: Option<String>,
    json: bool,
) -> Result<()> {
    let r = c
        .list_jobs(pb::ListJobsRequest {
            domain: domain.unwrap_or_default(),
            state: state.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        return output::json(&r.jobs.iter().map(job_json).collect::<Vec<_>>());
    }
    println!(
        "{:<10} {:<8} {:<28} {:<16} {:<10} {:<19}  snapshot / error",
        "job", "kind", "domain", "agent", "state", "created"
    );
    for j in r.jobs {
        let tail = if !j.error.is_empty() {
            output::safe(&j.error).into_owned()
        } else if j.state == pb::JobState::Queued as i32 && j.not_before > 0 {
            format!("retry {} at {}", j.attempt, time(j.not_before))
        } else if j.state == pb::JobState::Queued as i32 && !j.step.is_empty() {
            output::safe(&j.step).into_owned()
        } else {
            j.snapshot_id.get(..8).unwrap_or("").to_string()
        };
        println!(
            "{:<10} {:<8} {:<28} {:<16} {:<10} {:<19}  {}",
            j.job_id,
            j.kind,
            j.domain,
            j.agent_id,
            state_name(j.state),
            time(j.created_at),
            tail
        );
    }
    Ok(())
}

/// Prints a started job; with `wait`, follows it with a progress bar and
/// fails (exit 1) unless it succeeds.
/// Prints a started job, or with `wait` follows it to its end (exit 1 if it
/// did not succeed). A job that opened a run (a site's files and database)
/// stands for every job of the run.
async fn follow(c: &mut Client, j: pb::JobInfo, wait: bool, json: bool) -> Result<()> {
    let run = if j.run_id.is_empty() {
        vec![j]
    } else {
        let mut all: Vec<pb::JobInfo> = c
            .list_jobs(pb::ListJobsRequest {
                domain: j.domain.clone(),
                state: String::new(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .jobs
            .into_iter()
            .filter(|o| o.run_id == j.run_id)
            .collect();
        all.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        all
    };
    let mut ended = Vec::with_capacity(run.len());
    for job in run {
        if !wait {
            if !json {
                eprintln!(
                    "started job {} ({}); follow it with `cairnctl jobs watch {}`",
                    job.job_id,
                    state_name(job.state),
                    job.job_id
                );
            }
            ended.push(job);
        } else {
            ended.push(watch(c, job).await?);
        }
    }
    match ended.as_slice() {
        [one] => print_job(one, json)?,
        many if json => {
            let ok = many
                .iter()
                .all(|j| j.state == pb::JobState::Succeeded as i32);
            let open = many.iter().any(|j| {
                j.state == pb::JobState::Queued as i32 || j.state == pb::JobState::Running as i32
            });
            output::json(&serde_json::json!({
                "run": many[0].run_id,
                "state": if ok { "succeeded" } else if open { "running" } else { "failed" },
                "jobs": many.iter().map(job_json).collect::<Vec<_>>(),
            }))?;
        }
        many => {
            println!("run {} ({} jobs)", many[0].run_id, many.len());
            for j in many {
                print_job(j, false)?;
            }
        }
    }
    if let Some(bad) = ended
        .iter()
        .find(|j| wait && j.state != pb::JobState::Succeeded as i32)
    {
        return Err(Exit(
            crate::EXIT_FAILURE,
            anyhow::anyhow!("job {} {}", bad.job_id, state_name(bad.state)),
        )
        .into());
    }
    Ok(())
}

/// Follows one job with a progress bar until it ends.
async fn watch(c: &mut Client, j: pb::JobInfo) -> Result<pb::JobInfo> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    let mut stream = c
        .watch_job(pb::GetJobRequest {
            job_id: j.job_id.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut last = j;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
        match next {
            Err(_) => bar.tick(),
            Ok(Ok(Some(info))) => {
                bar.set_length(info.total_bytes.max(info.bytes));
                bar.set_position(info.bytes);
                bar.set_message(format!(
                    "{} {} {} {} files",
                    info.content,
                    state_name(info.state),
                    info.step,
                    info.files
                ));
                last = info;
            }
            Ok(Ok(None)) => break,
            Ok(Err(s)) => {
                bar.finish_and_clear();
                return Err(status(s));
            }
        }
    }
    bar.finish_and_clear();
    Ok(last)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttls_parse_like_durations() {
        assert_eq!(super::parse_ttl("15m").unwrap(), 900);
        assert_eq!(super::parse_ttl("900").unwrap(), 900);
        assert_eq!(super::parse_ttl("2h").unwrap(), 7200);
        assert!(super::parse_ttl("0").is_err());
        assert!(super::parse_ttl("5y").is_err());
        assert!(super::parse_ttl("").is_err());
    }
}
