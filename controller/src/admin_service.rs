//! `cairn.admin.v1.AdminService`: what cairnctl asks of the fleet. Every
//! call needs an admin certificate; an agent's certificate is refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_net::PeerInfo;
use cairn_proto::admin::v1 as pb;
use cairn_proto::admin::v1::admin_service_server::AdminService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::access::{Caller, Role, UserRecord};
use crate::alerts::{AlertRecord, AlertState};
use crate::catalog::{
    DomainRecord, HoldRecord, JobRecord, JobSpec, JobState, PlanRecord, SnapshotRecord,
};
use crate::fleet::{internal, now, Fleet};
use crate::policy::Policy;
use crate::store::GcOptions;
use crate::strategy::{Activity, SizeClass};
use cairn_repo::id::Id;

const DEFAULT_TOKEN_TTL: u32 = 15 * 60;
const MAX_TOKEN_TTL: u32 = 7 * 24 * 3600;

pub struct AdminApi(pub Arc<Fleet>);

impl AdminApi {
    /// Checks that the caller's certificate has the role `call` needs
    /// (see [`crate::access`]); refusals are written to the audit log.
    fn allow<T: std::fmt::Debug>(
        &self,
        req: &Request<T>,
        call: &'static str,
    ) -> Result<Caller, Status> {
        let info = req.extensions().get::<PeerInfo>();
        let addr = info
            .and_then(|p| p.addr)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let cert = info.and_then(|p| p.cert_sha256.as_deref());
        let known = cert.and_then(|c| self.0.users.read().unwrap().get(c).cloned());
        let need = crate::access::needed(call);
        let refuse = |who: &str, role: &str, why: String| {
            tracing::warn!(peer = %addr, who = %who, call, "refused admin call: {why}");
            self.write_audit(
                who,
                role,
                call,
                crate::audit::args(req.get_ref()),
                format!("refused: {why}"),
            );
        };
        match (known, cert) {
            (Some(c), _) if c.role >= need => Ok(c),
            (Some(c), _) => {
                let why = format!(
                    "{c} may not call {call}: it needs the {} role",
                    need.as_str()
                );
                refuse(&c.name, c.role.as_str(), why.clone());
                Err(Status::permission_denied(why))
            }
            (None, Some(c)) => {
                let why = "this certificate may not administer the fleet (agents and revoked users cannot list, start, restore or delete anything)".to_string();
                if self.0.audit.admit_stranger() {
                    refuse(
                        &format!("certificate {}", &c[..16.min(c.len())]),
                        "none",
                        why.clone(),
                    );
                } else {
                    tracing::warn!(peer = %addr, call, "refused admin call: {why} (not audited: over 60 a minute)");
                }
                Err(Status::permission_denied(why))
            }
            (None, None) => {
                if self.0.audit.admit_stranger() {
                    refuse("anonymous", "none", "no client certificate".into());
                } else {
                    tracing::warn!(peer = %addr, call, "refused admin call: no client certificate (not audited: over 60 a minute)");
                }
                Err(Status::unauthenticated(
                    "a client certificate is required (cairnctl user add)",
                ))
            }
        }
    }

    /// Writes a call that changed (or tried to change) something to the
    /// audit log.
    fn record<R>(&self, who: &Caller, call: &str, args: String, r: &Result<R, Status>) {
        let outcome = match r {
            Ok(_) => "ok".to_string(),
            Err(s) => format!("failed: {}", s.message()),
        };
        self.write_audit(&who.name, who.role.as_str(), call, args, outcome);
    }

    fn write_audit(&self, who: &str, role: &str, call: &str, args: String, outcome: String) {
        let f = &self.0;
        let r = f.audit.append(
            crate::audit::Record {
                time: now(),
                who,
                role,
                action: call,
                args,
                outcome,
            },
            |head| {
                f.catalog
                    .set_audit_head(head)
                    .map_err(std::io::Error::other)
            },
        );
        if let Err(e) = r {
            tracing::error!(error = %e, call, "writing the audit log");
        }
    }
}

impl AdminApi {
    /// Queues the jobs of one run together (one transaction); with more
    /// than one, each carries the first one's id as its run id. Answers
    /// with the first job.
    async fn queue_run(
        &self,
        kind: &str,
        domain: &str,
        agent: &str,
        specs: Vec<JobSpec>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let jobs = specs.into_iter().map(|s| (kind, s)).collect();
        self.queue_jobs(domain, agent, jobs).await
    }

    /// Queues jobs of one domain on one agent as one run (sharing the first
    /// one's id when there are several); answers with the first.
    async fn queue_jobs(
        &self,
        domain: &str,
        agent: &str,
        specs: Vec<(&str, JobSpec)>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let f = &self.0;
        let at = now();
        let mut jobs = specs
            .into_iter()
            .map(|(kind, spec)| f.catalog.new_job(kind, domain, agent, spec, at))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        if jobs.len() > 1 {
            let run = jobs[0].id.clone();
            for j in &mut jobs {
                j.spec.run_id = run.clone();
            }
        }
        let first = jobs
            .first()
            .map(|j| j.id.clone())
            .ok_or_else(|| internal("no job to queue"))?;
        f.catalog.queue(&jobs, &[]).map_err(internal)?;
        f.pump().await;
        let job = f.catalog.job(&first).map_err(internal)?;
        Ok(Response::new(job_info(&job)))
    }
}

/// The jobs a backup of `domain` runs, with the settings the fleet's
/// policies give it (as a scheduled run gets them): its files, its
/// database, and whether a whole-site run includes the database (the site
/// has one and the policy backs it up).
fn site_backup(
    f: &Fleet,
    domain: &crate::catalog::DomainRecord,
    kind: &str,
    run_id: &str,
) -> Result<(JobSpec, JobSpec, bool), Status> {
    let plans = crate::scheduler::domain_plans(f).map_err(internal)?;
    let effective = plans
        .iter()
        .find(|p| p.domain.agent_id == domain.agent_id && p.domain.name == domain.name)
        .map(|p| &p.effective);
    let cms_profile = effective
        .and_then(|e| e.cms_profile.value.clone())
        .unwrap_or_default();
    let files = JobSpec {
        backup_kind: kind.into(),
        run_id: run_id.into(),
        excludes: effective
            .map(|e| e.excludes.value.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let with_database = !domain.databases.is_empty() && effective.is_none_or(|e| e.database.value);
    let database = JobSpec {
        backup_kind: "full".into(),
        content: "database".into(),
        run_id: run_id.into(),
        cms_profile,
        ..Default::default()
    };
    Ok((files, database, with_database))
}

/// A repository location without any `user:password@` it may carry.
fn without_credentials(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => location.to_string(),
    }
}

pub fn state_of(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn job_info(j: &JobRecord) -> pb::JobInfo {
    let elapsed = j
        .started_at
        .map(|s| (j.finished_at.unwrap_or_else(now) - s).max(1) as u64)
        .unwrap_or(0);
    let speed = j.bytes.checked_div(elapsed).unwrap_or(0);
    let eta = if speed > 0 && j.total_bytes > j.bytes && !j.state.is_final() {
        (j.total_bytes - j.bytes) / speed
    } else {
        0
    };
    pb::JobInfo {
        job_id: j.id.clone(),
        kind: j.kind.clone(),
        domain: j.domain.clone(),
        agent_id: j.agent_id.clone(),
        state: state_of(j.state) as i32,
        step: j.step.clone(),
        files: j.files,
        bytes: j.bytes,
        total_bytes: j.total_bytes,
        bytes_per_second: speed,
        eta_seconds: eta,
        created_at: j.created_at,
        finished_at: j.finished_at.unwrap_or(0),
        snapshot_id: j.snapshot_id.clone().unwrap_or_default(),
        error: j.error.clone().unwrap_or_default(),
        trigger: j.spec.trigger.clone(),
        attempt: j.attempt,
        not_before: j.not_before.unwrap_or(0),
        scheduled_for: j.spec.scheduled_for,
        backup_kind: j.spec.backup_kind.clone(),
        content: if j.kind == "backup" && j.spec.content.is_empty() {
            "files".into()
        } else {
            j.spec.content.clone()
        },
        run_id: j.spec.run_id.clone(),
        report: j.report.clone(),
        after: j.spec.after.clone(),
        test: j.spec.test,
        started_at: j.started_at.unwrap_or(0),
    }
}

fn not_found(e: crate::catalog::CatalogError) -> Status {
    match e {
        crate::catalog::CatalogError::NotFound { .. } => Status::not_found(e.to_string()),
        e => internal(e),
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn add_user(
        &self,
        req: Request<pb::AddUserRequest>,
    ) -> Result<Response<pb::AddUserResponse>, Status> {
        let who = self.allow(&req, "AddUser")?;
        // The CSR is public, but long: the log keeps name and role.
        let args = format!(
            "name: {:?}, role: {:?}",
            req.get_ref().name,
            req.get_ref().role
        );
        let r: Result<Response<pb::AddUserResponse>, Status> = async {
            let q = req.into_inner();
            crate::access::check_name(&q.name).map_err(Status::invalid_argument)?;
            let role = Role::parse(&q.role).map_err(Status::invalid_argument)?;
            if q.csr_pem.len() > 16 * 1024 {
                return Err(Status::invalid_argument("the CSR is longer than 16 KiB"));
            }
            let f = &self.0;
            let taken = f.users.read().unwrap().values().any(|c| c.name == q.name)
                || f.catalog
                    .users()
                    .map_err(internal)?
                    .iter()
                    .any(|u| u.name == q.name);
            if taken {
                return Err(Status::already_exists(format!(
                    "a user {:?} exists (revoked names are not reused)",
                    q.name
                )));
            }
            let cn = format!("cairn user {} ({})", q.name, role.as_str());
            let cert_pem =
                f.ca.sign_client_csr(&q.csr_pem, &cn)
                    .map_err(|e| Status::invalid_argument(format!("the CSR: {e}")))?;
            let sha =
                cairn_net::fingerprint(&cairn_net::cert_der(&cert_pem, "user").map_err(internal)?);
            let u = UserRecord {
                name: q.name.clone(),
                role,
                cert_sha256: sha.clone(),
                created_at: now(),
                created_by: who.to_string(),
                revoked: false,
                revoked_at: None,
            };
            f.catalog.put_user(&u).map_err(internal)?;
            f.users.write().unwrap().insert(
                sha,
                Caller {
                    name: u.name.clone(),
                    role,
                },
            );
            tracing::info!(user = %u.name, role = role.as_str(), by = %who, "user added");
            Ok(Response::new(pb::AddUserResponse {
                user: Some(user_info(&u)),
                cert_pem: format!("{cert_pem}{}", f.ca.cert_pem),
                ca_pem: f.ca.cert_pem.clone(),
            }))
        }
        .await;
        self.record(&who, "AddUser", args, &r);
        r
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.allow(&req, "ListUsers")?;
        let f = &self.0;
        let stored = f.catalog.users().map_err(internal)?;
        let mut users: Vec<pb::User> = f
            .users
            .read()
            .unwrap()
            .iter()
            .filter(|(sha, _)| !stored.iter().any(|u| &u.cert_sha256 == *sha))
            .map(|(sha, c)| pb::User {
                name: c.name.clone(),
                role: c.role.as_str().into(),
                cert_sha256: sha.clone(),
                created_by: "cairn-controller init (pki/admins)".into(),
                ..Default::default()
            })
            .collect();
        users.extend(stored.iter().map(user_info));
        users.sort_by(|a, b| (a.revoked, &a.name).cmp(&(b.revoked, &b.name)));
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn revoke_user(
        &self,
        req: Request<pb::RevokeUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let who = self.allow(&req, "RevokeUser")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::User>, Status> = async {
            let name = req.into_inner().name;
            let f = &self.0;
            let mut u = f
                .catalog
                .users()
                .map_err(internal)?
                .into_iter()
                .find(|u| u.name == name)
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no user {name:?} (the bootstrap admin of pki/admins is removed by editing that file)"
                    ))
                })?;
            if !u.revoked {
                u.revoked = true;
                u.revoked_at = Some(now());
                f.catalog.put_user(&u).map_err(internal)?;
                f.users.write().unwrap().remove(&u.cert_sha256);
                tracing::info!(user = %u.name, by = %who, "user revoked; its certificate is refused from now on");
            }
            Ok(Response::new(user_info(&u)))
        }
        .await;
        self.record(&who, "RevokeUser", args, &r);
        r
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.allow(&req, "ListAudit")?;
        let q = req.into_inner();
        let f = self.0.clone();
        let entries = tokio::task::spawn_blocking(move || f.audit.list(q.since, q.limit as usize))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    seq: e.seq,
                    time: e.time,
                    who: e.who,
                    role: e.role,
                    action: e.action,
                    args: e.args,
                    outcome: e.outcome,
                    hash: e.hash,
                })
                .collect(),
        }))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.allow(&req, "VerifyAudit")?;
        let f = self.0.clone();
        let v = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mirror = f.repo.audit_lines()?;
            Ok(f.audit.verify_with_mirror(&mirror)?)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        if let Some(p) = &v.problem {
            tracing::error!(problem = %p, "the audit log failed verification");
        }
        Ok(Response::new(pb::VerifyAuditResponse {
            intact: v.problem.is_none(),
            entries: v.entries,
            problem: v.problem.unwrap_or_default(),
        }))
    }

    async fn get_version(
        &self,
        req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::VersionInfo>, Status> {
        self.allow(&req, "GetVersion")?;
        Ok(Response::new(pb::VersionInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: cairn_proto::PROTOCOL,
            min_protocol: cairn_proto::MIN_PROTOCOL,
        }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.allow(&req, "ListAgents")?;
        let f = &self.0;
        let mut counts: HashMap<String, u32> = HashMap::new();
        for d in f.catalog.domains().map_err(internal)? {
            *counts.entry(d.agent_id).or_default() += 1;
        }
        let agents = f
            .catalog
            .agents()
            .map_err(internal)?
            .into_iter()
            .filter(|a| !a.revoked)
            .map(|a| pb::Agent {
                online: f.is_online(&a.id),
                domains: counts.get(&a.id).copied().unwrap_or(0),
                agent_id: a.id,
                hostname: a.hostname,
                last_seen: a.last_seen,
                version: a.version,
                labels: a.labels.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn remove_agent(
        &self,
        req: Request<pb::RemoveAgentRequest>,
    ) -> Result<Response<pb::RemoveAgentResponse>, Status> {
        let who = self.allow(&req, "RemoveAgent")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::RemoveAgentResponse>, Status> = async {
            let id = req.into_inner().agent_id;
            let f = &self.0;
            f.catalog.revoke_agent(&id).map_err(not_found)?;
            f.agents_by_cert.write().unwrap().retain(|_, a| *a != id);
            // Dropping the session's sender ends its stream at once.
            f.sessions.lock().unwrap().remove(&id);
            let open: Vec<String> = f
                .catalog
                .jobs()
                .map_err(internal)?
                .into_iter()
                .filter(|j| j.agent_id == id && !j.state.is_final())
                .map(|j| j.id)
                .collect();
            for job in open {
                f.finish(
                    &job,
                    JobState::Failed,
                    None,
                    Some("the agent was removed".into()),
                )?;
            }
            tracing::info!(agent = %id, "agent removed; its certificate is refused from now on");
            Ok(Response::new(pb::RemoveAgentResponse {}))
        }
        .await;
        self.record(&who, "RemoveAgent", args, &r);
        r
    }

    async fn list_domains(
        &self,
        req: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        self.allow(&req, "ListDomains")?;
        let agent = req.into_inner().agent_id;
        let f = &self.0;
        let last = last_snapshots(f)?;
        let domains = f
            .catalog
            .domains()
            .map_err(internal)?
            .into_iter()
            .filter(|d| agent.is_empty() || d.agent_id == agent)
            .map(|d| {
                let plan = f.catalog.plan(&d.agent_id, &d.name).map_err(internal)?;
                Ok(domain_info(d, plan.as_ref(), &last))
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(pb::ListDomainsResponse { domains }))
    }

    async fn get_domain(
        &self,
        req: Request<pb::GetDomainRequest>,
    ) -> Result<Response<pb::DomainDetail>, Status> {
        self.allow(&req, "GetDomain")?;
        let r = req.into_inner();
        let f = &self.0;
        let mut found: Vec<DomainRecord> = f
            .catalog
            .domains()
            .map_err(internal)?
            .into_iter()
            .filter(|d| d.name == r.name && (r.agent_id.is_empty() || d.agent_id == r.agent_id))
            .collect();
        let d = match found.len() {
            0 => return Err(Status::not_found(format!("no domain {:?}", r.name))),
            1 => found.remove(0),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "domain {:?} is on several agents; name one with --agent",
                    r.name
                )))
            }
        };
        let plan = f.catalog.plan(&d.agent_id, &d.name).map_err(internal)?;
        let history = d
            .analysis
            .as_ref()
            .map(|a| {
                a.history
                    .iter()
                    .map(|h| pb::DaySample {
                        day: h.day.clone(),
                        changes: h.changes,
                        has_traffic: h.requests.is_some(),
                        requests: h.requests.unwrap_or(0),
                        size_bytes: h.size_bytes,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let changes = plan
            .as_ref()
            .map(|p| {
                p.changes
                    .iter()
                    .map(|c| pb::StrategyChange {
                        at: c.at,
                        from: c.from.clone(),
                        to: c.to.clone(),
                        why: c.why.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let last = last_snapshots(f)?;
        let plans = crate::scheduler::domain_plans(f).map_err(internal)?;
        let mine = plans
            .iter()
            .find(|p| p.domain.agent_id == d.agent_id && p.domain.name == d.name);
        let (settings, policies) = match mine {
            Some(p) => {
                let auto = plan
                    .as_ref()
                    .map(|p| {
                        p.runs
                            .iter()
                            .map(|r| format!("{} {}", r.kind, r.cron))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let settings = p
                    .effective
                    .settings(&auto)
                    .into_iter()
                    .map(|(name, value, source)| pb::EffectiveSetting {
                        name,
                        value,
                        source,
                    })
                    .collect();
                (settings, p.effective.policies.clone())
            }
            None => (Vec::new(), Vec::new()),
        };
        let snaps = f.catalog.snapshots(None).map_err(internal)?;
        let streams = [&f.binlog, &f.wal].map(|m| m.lock().unwrap().get(&d.agent_id).cloned());
        let (point_in_time, rpo_seconds) = point_in_time(&d, &snaps, &streams, now());
        Ok(Response::new(pb::DomainDetail {
            domain: Some(domain_info(d, plan.as_ref(), &last)),
            history,
            changes,
            settings,
            policies,
            repository: without_credentials(&f.cfg.repository.location),
            point_in_time,
            rpo_seconds,
        }))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        self.allow(&req, "ListSnapshots")?;
        let d = req.into_inner().domain;
        let snapshots = self
            .0
            .catalog
            .snapshots((!d.is_empty()).then_some(d.as_str()))
            .map_err(internal)?
            .iter()
            .map(snapshot_info)
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let who = self.allow(&req, "CreateToken")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::CreateTokenResponse>, Status> = async {
            let ttl = match req.into_inner().ttl_seconds {
                0 => DEFAULT_TOKEN_TTL,
                t if t > MAX_TOKEN_TTL => {
                    return Err(Status::invalid_argument("a token lives at most 7 days"))
                }
                t => t,
            };
            let token = format!("cairn-{}", hex::encode(rand::random::<[u8; 24]>()));
            let expires_at = now() + ttl as i64;
            self.0
                .catalog
                .add_token(&token, expires_at)
                .map_err(internal)?;
            tracing::info!(expires_at, "enrollment token created");
            let f = &self.0;
            Ok(Response::new(pb::CreateTokenResponse {
                join_command: format!(
                    "CAIRN_TOKEN={token} cairn-agent enroll --controller {} --ca-sha256 {}",
                    f.cfg.public_url, f.ca_sha256
                ),
                token,
                expires_at,
                ca_sha256: f.ca_sha256.clone(),
            }))
        }
        .await;
        self.record(&who, "CreateToken", args, &r);
        r
    }

    async fn start_backup(
        &self,
        req: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let who = self.allow(&req, "StartBackup")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::JobInfo>, Status> = async {
            let r = req.into_inner();
            let kind = match r.kind.as_str() {
                "" => "incremental",
                k @ ("full" | "incremental" | "differential") => k,
                k => {
                    return Err(Status::invalid_argument(format!(
                        "unknown backup kind {k:?} (full, incremental or differential)"
                    )))
                }
            };
            let f = &self.0;
            let held: Vec<_> = f
                .catalog
                .domains()
                .map_err(internal)?
                .into_iter()
                .filter(|d| {
                    d.name == r.domain && (r.agent_id.is_empty() || d.agent_id == r.agent_id)
                })
                .collect();
            let domain = match held.as_slice() {
                [one] => one,
                [] if r.agent_id.is_empty() => {
                    return Err(Status::not_found(format!(
                        "no agent reports domain {:?}",
                        r.domain
                    )))
                }
                [] => {
                    return Err(Status::not_found(format!(
                        "agent {:?} reports no domain {:?}",
                        r.agent_id, r.domain
                    )))
                }
                _ => {
                    let agents: Vec<&str> = held.iter().map(|d| d.agent_id.as_str()).collect();
                    return Err(Status::invalid_argument(format!(
                        "domain {:?} is on several agents ({}); name one with --agent",
                        r.domain,
                        agents.join(", ")
                    )));
                }
            };
            // Empty: the whole site, as a scheduled run backs it up.
            let content = match r.content.as_str() {
                "" => "site",
                "files" => "",
                "database" if domain.databases.is_empty() => {
                    return Err(Status::failed_precondition(format!(
                        "domain {:?}: its agent found no database in the site's config",
                        domain.name
                    )))
                }
                "database" => "database",
                c => {
                    return Err(Status::invalid_argument(format!(
                        "unknown content {c:?} (files or database)"
                    )))
                }
            };
            if !r.run_id.is_empty() {
                let first = f.catalog.job(&r.run_id).map_err(not_found)?;
                if first.domain != domain.name || first.agent_id != domain.agent_id {
                    return Err(Status::invalid_argument(format!(
                        "job {} is not a run of {:?} on {}",
                        r.run_id, domain.name, domain.agent_id
                    )));
                }
            }
            let (files, database, with_database) = site_backup(f, domain, kind, &r.run_id)?;
            let specs = match content {
                "database" => vec![database],
                "site" if with_database => vec![files, database],
                _ => vec![files],
            };
            self.queue_run("backup", &domain.name, &domain.agent_id, specs)
                .await
        }
        .await;
        self.record(&who, "StartBackup", args, &r);
        r
    }

    async fn start_restore(
        &self,
        req: Request<pb::StartRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let who = self.allow(&req, "StartRestore")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::JobInfo>, Status> = async {
            let r = req.into_inner();
            let f = &self.0;
            let snaps = f.catalog.snapshots(None).map_err(internal)?;
            let mut ask = crate::restore::Ask {
                id: r.snapshot_id,
                target: r.target,
                paths: r.paths,
                files_only: r.files_only,
                db_only: r.db_only,
                tables: r.tables,
                into_database: r.into_database,
                test: r.test,
                in_place: r.in_place,
                dry_run: r.dry_run,
                domain: r.domain,
                at: r.at,
                default_target: false,
            };
            let plan = |ask: &crate::restore::Ask| {
                crate::restore::plan(&snaps, ask, now()).map_err(|e| match e {
                    crate::restore::PlanError::NotFound(m) => Status::not_found(m),
                    crate::restore::PlanError::Invalid(m) => Status::invalid_argument(m),
                })
            };
            // Which site: planned once before its live directory is known.
            let first = if (ask.in_place || ask.dry_run) && ask.target.is_empty() {
                let probe = crate::restore::Ask {
                    target: "/".into(),
                    default_target: true,
                    ..ask.clone()
                };
                plan(&probe)?[0].0.clone()
            } else {
                plan(&ask)?[0].0.clone()
            };
            let agent = if r.agent_id.is_empty() {
                first.agent_id.clone()
            } else {
                r.agent_id.clone()
            };
            match f.catalog.agent(&agent).map_err(internal)? {
                Some(a) if !a.revoked => {}
                _ => return Err(Status::not_found(format!("no agent {agent:?}"))),
            }
            // Over the live site: the domain as that agent reports it.
            let live = if ask.in_place || ask.dry_run {
                f.catalog
                    .domains()
                    .map_err(internal)?
                    .into_iter()
                    .find(|d| d.agent_id == agent && d.name == first.domain)
            } else {
                None
            };
            if (ask.in_place || ask.dry_run) && ask.target.is_empty() {
                ask.default_target = true;
                ask.target = live.as_ref().map(|d| d.path.clone()).ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "agent {agent} reports no domain {:?}: name the live directory with --target",
                        first.domain
                    ))
                })?;
            }
            let planned = plan(&ask)?;
            let specs: Vec<JobSpec> = planned.into_iter().map(|(_, spec)| spec).collect();
            // A shipped binary log holds every database of its server: it
            // is only ever replayed on the server it came from.
            if agent != first.agent_id && specs.iter().any(|s| !s.log_snapshot_id.is_empty()) {
                return Err(Status::invalid_argument(format!(
                    "a restore to a moment replays the binary log of {}, which holds every database of that server: it runs there only; restore the dump on {agent} with a snapshot id, or move the site first",
                    f.hostname_of(&first.agent_id)
                )));
            }
            if !ask.in_place || ask.dry_run {
                return self.queue_run("restore", &first.domain, &agent, specs).await;
            }
            // First a safety backup of what is there now; the restore waits
            // for it and does not run if it fails.
            let domain = live.ok_or_else(|| {
                Status::failed_precondition(format!(
                    "agent {agent} reports no domain {:?}: an in-place restore first backs up the live site, so it needs the domain there",
                    first.domain
                ))
            })?;
            let (files, database, with_database) =
                site_backup(f, &domain, "incremental", "")?;
            let mut safety = vec![files];
            if with_database && specs.iter().any(|s| s.content == "database") {
                safety.push(database);
            }
            let at = now();
            let mut jobs = Vec::new();
            for spec in safety {
                let spec = JobSpec {
                    trigger: "safety".into(),
                    ..spec
                };
                jobs.push(
                    f.catalog
                        .new_job("backup", &first.domain, &agent, spec, at)
                        .map_err(internal)?,
                );
            }
            let after: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            let mut restores = Vec::new();
            for spec in specs {
                let spec = JobSpec {
                    after: after.clone(),
                    ..spec
                };
                restores.push(
                    f.catalog
                        .new_job("restore", &first.domain, &agent, spec, at)
                        .map_err(internal)?,
                );
            }
            if restores.len() > 1 {
                let run = restores[0].id.clone();
                for j in &mut restores {
                    j.spec.run_id = run.clone();
                }
            }
            let first_restore = restores[0].id.clone();
            jobs.extend(restores);
            f.catalog.queue(&jobs, &[]).map_err(internal)?;
            f.pump().await;
            let job = f.catalog.job(&first_restore).map_err(internal)?;
            Ok(Response::new(job_info(&job)))
        }
        .await;
        self.record(&who, "StartRestore", args, &r);
        r
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let who = self.allow(&req, "Rollback")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::JobInfo>, Status> = async {
            let id = req.into_inner().job_id;
            let f = &self.0;
            let named = f.catalog.job(&id).map_err(not_found)?;
            // The whole run: its files swap back, its database gets the
            // safety dump taken just before the restore.
            let run: Vec<JobRecord> = if named.spec.run_id.is_empty() {
                vec![named.clone()]
            } else {
                f.catalog
                    .jobs()
                    .map_err(internal)?
                    .into_iter()
                    .filter(|j| j.spec.run_id == named.spec.run_id && j.kind == "restore")
                    .collect()
            };
            if named.kind != "restore" || !run.iter().any(|j| j.spec.in_place) {
                return Err(Status::failed_precondition(format!(
                    "job {id} is not an in-place restore; only those keep a rollback point"
                )));
            }
            let mut specs = Vec::new();
            for j in &run {
                // An agent that died mid-swap finishes the swap when it
                // starts again, after its job was failed: whether a rollback
                // point exists is the agent's to say.
                let files = j.spec.content != "database";
                let swapped_maybe = files && j.spec.in_place && j.state == JobState::Failed;
                if j.state != JobState::Succeeded && !swapped_maybe {
                    return Err(Status::failed_precondition(format!(
                        "job {} did not succeed ({}): nothing of it to roll back",
                        j.id,
                        format!("{:?}", j.state).to_lowercase()
                    )));
                }
                if files && j.spec.in_place {
                    specs.push((
                        "rollback",
                        JobSpec {
                            rollback_of: j.id.clone(),
                            target: j.spec.target.clone(),
                            ..Default::default()
                        },
                    ));
                } else if !files {
                    let safety = j
                        .spec
                        .after
                        .iter()
                        .filter_map(|a| f.catalog.job(a).ok())
                        .find(|a| a.spec.content == "database")
                        .and_then(|a| a.snapshot_id)
                        .ok_or_else(|| {
                            Status::failed_precondition(format!(
                                "job {} restored a database without a safety dump to go back to",
                                j.id
                            ))
                        })?;
                    specs.push((
                        "restore",
                        JobSpec {
                            snapshot_id: safety,
                            content: "database".into(),
                            into_database: j.spec.into_database.clone(),
                            ..Default::default()
                        },
                    ));
                }
            }
            self.queue_jobs(&named.domain, &named.agent_id, specs).await
        }
        .await;
        self.record(&who, "Rollback", args, &r);
        r
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.allow(&req, "ListJobs")?;
        let r = req.into_inner();
        let state = match r.state.as_str() {
            "" => None,
            s => Some(
                serde_json::from_value::<JobState>(serde_json::Value::String(s.into())).map_err(
                    |_| {
                        Status::invalid_argument(format!(
                        "job state {s:?}: expected queued, running, succeeded, failed or cancelled"
                    ))
                    },
                )?,
            ),
        };
        let f = &self.0;
        let all = match state {
            Some(JobState::Queued | JobState::Running) => f.catalog.open_jobs(),
            _ => f.catalog.jobs(),
        };
        let jobs = all
            .map_err(internal)?
            .iter()
            .filter(|j| r.domain.is_empty() || j.domain == r.domain)
            .filter(|j| state.is_none_or(|s| j.state == s))
            .map(job_info)
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        self.allow(&req, "GetJob")?;
        let j = self
            .0
            .catalog
            .job(&req.into_inner().job_id)
            .map_err(not_found)?;
        Ok(Response::new(job_info(&j)))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let who = self.allow(&req, "CancelJob")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::JobInfo>, Status> = async {
            let id = req.into_inner().job_id;
            let f = &self.0;
            let j = f.catalog.job(&id).map_err(not_found)?;
            if j.state.is_final() {
                return Err(Status::failed_precondition(format!(
                    "job {id} already ended ({:?})",
                    j.state
                )));
            }
            if j.state == JobState::Running {
                f.tell_cancel(&j.agent_id, &id).await;
            }
            let j = f.finish(
                &id,
                JobState::Cancelled,
                None,
                Some("cancelled by an operator".into()),
            )?;
            Ok(Response::new(job_info(&j)))
        }
        .await;
        self.record(&who, "CancelJob", args, &r);
        r
    }

    type WatchJobStream = Boxed<pb::JobInfo>;

    async fn watch_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.allow(&req, "WatchJob")?;
        let id = req.into_inner().job_id;
        let f = self.0.clone();
        f.catalog.job(&id).map_err(not_found)?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let info = match f.catalog.job(&id) {
                    Ok(j) => job_info(&j),
                    Err(e) => {
                        let _ = tx.send(Err(internal(e))).await;
                        return;
                    }
                };
                let done = info.state >= pb::JobState::Succeeded as i32;
                if last.as_ref() != Some(&info) {
                    if tx.send(Ok(info.clone())).await.is_err() {
                        return;
                    }
                    last = Some(info);
                }
                if done {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn forget(
        &self,
        req: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        let who = self.allow(&req, "Forget")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::ForgetResponse>, Status> = async {
            let r = req.into_inner();
            let f = self.0.clone();
            let snaps = f.catalog.snapshots(None).map_err(internal)?;
            let mut chosen = Vec::new();
            for want in &r.snapshot_ids {
                chosen.push(find_snapshot(&snaps, want)?.clone());
            }
            let holds = f.catalog.holds().map_err(internal)?;
            for s in &chosen {
                if let Some(h) = holds.iter().find(|h| h.covers(s)) {
                    return Err(Status::failed_precondition(format!(
                        "snapshot {} is under legal hold {} ({}); remove the hold first",
                        s.id, h.id, h.reason
                    )));
                }
            }
            let ids: Vec<Id> = chosen
                .iter()
                .map(|s| {
                    s.id.parse()
                        .map_err(|_| internal("bad snapshot id in catalog"))
                })
                .collect::<Result<_, _>>()?;
            let g = f.clone();
            tokio::task::spawn_blocking(move || g.store.forget(&ids))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            for s in &chosen {
                f.catalog.remove_snapshot(s).map_err(internal)?;
                tracing::info!(snapshot = %s.id, domain = %s.domain, agent = %s.agent_id, "snapshot forgotten");
            }
            f.catalog.flush().map_err(internal)?;
            Ok(Response::new(pb::ForgetResponse {
                forgotten: chosen.into_iter().map(|s| s.id).collect(),
            }))
        }
        .await;
        self.record(&who, "Forget", args, &r);
        r
    }

    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::PolicyChanges>, Status> {
        let who = self.allow(&req, "ApplyPolicy")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::PolicyChanges>, Status> = async {
            let r = req.into_inner();
            let p = Policy::parse(&r.document)
                .map_err(|e| Status::invalid_argument(format!("policy: {e}")))?;
            let f = self.0.clone();
            let mut all = f.catalog.policies().map_err(internal)?;
            let outcome = match all.iter().position(|q| q.name == p.name) {
                Some(i) if all[i] == p => "unchanged",
                Some(i) => {
                    all[i] = p.clone();
                    "updated"
                }
                None if all.len() >= crate::policy::MAX_POLICIES => {
                    return Err(Status::resource_exhausted(format!(
                        "the fleet holds {} policies already",
                        all.len()
                    )))
                }
                None => {
                    all.push(p.clone());
                    "created"
                }
            };
            let g = f.clone();
            let changes =
                tokio::task::spawn_blocking(move || crate::scheduler::policy_effects(&g, &all))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
            if !r.dry_run && outcome != "unchanged" {
                f.catalog.put_policy(&p).map_err(internal)?;
                tracing::info!(policy = %p.name, outcome, domains_changed = changes.len(), "policy applied");
            }
            Ok(Response::new(policy_changes(
                &p.name, outcome, r.dry_run, changes,
            )))
        }
        .await;
        self.record(&who, "ApplyPolicy", args, &r);
        r
    }

    async fn delete_policy(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::PolicyChanges>, Status> {
        let who = self.allow(&req, "DeletePolicy")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::PolicyChanges>, Status> = async {
            let r = req.into_inner();
            let f = self.0.clone();
            let mut all = f.catalog.policies().map_err(internal)?;
            let before = all.len();
            all.retain(|p| p.name != r.name);
            if all.len() == before {
                return Err(Status::not_found(format!("no policy {:?}", r.name)));
            }
            let g = f.clone();
            let changes =
                tokio::task::spawn_blocking(move || crate::scheduler::policy_effects(&g, &all))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
            if !r.dry_run {
                f.catalog.delete_policy(&r.name).map_err(internal)?;
                tracing::info!(policy = %r.name, "policy deleted");
            }
            Ok(Response::new(policy_changes(
                &r.name, "deleted", r.dry_run, changes,
            )))
        }
        .await;
        self.record(&who, "DeletePolicy", args, &r);
        r
    }

    async fn list_policies(
        &self,
        req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        self.allow(&req, "ListPolicies")?;
        let name = req.into_inner().name;
        let f = &self.0;
        let plans = crate::scheduler::domain_plans(f).map_err(internal)?;
        let mut policies: Vec<pb::PolicyInfo> = f
            .catalog
            .policies()
            .map_err(internal)?
            .into_iter()
            .filter(|p| name.is_empty() || p.name == name)
            .map(|p| pb::PolicyInfo {
                domains: plans
                    .iter()
                    .filter(|d| d.effective.policies.contains(&p.name))
                    .map(|d| format!("{}/{}", d.domain.agent_id, d.domain.name))
                    .collect(),
                document: toml::to_string_pretty(&p).unwrap_or_default(),
                name: p.name,
                order: p.order,
            })
            .collect();
        if !name.is_empty() && policies.is_empty() {
            return Err(Status::not_found(format!("no policy {name:?}")));
        }
        policies.sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(&b.name)));
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn label_agent(
        &self,
        req: Request<pb::LabelAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let who = self.allow(&req, "LabelAgent")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::Agent>, Status> = async {
            let r = req.into_inner();
            let f = &self.0;
            let mut a = match f.catalog.agent(&r.agent_id).map_err(internal)? {
                Some(a) if !a.revoked => a,
                _ => return Err(Status::not_found(format!("no agent {:?}", r.agent_id))),
            };
            let mut labels = a.labels.clone();
            for k in &r.remove {
                labels.remove(k);
            }
            labels.extend(r.set);
            a.labels = crate::policy::check_labels(&labels).map_err(Status::invalid_argument)?;
            f.catalog
                .put_agent(&a)
                .and_then(|_| f.catalog.flush())
                .map_err(internal)?;
            tracing::info!(agent = %a.id, labels = ?a.labels, "agent labels set");
            Ok(Response::new(pb::Agent {
                online: f.is_online(&a.id),
                agent_id: a.id,
                hostname: a.hostname,
                last_seen: a.last_seen,
                version: a.version,
                domains: 0,
                labels: a.labels.into_iter().collect(),
            }))
        }
        .await;
        self.record(&who, "LabelAgent", args, &r);
        r
    }

    async fn list_schedule(
        &self,
        req: Request<pb::ListScheduleRequest>,
    ) -> Result<Response<pb::ListScheduleResponse>, Status> {
        self.allow(&req, "ListSchedule")?;
        let horizon = req.into_inner().horizon_seconds.clamp(60, 366 * 86_400) as i64;
        let f = self.0.clone();
        let now = now();
        let runs =
            tokio::task::spawn_blocking(move || crate::scheduler::upcoming(&f, now, horizon))
                .await
                .map_err(internal)?
                .map_err(internal)?
                .into_iter()
                .map(|u| pb::UpcomingRun {
                    domain: u.domain,
                    agent_id: u.agent_id,
                    kind: u.kind,
                    cron: u.cron,
                    timezone: u.timezone,
                    occurrence: u.occurrence,
                    starts_at: u.starts_at,
                    source: u.source,
                })
                .collect();
        Ok(Response::new(pb::ListScheduleResponse { now, runs }))
    }

    async fn add_hold(
        &self,
        req: Request<pb::AddHoldRequest>,
    ) -> Result<Response<pb::Hold>, Status> {
        let who = self.allow(&req, "AddHold")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::Hold>, Status> = async {
            let by = who.to_string();
            let r = req.into_inner();
            let f = &self.0;
            if r.reason.trim().is_empty() || r.reason.len() > 500 {
                return Err(Status::invalid_argument(
                    "a hold needs a reason (at most 500 characters)",
                ));
            }
            let (domain, snapshot_id) = match (r.domain.is_empty(), r.snapshot_id.is_empty()) {
                (false, true) => {
                    let known = f
                        .catalog
                        .domains()
                        .map_err(internal)?
                        .iter()
                        .any(|d| d.name == r.domain)
                        || !f
                            .catalog
                            .snapshots(Some(&r.domain))
                            .map_err(internal)?
                            .is_empty();
                    if !known {
                        return Err(Status::not_found(format!("no domain {:?}", r.domain)));
                    }
                    (r.domain, String::new())
                }
                (true, false) => {
                    let snaps = f.catalog.snapshots(None).map_err(internal)?;
                    (
                        String::new(),
                        find_snapshot(&snaps, &r.snapshot_id)?.id.clone(),
                    )
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "hold a domain or a snapshot (one of the two)",
                    ))
                }
            };
            let h = HoldRecord {
                id: f.catalog.next_id("h").map_err(internal)?,
                domain,
                snapshot_id,
                reason: r.reason,
                by,
                at: now(),
            };
            f.catalog.add_hold(&h).map_err(internal)?;
            tracing::info!(hold = %h.id, domain = %h.domain, snapshot = %h.snapshot_id, by = %h.by, "legal hold added");
            Ok(Response::new(hold_info(&h)))
        }
        .await;
        self.record(&who, "AddHold", args, &r);
        r
    }

    async fn remove_hold(
        &self,
        req: Request<pb::RemoveHoldRequest>,
    ) -> Result<Response<pb::Hold>, Status> {
        let who = self.allow(&req, "RemoveHold")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::Hold>, Status> = async {
            let id = req.into_inner().hold_id;
            let h = self.0.catalog.remove_hold(&id).map_err(not_found)?;
            tracing::warn!(hold = %h.id, domain = %h.domain, snapshot = %h.snapshot_id, "legal hold removed");
            Ok(Response::new(hold_info(&h)))
        }
        .await;
        self.record(&who, "RemoveHold", args, &r);
        r
    }

    async fn list_holds(
        &self,
        req: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        self.allow(&req, "ListHolds")?;
        let holds = self
            .0
            .catalog
            .holds()
            .map_err(internal)?
            .iter()
            .map(hold_info)
            .collect();
        Ok(Response::new(pb::ListHoldsResponse { holds }))
    }

    async fn retention_preview(
        &self,
        req: Request<pb::RetentionPreviewRequest>,
    ) -> Result<Response<pb::RetentionPreviewResponse>, Status> {
        self.allow(&req, "RetentionPreview")?;
        let domain = req.into_inner().domain;
        let f = self.0.clone();
        let (gone, freed, kept) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let only = (!domain.is_empty()).then_some(domain.as_str());
            let gone = crate::scheduler::retention_plan(&f, only)?;
            let ids: std::collections::HashSet<&str> =
                gone.iter().map(|g| g.snapshot.id.as_str()).collect();
            let all = f.catalog.snapshots(None)?;
            let keep: Vec<String> = all
                .iter()
                .filter(|s| !ids.contains(s.id.as_str()))
                .map(|s| s.id.clone())
                .collect();
            let forget: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            let freed = crate::scheduler::bytes_only_in(&f, &forget, &keep)?;
            let kept = all
                .iter()
                .filter(|s| only.is_none_or(|d| s.domain == d) && !ids.contains(s.id.as_str()))
                .count();
            Ok((gone, freed, kept))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(pb::RetentionPreviewResponse {
            forget: gone
                .into_iter()
                .map(|g| pb::ForgetCandidate {
                    snapshot: Some(snapshot_info(&g.snapshot)),
                    rule: g.rule,
                })
                .collect(),
            bytes_freed: freed,
            snapshots_kept: kept as u32,
        }))
    }

    async fn list_alerts(
        &self,
        req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        self.allow(&req, "ListAlerts")?;
        let all = req.into_inner().all;
        let mut alerts: Vec<AlertRecord> = self
            .0
            .catalog
            .alerts()
            .map_err(internal)?
            .into_iter()
            .filter(|a| all || a.state == AlertState::Firing)
            .collect();
        // Firing first, then newest first.
        alerts.sort_by_key(|a| (a.state != AlertState::Firing, std::cmp::Reverse(a.fired_at)));
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: alerts.iter().map(alert_info).collect(),
        }))
    }

    async fn list_channels(
        &self,
        req: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        self.allow(&req, "ListChannels")?;
        let f = &self.0;
        let mut channels = Vec::new();
        for c in &f.channels.0 {
            let queued = f.catalog.outbox(&c.cfg.name).map_err(internal)?.len() as u64;
            let st = c.state.lock().unwrap().clone();
            channels.push(pb::Channel {
                name: c.cfg.name.clone(),
                kind: serde_json::to_value(c.cfg.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                target: c.target(),
                queued,
                last_sent: st.last_sent.unwrap_or(0),
                last_error: st.last_error.unwrap_or_default(),
                retry_at: st.retry_at,
                digest: c.cfg.digest.clone(),
                max_per_hour: c.cfg.max_per_hour,
            });
        }
        Ok(Response::new(pb::ListChannelsResponse { channels }))
    }

    async fn test_channel(
        &self,
        req: Request<pb::TestChannelRequest>,
    ) -> Result<Response<pb::TestChannelResponse>, Status> {
        let who = self.allow(&req, "TestChannel")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::TestChannelResponse>, Status> = async {
            let by = who.to_string();
            let name = req.into_inner().name;
            let f = &self.0;
            let c = f.channels.get(&name).ok_or_else(|| {
                let known: Vec<&str> = f.channels.0.iter().map(|c| c.cfg.name.as_str()).collect();
                Status::not_found(format!(
                    "no notification channel {name:?} in controller.toml (channels: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
            crate::notify::send_test(f, c, &by)
                .await
                .map_err(|e| Status::aborted(format!("channel {name}: delivery failed: {e}")))?;
            Ok(Response::new(pb::TestChannelResponse {
                target: c.target(),
            }))
        }
        .await;
        self.record(&who, "TestChannel", args, &r);
        r
    }

    async fn ack_alert(
        &self,
        req: Request<pb::AckAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let who = self.allow(&req, "AckAlert")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::Alert>, Status> = async {
            let by = who.to_string();
            let id = req.into_inner().alert_id;
            let f = &self.0;
            let mut a = f
                .catalog
                .alerts()
                .map_err(internal)?
                .into_iter()
                .find(|a| a.id == id)
                .ok_or_else(|| Status::not_found(format!("no alert {id:?}")))?;
            if a.acked_by.is_none() {
                a.acked_by = Some(by);
                a.acked_at = Some(now());
                f.catalog
                    .put_alerts(std::slice::from_ref(&a), &[])
                    .map_err(internal)?;
                tracing::info!(alert = %a.id, by = %a.acked_by.as_deref().unwrap_or(""), "alert acknowledged");
            }
            Ok(Response::new(alert_info(&a)))
        }
        .await;
        self.record(&who, "AckAlert", args, &r);
        r
    }

    async fn run_maintenance(
        &self,
        req: Request<pb::RunMaintenanceRequest>,
    ) -> Result<Response<pb::RunMaintenanceResponse>, Status> {
        let who = self.allow(&req, "RunMaintenance")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::RunMaintenanceResponse>, Status> = async {
            let f = self.0.clone();
            let (forgotten, rep) =
                tokio::task::spawn_blocking(move || crate::scheduler::maintain(&f))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
            Ok(Response::new(pb::RunMaintenanceResponse {
                forgotten: forgotten as u32,
                gc: Some(gc_info(&rep)),
            }))
        }
        .await;
        self.record(&who, "RunMaintenance", args, &r);
        r
    }

    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcResponse>, Status> {
        let who = self.allow(&req, "Gc")?;
        let args = crate::audit::args(req.get_ref());
        let r: Result<Response<pb::GcResponse>, Status> = async {
            let r = req.into_inner();
            let opts = GcOptions {
                dry_run: r.dry_run,
                grace: Duration::from_secs(r.grace_seconds),
            };
            let f = self.0.clone();
            let rep = tokio::task::spawn_blocking(move || f.store.gc(&opts))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            tracing::info!(
                dry_run = rep.dry_run,
                packs_deleted = rep.packs_deleted,
                bytes_freed = rep.bytes_freed,
                "gc finished"
            );
            Ok(Response::new(gc_info(&rep)))
        }
        .await;
        self.record(&who, "Gc", args, &r);
        r
    }
}

/// The one snapshot whose id starts with `prefix`.
fn find_snapshot<'a>(
    snaps: &'a [SnapshotRecord],
    prefix: &str,
) -> Result<&'a SnapshotRecord, Status> {
    let found: Vec<&SnapshotRecord> = snaps
        .iter()
        .filter(|s| !prefix.is_empty() && s.id.starts_with(prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Status::not_found(format!("no snapshot {prefix:?}"))),
        _ => Err(Status::invalid_argument(format!(
            "snapshot prefix {prefix:?} is ambiguous"
        ))),
    }
}

fn gc_info(rep: &crate::store::GcReport) -> pb::GcResponse {
    pb::GcResponse {
        dry_run: rep.dry_run,
        blobs_live: rep.blobs_live,
        packs_total: rep.packs_total,
        packs_deleted: rep.packs_deleted,
        packs_kept_young: rep.packs_kept_young,
        bytes_freed: rep.bytes_freed,
        segments_replaced: rep.segments_replaced,
    }
}

fn snapshot_info(s: &SnapshotRecord) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        snapshot_id: s.id.clone(),
        domain: s.domain.clone(),
        agent_id: s.agent_id.clone(),
        time: s.time,
        kind: s.kind.clone(),
        content: s.content.clone(),
        total_bytes: s.total_bytes,
        stored_bytes: s.stored_bytes,
        run_id: s.run_id.clone(),
    }
}

fn user_info(u: &UserRecord) -> pb::User {
    pb::User {
        name: u.name.clone(),
        role: u.role.as_str().into(),
        cert_sha256: u.cert_sha256.clone(),
        created_at: u.created_at,
        created_by: u.created_by.clone(),
        revoked: u.revoked,
        revoked_at: u.revoked_at.unwrap_or(0),
    }
}

fn alert_info(a: &AlertRecord) -> pb::Alert {
    pb::Alert {
        alert_id: a.id.clone(),
        rule: a.rule.clone(),
        agent_id: a.agent_id.clone(),
        domain: a.domain.clone(),
        state: match a.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
        .into(),
        message: a.message.clone(),
        fired_at: a.fired_at,
        last_seen: a.last_seen,
        resolved_at: a.resolved_at.unwrap_or(0),
        acked_by: a.acked_by.clone().unwrap_or_default(),
        acked_at: a.acked_at.unwrap_or(0),
    }
}

fn hold_info(h: &HoldRecord) -> pb::Hold {
    pb::Hold {
        hold_id: h.id.clone(),
        domain: h.domain.clone(),
        snapshot_id: h.snapshot_id.clone(),
        reason: h.reason.clone(),
        by: h.by.clone(),
        at: h.at,
    }
}

fn policy_changes(
    name: &str,
    outcome: &str,
    dry_run: bool,
    changes: Vec<crate::scheduler::SettingChange>,
) -> pb::PolicyChanges {
    pb::PolicyChanges {
        name: name.into(),
        outcome: outcome.into(),
        dry_run,
        changes: changes
            .into_iter()
            .map(|c| pb::SettingChange {
                domain: c.domain,
                agent_id: c.agent_id,
                setting: c.setting,
                from: c.from,
                to: c.to,
            })
            .collect(),
    }
}

/// Each domain's newest snapshot: (time, id).
fn last_snapshots(f: &Fleet) -> Result<HashMap<String, (i64, String)>, Status> {
    let mut last = HashMap::new();
    for s in f.catalog.snapshots(None).map_err(internal)? {
        last.insert(s.domain.clone(), (s.time, s.id));
    }
    Ok(last)
}

fn domain_info(
    d: DomainRecord,
    plan: Option<&PlanRecord>,
    last: &HashMap<String, (i64, String)>,
) -> pb::DomainInfo {
    let (t, id) = last.get(&d.name).cloned().unwrap_or_default();
    let a = d.analysis.clone().unwrap_or_default();
    pb::DomainInfo {
        size_class: SizeClass::of(d.size_bytes).as_str().into(),
        activity: Activity::of(a.changes_24h).as_str().into(),
        changes_24h: a.changes_24h,
        avg_daily_changes: a.avg_daily_changes,
        trend: a.trend,
        has_traffic: a.requests_24h.is_some(),
        requests_24h: a.requests_24h.unwrap_or(0),
        analyzed_at: a.analyzed_at,
        files: a.files,
        strategy: plan.map(|p| p.strategy.clone()).unwrap_or_default(),
        schedule: plan
            .map(|p| {
                p.runs
                    .iter()
                    .map(|r| pb::ScheduledRun {
                        cron: r.cron.clone(),
                        kind: r.kind.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        reason: plan.map(|p| p.reason.clone()).unwrap_or_default(),
        name: d.name,
        agent_id: d.agent_id,
        path: d.path,
        size_bytes: d.size_bytes,
        last_backup: t,
        last_snapshot_id: id,
        aliases: d.aliases,
        site_type: d.site_type,
        databases: d.databases,
        root_missing: d.root_missing,
        source: d.source,
    }
}

/// Point in time for a domain's database in words, and its recovery point:
/// seconds since the binary log was last shipped where it covers the
/// database, else since the newest copy (-1: none yet).
fn point_in_time(
    d: &DomainRecord,
    snaps: &[SnapshotRecord],
    streams: &[Option<crate::fleet::BinlogStream>; 2],
    now: i64,
) -> (String, i64) {
    let [binlog, wal] = streams;
    let newest = |f: &dyn Fn(&SnapshotRecord) -> bool| {
        snaps
            .iter()
            .filter(|s| s.agent_id == d.agent_id && f(s))
            .map(|s| s.time)
            .max()
    };
    let copy = newest(&|s| s.domain == d.name);
    let since = |t: Option<i64>| t.map_or(-1, |t| (now - t).max(0));
    let engine = d
        .databases
        .first()
        .and_then(|db| db.split_once(':'))
        .map(|(e, _)| e);
    let off = |why: String| {
        (
            format!("off: {why}; restores reach the newest dump"),
            since(copy),
        )
    };
    let (stream, log) = match engine {
        None => return ("no database".into(), since(copy)),
        Some("sqlite") => return off("SQLite has no log to replay".into()),
        Some("postgres") => (wal.as_ref(), "WAL"),
        Some(_) => (binlog.as_ref(), "binary log"),
    };
    match stream {
        None => off(format!("the agent has not reported a {log} stream")),
        Some(s) if s.state != "streaming" => off(s.detail.clone()),
        Some(_) if !d.binlog => off(format!(
            "the site's database is on another server than the one whose {log} the agent streams"
        )),
        Some(s) => {
            let shipped = newest(&|s| s.content == "binlog" && s.domain.is_empty());
            let dump = newest(&|s| s.domain == d.name && s.content == "database");
            let mut text = match shipped {
                Some(t) => format!(
                    "on: {log} shipped up to {} ({} s ago)",
                    crate::fmt_time(t),
                    (now - t).max(0)
                ),
                None => format!("on: {log} streaming, not shipped yet"),
            };
            if dump.is_none() {
                text += "; no dump yet to restore from";
            }
            if log == "binary log" && !s.format.eq_ignore_ascii_case("ROW") {
                text += &format!("; binlog_format is {}, ROW is safer", s.format);
            }
            (text, since(shipped.or(copy)))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_locations_lose_their_credentials() {
        use super::without_credentials as w;
        assert_eq!(
            w("s3://key:secret@s3.example.net/bucket/cairn"),
            "s3://s3.example.net/bucket/cairn"
        );
        assert_eq!(w("s3://bucket/cairn"), "s3://bucket/cairn");
        assert_eq!(w("/srv/cairn/repo"), "/srv/cairn/repo");
        assert_eq!(w("s3://a@b@host"), "s3://host");
    }
}
