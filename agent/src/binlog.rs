//! The binary log stream (DB-4): with `[binlog]` in agent.toml, a thread
//! keeps `mariadb-binlog` streaming the server's log into
//! `state_dir/binlog`, restarts it when it ends, and removes files older
//! than `keep`. The controller ships the directory every few seconds as a
//! `binlog` backup; the state here travels to it in [`pb::BinlogState`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cairn_dump::binlog::{self, Streamer};
use cairn_dump::Connection;
use cairn_proto::agent::v1 as pb;
use tokio::sync::watch;

use crate::config::{parse_duration, BinlogConfig};

/// Where the stream writes: the directory a `binlog` backup ships.
pub fn spool(state_dir: &Path) -> PathBuf {
    state_dir.join("binlog")
}

pub fn off() -> pb::BinlogState {
    pb::BinlogState {
        state: "off".into(),
        detail: format!(
            "the agent streams no binary log (no [binlog] section in agent.toml): {}",
            binlog::ENABLE_HINT
        ),
        format: String::new(),
    }
}

/// Starts the stream's thread; its state is published on the returned channel.
pub fn start(cfg: Option<BinlogConfig>, state_dir: &Path) -> watch::Receiver<pb::BinlogState> {
    let (tx, rx) = watch::channel(off());
    if let Some(cfg) = cfg {
        let dir = spool(state_dir);
        std::thread::Builder::new()
            .name("binlog".into())
            .spawn(move || run(&cfg, &dir, &tx))
            .expect("spawning the binlog thread");
    }
    rx
}

fn set(tx: &watch::Sender<pb::BinlogState>, state: &str, detail: String, format: &str) {
    let next = pb::BinlogState {
        state: state.into(),
        detail,
        format: format.into(),
    };
    if *tx.borrow() != next {
        match state {
            "streaming" => tracing::info!(detail = %next.detail, "binary log streaming"),
            _ => tracing::warn!(detail = %next.detail, "binary log not streaming"),
        }
        tx.send_replace(next);
    }
}

fn run(cfg: &BinlogConfig, dir: &Path, tx: &watch::Sender<pb::BinlogState>) {
    let keep = parse_duration(&cfg.keep).unwrap_or(Duration::from_secs(8 * 86_400));
    let mut backoff = Duration::from_secs(2);
    loop {
        match stream_once(cfg, dir, keep, tx) {
            Ok(()) => backoff = Duration::from_secs(2),
            Err(why) => set(tx, "unavailable", why, ""),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// One stream, from where the spool ends (or the server's current file)
/// until `mariadb-binlog` exits.
fn stream_once(
    cfg: &BinlogConfig,
    dir: &Path,
    keep: Duration,
    tx: &watch::Sender<pb::BinlogState>,
) -> Result<(), String> {
    let conn = cfg.connection().map_err(|e| e.to_string())?;
    let log = binlog::server_log(&conn).map_err(|e| format!("{e}; {}", binlog::ENABLE_HINT))?;
    if !log.enabled {
        return Err(format!(
            "the server's binary log is off: {}",
            binlog::ENABLE_HINT
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let have = binlog::log_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The last file may be incomplete: streamed again from its start.
    let from = match (have.last(), &log.current) {
        (Some(f), _) => f.clone(),
        (None, Some(c)) => c.file.clone(),
        (None, None) => {
            return Err(format!(
                "the server did not say where its binary log is (SHOW MASTER STATUS needs BINLOG MONITOR): {}",
                binlog::ENABLE_HINT
            ))
        }
    };
    let pid_file = dir.with_extension("pid");
    stop_orphan(&pid_file, &["mariadb-binlog", "mysqlbinlog"], &|args| {
        args.iter()
            .any(|a| *a == format!("--result-file={}/", dir.display()))
    });
    let mut streamer =
        Streamer::start(&conn, dir, &from, cfg.server_id).map_err(|e| e.to_string())?;
    if let Err(e) = std::fs::write(&pid_file, streamer.pid().to_string()) {
        tracing::warn!(file = %pid_file.display(), error = %e, "recording the stream's pid");
    }
    let detail = if log.format.eq_ignore_ascii_case("ROW") {
        format!("streaming from {from}")
    } else {
        format!(
            "streaming from {from}; binlog_format is {}: set it to ROW, or statements naming another database than their default one are replayed or skipped wrongly",
            log.format
        )
    };
    set(tx, "streaming", detail, &log.format);
    let mut last_prune = None::<std::time::Instant>;
    loop {
        if let Some(why) = streamer.ended() {
            return Err(why);
        }
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            prune(dir, keep);
            last_prune = Some(std::time::Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Kills a stream an earlier agent process left running (killed outside
/// systemd, whose stop takes the whole unit): two writers must never share
/// a spool. Only one of `tools` whose arguments `writes_here` is touched.
pub fn stop_orphan(pid_file: &Path, tools: &[&str], writes_here: &dyn Fn(&[String]) -> bool) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let raw = pid.as_raw_nonzero().get();
    let args = process_args(raw as u32);
    let ours = args
        .first()
        .is_some_and(|a| tools.iter().any(|t| a.ends_with(t)))
        && writes_here(&args);
    if ours {
        match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
            Ok(()) => tracing::warn!(pid = raw, "stopped a log stream left by an earlier agent"),
            Err(e) => {
                tracing::warn!(pid = raw, error = %e, "stopping a log stream left by an earlier agent")
            }
        }
    }
}

/// A process's arguments (none once it has exited).
pub fn process_args(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Removes log files last written more than `keep` ago; the newest two stay.
fn prune(dir: &Path, keep: Duration) {
    let Ok(files) = binlog::log_files(dir) else {
        return;
    };
    let cutoff = SystemTime::now() - keep;
    for f in files.iter().rev().skip(2) {
        let p = dir.join(f);
        let old = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if old {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(file = %f, "old binary log file removed from the spool"),
                Err(e) => tracing::warn!(file = %f, error = %e, "removing an old binary log file"),
            }
        }
    }
}

/// Whether a site's database is on the server the stream reads
/// (`default_port`: the engine's, 3306 or 5432).
pub fn covers(stream: &Connection, site: &Connection, default_port: u16) -> bool {
    let local = |c: &Connection| {
        c.host
            .as_deref()
            .is_none_or(|h| matches!(h, "" | "localhost" | "127.0.0.1" | "::1"))
    };
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    match (&stream.socket, &site.socket) {
        (Some(a), Some(b)) => same_file(a, b),
        _ if local(stream) && local(site) => {
            // A socket on one side: "localhost" reaches the default socket.
            stream.socket.is_some()
                || site.socket.is_some()
                || stream.port.unwrap_or(default_port) == site.port.unwrap_or(default_port)
        }
        _ => {
            stream.host == site.host
                && stream.port.unwrap_or(default_port) == site.port.unwrap_or(default_port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(host: Option<&str>, port: Option<u16>, socket: Option<&str>) -> Connection {
        Connection {
            host: host.map(Into::into),
            port,
            socket: socket.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn a_site_is_covered_only_on_the_streamed_server() {
        let sock = conn(None, None, Some("/run/mysqld/mysqld.sock"));
        assert!(covers(&sock, &conn(Some("localhost"), None, None), 3306));
        assert!(covers(
            &sock,
            &conn(None, None, Some("/run/mysqld/mysqld.sock")),
            3306
        ));
        assert!(!covers(
            &sock,
            &conn(None, None, Some("/run/other.sock")),
            3306
        ));
        assert!(!covers(
            &sock,
            &conn(Some("db.example.net"), None, None),
            3306
        ));
        let tcp = conn(Some("127.0.0.1"), Some(3307), None);
        assert!(covers(
            &tcp,
            &conn(Some("localhost"), Some(3307), None),
            3306
        ));
        assert!(!covers(&tcp, &conn(Some("localhost"), None, None), 3306));
        let remote = conn(Some("db.example.net"), None, None);
        assert!(covers(
            &remote,
            &conn(Some("db.example.net"), Some(3306), None),
            3306
        ));
        assert!(!covers(&remote, &conn(Some("localhost"), None, None), 3306));
    }
}
