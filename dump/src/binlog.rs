//! Point in time for MariaDB/MySQL (DB-4, RST-2).
//!
//! The agent streams the server's binary log with `mariadb-binlog
//! --read-from-remote-server --raw --stop-never` into a spool directory and
//! ships that directory into the repository every few seconds. A dump taken
//! with the binary log on records where it stands in the log
//! ([`BinlogPosition`], from `--master-data=2`, which MariaDB answers from
//! the transaction's own snapshot without a global lock). A restore to a
//! moment loads the newest dump before it and [`replay`]s the log from the
//! dump's position up to that moment, keeping only the events of the site's
//! own database.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use crate::mysql::Client;
use crate::{finish_child, Connection, DbError, Engine, Result, Running, StderrTail};

/// A place in a server's binary log: the file and the byte offset of the
/// next event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub file: String,
    pub position: u64,
}

impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.position)
    }
}

/// What a server's binary log allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLog {
    pub enabled: bool,
    /// ROW, MIXED or STATEMENT.
    pub format: String,
    /// Where the server writes now (with the log on and the right to ask).
    pub current: Option<BinlogPosition>,
}

/// How an operator turns point-in-time restores on for a MariaDB/MySQL server.
pub const ENABLE_HINT: &str = "turn the binary log on (log_bin, binlog_format = ROW and server_id in the [mariadbd] section of the server's my.cnf, then restart it) and give the agent a [binlog] section in agent.toml with a user that has REPLICATION SLAVE, BINLOG MONITOR, BINLOG REPLAY and write rights on the sites' databases";

/// Asks the server whether its binary log is on, in which format, and
/// where it writes now.
pub fn server_log(conn: &Connection) -> Result<ServerLog> {
    let client = Client::new(conn)?;
    let fail = |cause: String| DbError::Dump {
        engine: Engine::Mariadb,
        database: conn.database.clone(),
        cause,
    };
    let out = client
        .query(None, "SELECT @@log_bin, @@binlog_format")
        .map_err(fail)?;
    let mut f = out.trim().split('\t');
    let enabled = f.next() == Some("1");
    let format = f.next().unwrap_or("").to_string();
    let current = if enabled {
        let out = client.query(None, "SHOW MASTER STATUS").map_err(fail)?;
        let mut f = out.trim().split('\t');
        match (f.next(), f.next().and_then(|p| p.parse().ok())) {
            (Some(file), Some(position)) if !file.is_empty() => Some(BinlogPosition {
                file: file.to_string(),
                position,
            }),
            _ => None,
        }
    } else {
        None
    };
    Ok(ServerLog {
        enabled,
        format,
        current,
    })
}

/// `mariadb-binlog` streaming a server's binary log into a directory, one
/// file per server log file, until it is stopped or the server goes away.
pub struct Streamer {
    child: Running,
    _client: Client,
}

impl Streamer {
    /// Streams from the start of `from_file` into `spool` (a file already
    /// there is written again from its start, with the same bytes).
    /// `server_id` must differ from every server and replica's.
    pub fn start(
        conn: &Connection,
        spool: &Path,
        from_file: &str,
        server_id: u32,
    ) -> Result<Streamer> {
        check_log_name(from_file)?;
        let client = Client::new(conn)?;
        let mut cmd = client.command(&["mariadb-binlog", "mysqlbinlog"]);
        cmd.args([
            "--read-from-remote-server",
            "--raw",
            "--stop-never",
            &format!("--stop-never-slave-server-id={server_id}"),
        ])
        // The output prefix: a directory, so the files keep the server's names.
        .arg(format!("--result-file={}/", spool.display()))
        .arg(from_file);
        let child = Running::spawn(cmd, "mariadb-binlog").map_err(DbError::Invalid)?;
        Ok(Streamer {
            child,
            _client: client,
        })
    }

    /// The stream's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `Some` once the stream has ended, with why.
    pub fn ended(&mut self) -> Option<String> {
        self.child.ended()
    }
}

/// The binary log files in a directory, oldest first (`NAME.000123`).
pub fn log_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut files: Vec<(String, String, u64)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_file() {
            continue;
        }
        if let Some((base, n)) = split_log_name(&name) {
            files.push((name.clone(), base.to_string(), n));
        }
    }
    files.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
    Ok(files.into_iter().map(|(name, _, _)| name).collect())
}

/// `binlog.000042` → (`binlog`, 42).
fn split_log_name(name: &str) -> Option<(&str, u64)> {
    let (base, n) = name.rsplit_once('.')?;
    if base.is_empty() || n.len() < 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, n.parse().ok()?))
}

fn check_log_name(name: &str) -> Result<()> {
    if split_log_name(name).is_none() || name.contains('/') || name.starts_with('-') {
        return Err(DbError::Invalid(format!(
            "{name:?} is not a binary log file name"
        )));
    }
    Ok(())
}

/// The files of `dir` a replay from `from` reads: `from.file` and each one
/// after it, with no number missing.
pub fn replay_files(dir: &Path, from: &BinlogPosition) -> Result<Vec<PathBuf>> {
    check_log_name(&from.file)?;
    let all = log_files(dir).map_err(|e| DbError::io(dir.display().to_string(), e))?;
    let Some(start) = all.iter().position(|f| *f == from.file) else {
        return Err(DbError::Invalid(format!(
            "the binary log from the dump's position {from} was not shipped (shipped: {}); \
             point in time is possible from the first dump taken after shipping began",
            match (all.first(), all.last()) {
                (Some(a), Some(b)) => format!("{a} to {b}"),
                _ => "nothing".into(),
            }
        )));
    };
    let files = &all[start..];
    for pair in files.windows(2) {
        let (a, b) = (split_log_name(&pair[0]), split_log_name(&pair[1]));
        if let (Some((ba, na)), Some((bb, nb))) = (a, b) {
            if ba != bb || nb != na + 1 {
                return Err(DbError::Invalid(format!(
                    "the shipped binary log has a gap between {} and {}",
                    pair[0], pair[1]
                )));
            }
        }
    }
    Ok(files.iter().map(|f| dir.join(f)).collect())
}

/// What a replay applied.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub files: usize,
    pub from: String,
    /// The moment replayed up to (exclusive), unix seconds.
    pub until: i64,
}

/// Applies the events of `source_database` in the binary log files of
/// `dir`, from `from` up to (not including) the moment `stop_at` (unix
/// seconds), to `conn.database` (renamed from `source_database` when they
/// differ). The log's row events need a user with BINLOG REPLAY (or SUPER):
/// `conn` is the agent's binary log connection, not the site's.
pub fn replay(
    conn: &Connection,
    source_database: &str,
    dir: &Path,
    from: &BinlogPosition,
    stop_at: i64,
) -> Result<ReplayReport> {
    let fail = |cause: String| DbError::Restore {
        engine: Engine::Mariadb,
        database: conn.database.clone(),
        cause,
    };
    crate::mysql::check_name("database", source_database)?;
    crate::mysql::check_name("database", &conn.database)?;
    let files = replay_files(dir, from)?;
    let stop = chrono::DateTime::from_timestamp(stop_at, 0)
        .ok_or_else(|| DbError::Invalid(format!("{stop_at} is not a time")))?
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut reader =
        std::process::Command::new(crate::find_tool(&["mariadb-binlog", "mysqlbinlog"]));
    reader
        .arg("--no-defaults")
        .arg(format!("--database={source_database}"))
        .arg(format!("--start-position={}", from.position))
        .arg(format!("--stop-datetime={stop}"));
    if conn.database != source_database {
        reader.arg(format!("--rewrite-db={source_database}->{}", conn.database));
    }
    // --stop-datetime is read in the local time zone: UTC here, as `stop` is.
    reader
        .args(&files)
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut reader = reader
        .spawn()
        .map_err(|e| fail(format!("cannot run mariadb-binlog or mysqlbinlog: {e}")))?;
    let reader_err = StderrTail::collect(reader.stderr.take().expect("piped"));
    let events = reader.stdout.take().expect("piped");
    let client = Client::new(conn)?;
    let mut apply = client.command(&["mariadb", "mysql"]);
    apply
        .args(["--batch", "--max-allowed-packet=1G"])
        .arg(&conn.database)
        .stdin(Stdio::from(events))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut applier = match apply.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = reader.kill();
            let _ = reader.wait();
            return Err(fail(format!("cannot run mariadb or mysql: {e}")));
        }
    };
    let applier_err = StderrTail::collect(applier.stderr.take().expect("piped"));
    let applied = finish_child(applier, applier_err, "mariadb (applying the binary log)");
    if applied.is_err() {
        let _ = reader.kill();
    }
    let read = finish_child(reader, reader_err, "mariadb-binlog");
    // The applier's error names the statement; the reader's names the file.
    applied.map_err(fail)?;
    read.map_err(fail)?;
    Ok(ReplayReport {
        files: files.len(),
        from: from.to_string(),
        until: stop_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_sort_by_number_and_gaps_are_named() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "binlog.000009",
            "binlog.000010",
            "binlog.000011",
            "notes.txt",
            "binlog.index",
        ] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        assert_eq!(
            log_files(d.path()).unwrap(),
            ["binlog.000009", "binlog.000010", "binlog.000011"]
        );
        let from = |f: &str| BinlogPosition {
            file: f.into(),
            position: 4,
        };
        assert_eq!(
            replay_files(d.path(), &from("binlog.000010"))
                .unwrap()
                .len(),
            2
        );
        let e = replay_files(d.path(), &from("binlog.000003"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("binlog.000009 to binlog.000011"), "{e}");
        std::fs::remove_file(d.path().join("binlog.000010")).unwrap();
        let e = replay_files(d.path(), &from("binlog.000009"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gap between binlog.000009 and binlog.000011"),
            "{e}"
        );
        for bad in ["../etc.000001", "-x.000001", "binlog", "binlog.12"] {
            assert!(replay_files(d.path(), &from(bad)).is_err(), "{bad}");
        }
    }
}
