//! Point in time for PostgreSQL (DB-4, RST-2).
//!
//! A logical dump cannot be brought forward by the write-ahead log; a
//! physical copy can. The agent streams the server's WAL with
//! `pg_receivewal` through a replication slot (so the server keeps what the
//! stream has not received) into `wal/`, and takes a base backup
//! (`pg_basebackup -Fp -X none`, the stream holds its WAL) into
//! `base/<unix time it ended>` every day. Both ship with the binary log
//! spool. A restore to a moment copies the newest base that ended before it
//! into a scratch directory, has a throwaway server replay the WAL up to the
//! moment ([`recover`]), then dumps the site's database from that server
//! into the live one ([`Recovered::copy_database`]): other databases of the
//! cluster are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::postgres::Libpq;
use crate::{run_capture, Connection, DbError, Engine, Result, Running, SecretFile, StderrTail};

/// How an operator turns point-in-time restores on for a PostgreSQL server.
pub const ENABLE_HINT: &str = "give the agent a [wal] section in agent.toml with a user that has the REPLICATION attribute (CREATE ROLE cairn_wal LOGIN REPLICATION PASSWORD '…'), allow it a replication connection in pg_hba.conf (host replication cairn_wal 127.0.0.1/32 scram-sha-256) and keep wal_level at replica or logical";

/// The WAL segments' directory in a spool.
pub fn wal_dir(spool: &Path) -> PathBuf {
    spool.join("wal")
}

/// The base backups' directory in a spool.
pub fn base_dir(spool: &Path) -> PathBuf {
    spool.join("base")
}

/// The file the stream refreshes while it runs: the unix time it was last
/// seen alive, so a restore knows how far the shipped WAL reaches.
pub fn alive_file(spool: &Path) -> PathBuf {
    spool.join("streaming-at")
}

fn fail(cause: String) -> DbError {
    DbError::Dump {
        engine: Engine::Postgres,
        database: String::new(),
        cause,
    }
}

fn check_slot(slot: &str) -> Result<()> {
    let ok = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(DbError::Invalid(format!(
            "{slot:?} is not a replication slot name (lower-case letters, digits and _, at most 63)"
        )));
    }
    Ok(())
}

/// `pg_receivewal` streaming a server's WAL into a directory until it is
/// stopped or the connection ends.
pub struct Receiver {
    child: Running,
    _pass: Option<SecretFile>,
}

impl Receiver {
    /// Creates the slot `slot` if it is missing, then streams from where the
    /// slot stands (or the newest segment in `wal`) into `wal`.
    pub fn start(conn: &Connection, wal: &Path, slot: &str) -> Result<Receiver> {
        check_slot(slot)?;
        std::fs::create_dir_all(wal).map_err(|e| DbError::io(wal.display().to_string(), e))?;
        let pg = Libpq::new(conn)?;
        // Reserved now (`pg_receivewal --create-slot` reserves nothing until
        // it first streams, and then starts at the server's position: a base
        // backup begun before that would miss its first segment).
        let mut create = pg.command("psql", "");
        create
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "--no-password",
                "-d",
                "replication=true",
            ])
            .arg("-c")
            .arg(format!(
                "CREATE_REPLICATION_SLOT \"{slot}\" PHYSICAL RESERVE_WAL"
            ));
        match run_capture(create, "psql (creating the replication slot)") {
            Ok(_) => {}
            Err(e) if e.contains("already exists") => {}
            Err(e) => return Err(fail(e)),
        }
        let mut cmd = pg.command("pg_receivewal", "");
        cmd.args(["--no-loop", "--synchronous", "--no-password"])
            .arg(format!("--slot={slot}"))
            .arg("--directory")
            .arg(wal);
        Ok(Receiver {
            child: Running::spawn(cmd, "pg_receivewal").map_err(fail)?,
            _pass: pg.into_passfile(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `Some` once the stream has ended, with why.
    pub fn ended(&mut self) -> Option<String> {
        self.child.ended()
    }
}

/// Takes a base backup into `into` (created; must not exist). Its WAL is
/// left to the stream, whose slot keeps the server from dropping it.
pub fn base_backup(conn: &Connection, into: &Path) -> Result<()> {
    let pg = Libpq::new(conn)?;
    let mut cmd = pg.command("pg_basebackup", "");
    cmd.args([
        "--format=plain",
        "--wal-method=none",
        "--checkpoint=fast",
        "--no-password",
    ])
    .arg("--pgdata")
    .arg(into);
    run_capture(cmd, "pg_basebackup").map_err(fail)?;
    Ok(())
}

/// The base backups in `dir`, oldest first, as (unix end time, path).
pub fn bases(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let (Ok(t), true) = (name.parse::<i64>(), e.file_type()?.is_dir()) {
            if name.bytes().all(|b| b.is_ascii_digit()) {
                out.push((t, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The first WAL segment a base backup needs (from its `backup_label`).
pub fn base_start_segment(base: &Path) -> Option<String> {
    let label = std::fs::read_to_string(base.join("backup_label")).ok()?;
    let line = label
        .lines()
        .find(|l| l.starts_with("START WAL LOCATION"))?;
    let seg = line.split("(file ").nth(1)?.trim_end_matches(')').trim();
    is_segment(seg).then(|| seg.to_string())
}

/// A WAL segment's name: 24 hex digits (timeline, log, segment).
fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a WAL segment's file (complete or `.partial`).
pub fn segments_named(name: &str) -> bool {
    is_segment(name.trim_end_matches(".partial"))
}

/// The WAL segments in `dir` (a trailing `.partial` kept), by name.
pub fn segments(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if is_segment(name.trim_end_matches(".partial")) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The newest base backup that ended at or before `at`.
pub fn base_before(dir: &Path, at: i64) -> Result<PathBuf> {
    let all = bases(dir).map_err(|e| DbError::io(dir.display().to_string(), e))?;
    match all.iter().rev().find(|(t, _)| *t <= at) {
        Some((_, p)) => Ok(p.clone()),
        None => Err(DbError::Invalid(match all.first() {
            None => "the shipped WAL comes with no base backup yet: point in time starts once the agent's first base backup has shipped".into(),
            Some((t, _)) => format!(
                "the oldest shipped base backup ended at {}: a PostgreSQL database cannot be brought to an earlier moment",
                fmt_unix(*t)
            ),
        })),
    }
}

fn fmt_unix(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The `postgres` account's uid and gid, from /etc/passwd.
fn postgres_account() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| DbError::io("/etc/passwd".to_string(), e))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "postgres")
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            DbError::Invalid(
                "this server has no postgres account: install PostgreSQL's server package to restore to a moment".into(),
            )
        })
}

/// The `postgres` server binary of the base backup's major version.
fn server_binary(data: &Path) -> Result<PathBuf> {
    let version = std::fs::read_to_string(data.join("PG_VERSION"))
        .map_err(|e| DbError::io(format!("{}/PG_VERSION", data.display()), e))?;
    let version = version.trim();
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(DbError::Invalid(format!(
            "the base backup's PG_VERSION {version:?} is not a version"
        )));
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin/postgres"));
    if debian.is_file() {
        return Ok(debian);
    }
    if let Ok(dir) = run_capture(
        {
            let mut c = Command::new("pg_config");
            c.arg("--bindir");
            c
        },
        "pg_config",
    ) {
        let p = Path::new(dir.trim()).join("postgres");
        let same = run_capture(
            {
                let mut c = Command::new(&p);
                c.arg("--version");
                c
            },
            "postgres --version",
        )
        .is_ok_and(|v| {
            v.split_whitespace()
                .nth(2)
                .is_some_and(|n| n.split('.').next() == Some(version))
        });
        if same {
            return Ok(p);
        }
    }
    Err(DbError::Invalid(format!(
        "the base backup is from PostgreSQL {version}: install that version's server package (postgresql-{version}) to restore it to a moment"
    )))
}

/// What a recovery replayed.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    /// The moment replayed up to (exclusive), unix seconds.
    pub until: i64,
    /// The base backup's end (unix seconds).
    pub base: i64,
    /// No commit after the moment had been shipped: everything shipped
    /// was replayed, and the stream was alive at the moment.
    pub to_end: bool,
}

/// A throwaway server on a recovered copy of the cluster, listening on a
/// socket in its scratch directory only. Stopped (fast shutdown) on drop.
pub struct Recovered {
    child: Option<Child>,
    pub conn: Connection,
    pub report: RecoveryReport,
}

/// Recovers the cluster in `work` (a scratch directory holding `base`, a
/// base backup, and `wal`, the shipped segments) up to the moment `stop_at`
/// (unix seconds; commits from then on are not applied) and starts it.
/// `alive_at` is when the shipped stream was last seen running: should the
/// WAL hold no commit after the moment, the recovery runs to its end, which
/// is the moment only if the stream was running then.
pub fn recover(
    work: &Path,
    base: &Path,
    wal: &Path,
    stop_at: i64,
    alive_at: Option<i64>,
) -> Result<Recovered> {
    let io = |what: &Path, e: std::io::Error| DbError::io(what.display().to_string(), e);
    let restore_fail = |cause: String| DbError::Restore {
        engine: Engine::Postgres,
        database: String::new(),
        cause,
    };
    let (uid, gid) = postgres_account()?;
    let server = server_binary(base)?;
    let base_end = base
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // The stream's newest segment is still growing: the server reads it whole.
    for seg in segments(wal).map_err(|e| io(wal, e))? {
        if let Some(full) = seg.strip_suffix(".partial") {
            if wal.join(full).exists() {
                std::fs::remove_file(wal.join(&seg)).map_err(|e| io(wal, e))?;
            } else {
                std::fs::rename(wal.join(&seg), wal.join(full)).map_err(|e| io(wal, e))?;
            }
        }
    }
    for stale in ["postmaster.pid", "postmaster.opts", "standby.signal"] {
        let _ = std::fs::remove_file(base.join(stale));
    }
    std::fs::write(base.join("recovery.signal"), "").map_err(|e| io(base, e))?;
    // Settings a base backup carries (archive_command, primary_conninfo,
    // includes of /etc files) belong to the live server, not to this one.
    std::fs::write(base.join("postgresql.auto.conf"), "").map_err(|e| io(base, e))?;
    let hba = work.join("hba.conf");
    std::fs::write(&hba, "local all all trust\n").map_err(|e| io(&hba, e))?;
    let quote = |p: &Path| p.display().to_string().replace('\'', "''");
    let target = chrono::DateTime::from_timestamp(stop_at, 0)
        .ok_or_else(|| DbError::Invalid(format!("{stop_at} is not a time")))?
        .format("%Y-%m-%d %H:%M:%S+00")
        .to_string();
    let write_conf = |with_target: bool| -> Result<()> {
        let mut conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = 5432\n\
             hba_file = '{}'\nrestore_command = 'cp \"{}/%f\" \"%p\"'\n\
             recovery_target_action = 'promote'\nhot_standby = off\narchive_mode = off\n\
             jit = off\nshared_buffers = '32MB'\nlogging_collector = off\nfsync = off\n",
            quote(work),
            quote(&hba),
            quote(wal).replace('"', ""),
        );
        if with_target {
            conf +=
                &format!("recovery_target_time = '{target}'\nrecovery_target_inclusive = off\n");
        }
        let p = base.join("postgresql.conf");
        std::fs::write(&p, conf).map_err(|e| io(&p, e))
    };
    write_conf(true)?;
    chown_tree(work, uid, gid).map_err(|e| io(work, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(base, e))?;
    }
    let conn = Connection {
        socket: Some(work.to_path_buf()),
        user: Some("postgres".into()),
        ..Default::default()
    };
    let log = work.join("recovery.log");
    let start = || -> Result<Child> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| io(&log, e))?;
        Command::new(&server)
            .arg("-D")
            .arg(base)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| {
                restore_fail(format!(
                    "cannot start {} as the postgres account: {e}",
                    server.display()
                ))
            })
    };
    let mut recovered = Recovered {
        child: Some(start()?),
        conn,
        report: RecoveryReport {
            until: stop_at,
            base: base_end,
            to_end: false,
        },
    };
    loop {
        let exited = recovered
            .child
            .as_mut()
            .expect("running")
            .try_wait()
            .map_err(|e| restore_fail(format!("waiting for the recovery server: {e}")))?;
        if let Some(status) = exited {
            recovered.child = None;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let short =
                text.contains("recovery ended before configured recovery target was reached");
            if short && !recovered.report.to_end {
                // No commit after the moment was shipped: all of it is older.
                match alive_at {
                    Some(t) if t >= stop_at => {}
                    _ => {
                        return Err(DbError::Invalid(format!(
                            "the shipped WAL ends before {}{}: the stream was not running then, so later commits may be missing",
                            fmt_unix(stop_at),
                            alive_at
                                .map(|t| format!(" (the stream was last seen at {})", fmt_unix(t)))
                                .unwrap_or_default()
                        )))
                    }
                }
                write_conf(false)?;
                recovered.report.to_end = true;
                recovered.child = Some(start()?);
                continue;
            }
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let shipped = segments(wal).unwrap_or_default();
            return Err(restore_fail(format!(
                "the recovery server stopped ({status}); the shipped WAL holds {}: {}",
                match (shipped.first(), shipped.last()) {
                    (Some(a), Some(b)) => format!("{} segments, {a} to {b}", shipped.len()),
                    _ => "no segment".into(),
                },
                tail.join("\n")
            )));
        }
        let pg = Libpq::new(&recovered.conn)?;
        if let Ok(out) = pg.psql("postgres", "SELECT pg_is_in_recovery()") {
            if out.trim() == "f" {
                return Ok(recovered);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            chown_tree(&e.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

impl Recovered {
    /// Dumps `database` from the recovered server and loads it into
    /// `target` (created when missing; its tables replaced).
    pub fn copy_database(&self, database: &str, target: &Connection) -> Result<()> {
        let source = self.conn.with_database(database);
        let pg = Libpq::new(&source)?;
        let exists = pg
            .psql(
                "postgres",
                &format!(
                    "SELECT 1 FROM pg_database WHERE datname = '{}'",
                    database.replace('\'', "''")
                ),
            )
            .map_err(fail)?;
        if exists.trim() != "1" {
            return Err(DbError::Invalid(format!(
                "database {database:?} did not exist at that moment"
            )));
        }
        let mut cmd = pg.command("pg_dump", database);
        cmd.args([
            "--format=custom",
            "--compress=0",
            "--no-owner",
            "--no-privileges",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot run pg_dump: {e}")))?;
        let stderr = StderrTail::collect(child.stderr.take().expect("piped"));
        let mut out = child.stdout.take().expect("piped");
        let loaded = crate::postgres::restore(target, &[], &[], &mut out);
        drop(out);
        if loaded.is_err() {
            let _ = child.kill();
        }
        let dumped = crate::finish_child(child, stderr, "pg_dump (from the recovered server)");
        loaded?;
        dumped.map_err(fail)
    }
}

impl Drop for Recovered {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fast shutdown: the postmaster takes its children with it.
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            for _ in 0..150 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_segments_are_read_by_name() {
        let d = tempfile::tempdir().unwrap();
        let base = base_dir(d.path());
        for t in ["1700000000", "1700086400", "notes", "1700172800x"] {
            std::fs::create_dir_all(base.join(t)).unwrap();
        }
        std::fs::write(
            base.join("1700086400/backup_label"),
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n",
        )
        .unwrap();
        let all = bases(&base).unwrap();
        assert_eq!(
            all.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            [1_700_000_000, 1_700_086_400]
        );
        assert!(base_before(&base, 1_700_086_399)
            .unwrap()
            .ends_with("1700000000"));
        assert!(base_before(&base, 1_800_000_000)
            .unwrap()
            .ends_with("1700086400"));
        let e = base_before(&base, 1_600_000_000).unwrap_err().to_string();
        assert!(e.contains("oldest shipped base backup"), "{e}");
        assert_eq!(
            base_start_segment(&base.join("1700086400")).as_deref(),
            Some("000000010000000000000002")
        );
        let wal = wal_dir(d.path());
        std::fs::create_dir_all(&wal).unwrap();
        for f in [
            "000000010000000000000003.partial",
            "000000010000000000000002",
            "00000002.history",
            "x",
        ] {
            std::fs::write(wal.join(f), b"").unwrap();
        }
        assert_eq!(
            segments(&wal).unwrap(),
            [
                "000000010000000000000002",
                "000000010000000000000003.partial"
            ]
        );
        assert!(check_slot("cairn").is_ok());
        for bad in ["", "Cairn", "a-b", "x'; DROP"] {
            assert!(check_slot(bad).is_err(), "{bad}");
        }
        let e = base_before(&d.path().join("none"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no base backup yet"), "{e}");
    }
}
