//! `cairnctl user`: certificates with roles; `cairnctl audit`: the log of
//! who did what.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn_proto::admin::v1 as pb;

use super::fleet::{controller_url, status, time, Client};
use crate::cli::{AuditCommand, Connection, UserCommand};
use crate::{output, usage, Exit};

fn user_json(u: &pb::User) -> serde_json::Value {
    serde_json::json!({
        "name": u.name, "role": u.role, "cert_sha256": u.cert_sha256,
        "created_at": (u.created_at > 0).then_some(u.created_at),
        "created_by": u.created_by, "revoked": u.revoked,
        "revoked_at": (u.revoked_at > 0).then_some(u.revoked_at),
    })
}

/// Creates `path` with `mode`, refusing to replace an existing file.
fn write_new(path: &Path, data: &str, mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub async fn users(c: &mut Client, conn: &Connection, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add { name, role, out } => {
            let dir = out.unwrap_or_else(|| PathBuf::from(&name));
            let key_path = dir.join(format!("{name}.key"));
            if key_path.exists() {
                return Err(usage(format!(
                    "{} exists; choose another --out",
                    key_path.display()
                )));
            }
            // The key is made here and never leaves this machine.
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name.clone());
            let csr = params.serialize_request(&key)?.pem()?;
            let r = c
                .add_user(pb::AddUserRequest {
                    name: name.clone(),
                    role,
                    csr_pem: csr,
                })
                .await
                .map_err(status)?
                .into_inner();
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            let abs = std::fs::canonicalize(&dir)?;
            write_new(&key_path, &key.serialize_pem(), 0o600)?;
            let cert = abs.join(format!("{name}.pem"));
            let ca = abs.join("ca.pem");
            std::fs::write(&cert, &r.cert_pem)?;
            std::fs::write(&ca, &r.ca_pem)?;
            let cfg = format!(
                "# cairnctl as {name}: CAIRN_CONFIG={}\ncontroller = {:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
                abs.join("cairnctl.toml").display(),
                controller_url(conn)?,
                ca.display().to_string(),
                cert.display().to_string(),
                abs.join(format!("{name}.key")).display().to_string(),
            );
            write_new(&abs.join("cairnctl.toml"), &cfg, 0o600)?;
            let u = r.user.unwrap_or_default();
            if conn.json {
                let mut v = user_json(&u);
                v["config"] = abs.join("cairnctl.toml").display().to_string().into();
                return output::json(&v);
            }
            println!(
                "user {} ({}) added; hand over {} (its key stays in that directory):\n  export CAIRN_CONFIG={}",
                u.name,
                u.role,
                abs.display(),
                abs.join("cairnctl.toml").display()
            );
        }
        UserCommand::List => {
            let r = c
                .list_users(pb::ListUsersRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if conn.json {
                return output::json(&r.users.iter().map(user_json).collect::<Vec<_>>());
            }
            println!(
                "{:<20} {:<9} {:<19} {:<17} created by",
                "user", "role", "created", "certificate"
            );
            for u in &r.users {
                println!(
                    "{:<20} {:<9} {:<19} {:<17} {}{}",
                    u.name,
                    u.role,
                    time(u.created_at),
                    &u.cert_sha256[..16.min(u.cert_sha256.len())],
                    u.created_by,
                    if u.revoked {
                        format!(" (revoked {})", time(u.revoked_at))
                    } else {
                        String::new()
                    }
                );
            }
        }
        UserCommand::Revoke { name } => {
            let u = c
                .revoke_user(pb::RevokeUserRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            if conn.json {
                return output::json(&user_json(&u));
            }
            println!(
                "user {} revoked: its certificate is refused from now on",
                u.name
            );
        }
    }
    Ok(())
}

/// `--since`: a duration back from now, or a date.
fn since(s: &str) -> Result<i64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(chrono::Utc::now().timestamp() - d.as_secs() as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp());
    }
    Err(usage(format!(
        "--since {s:?}: expected a duration (24h, 7d) or a date (2026-11-30, 2026-11-30T14:05:00Z)"
    )))
}

fn print_entry(seq: u64, t: i64, who: &str, role: &str, action: &str, outcome: &str, args: &str) {
    println!(
        "{seq:>6} {} {:<12} {role:<9} {action:<16} {}  {}",
        time(t),
        output::safe(who),
        output::safe(outcome),
        output::safe(args)
    );
}

/// `cairnctl repo audit`: the copy in the repository, read and checked
/// with the passphrase alone.
pub fn repo_audit(args: &crate::cli::RepoArgs) -> Result<()> {
    let repo = super::open(args)?;
    let lines = repo.audit_lines()?;
    let verdict = cairn_repo::audit::verify(&lines, None);
    let entries: Vec<cairn_repo::audit::Entry> = lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_str(l).ok())
        .collect();
    if args.json {
        output::json(&entries)?;
    } else {
        for e in &entries {
            print_entry(
                e.seq, e.time, &e.who, &e.role, &e.action, &e.outcome, &e.args,
            );
        }
        if verdict.problem.is_none() {
            println!("{} entries, hash chain verified", verdict.entries);
        }
    }
    match verdict.problem {
        None => Ok(()),
        Some(p) => Err(Exit(
            crate::EXIT_FAILURE,
            anyhow::anyhow!(
                "the audit log in the repository was tampered with: {p} ({} entries verified before it)",
                verdict.entries
            ),
        )
        .into()),
    }
}

pub async fn audit(c: &mut Client, cmd: AuditCommand, json: bool) -> Result<()> {
    match cmd {
        AuditCommand::List { since: s, limit } => {
            let since = s.as_deref().map(since).transpose()?.unwrap_or(0);
            let r = c
                .list_audit(pb::ListAuditRequest { since, limit })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let list: Vec<serde_json::Value> = r
                    .entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "seq": e.seq, "time": e.time, "who": e.who, "role": e.role,
                            "action": e.action, "args": e.args, "outcome": e.outcome,
                            "hash": e.hash,
                        })
                    })
                    .collect();
                return output::json(&list);
            }
            for e in &r.entries {
                print_entry(
                    e.seq, e.time, &e.who, &e.role, &e.action, &e.outcome, &e.args,
                );
            }
        }
        AuditCommand::Verify => {
            let r = c
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if json {
                output::json(&serde_json::json!({
                    "intact": r.intact, "entries": r.entries,
                    "problem": (!r.problem.is_empty()).then(|| r.problem.clone()),
                }))?;
            } else if r.intact {
                println!(
                    "audit log intact: {} entries, hash chain verified",
                    r.entries
                );
            }
            if !r.intact {
                return Err(Exit(
                    crate::EXIT_FAILURE,
                    anyhow::anyhow!(
                        "the audit log was tampered with: {} ({} entries verified before it)",
                        r.problem,
                        r.entries
                    ),
                )
                .into());
            }
        }
    }
    Ok(())
}
