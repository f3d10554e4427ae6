//! The PostgreSQL write-ahead log stream (DB-4): with `[wal]` in agent.toml,
//! a thread keeps `pg_receivewal` streaming into `spool/wal`, takes a base
//! backup into `spool/base/<end>` every `base_every`, and removes base
//! backups older than `keep` with the WAL only they needed. The spool lies
//! inside the binary log spool, so one shipment carries both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use cairn_dump::wal::{self, Receiver};
use cairn_proto::agent::v1 as pb;
use tokio::sync::watch;

use crate::config::{parse_duration, WalConfig};

/// Where the stream writes: inside the shipped binary log spool.
pub fn spool(state_dir: &Path) -> PathBuf {
    crate::binlog::spool(state_dir).join("postgres")
}

pub fn off() -> pb::BinlogState {
    pb::BinlogState {
        state: "off".into(),
        detail: format!(
            "the agent streams no PostgreSQL WAL (no [wal] section in agent.toml): {}",
            wal::ENABLE_HINT
        ),
        format: String::new(),
    }
}

/// Starts the stream's thread; its state is published on the returned channel.
pub fn start(cfg: Option<WalConfig>, state_dir: &Path) -> watch::Receiver<pb::BinlogState> {
    let (tx, rx) = watch::channel(off());
    if let Some(cfg) = cfg {
        let state_dir = state_dir.to_path_buf();
        std::thread::Builder::new()
            .name("wal".into())
            .spawn(move || run(&cfg, &state_dir, &tx))
            .expect("spawning the wal thread");
    }
    rx
}

fn set(tx: &watch::Sender<pb::BinlogState>, state: &str, detail: String) {
    let next = pb::BinlogState {
        state: state.into(),
        detail,
        format: String::new(),
    };
    if *tx.borrow() != next {
        match state {
            "streaming" => tracing::info!(detail = %next.detail, "WAL streaming"),
            _ => tracing::warn!(detail = %next.detail, "WAL not streaming"),
        }
        tx.send_replace(next);
    }
}

fn run(cfg: &WalConfig, state_dir: &Path, tx: &watch::Sender<pb::BinlogState>) {
    let mut backoff = Duration::from_secs(2);
    loop {
        match stream_once(cfg, state_dir, tx) {
            Ok(()) => backoff = Duration::from_secs(2),
            Err(why) => set(tx, "unavailable", format!("{why}; {}", wal::ENABLE_HINT)),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One stream, until `pg_receivewal` exits.
fn stream_once(
    cfg: &WalConfig,
    state_dir: &Path,
    tx: &watch::Sender<pb::BinlogState>,
) -> Result<(), String> {
    let conn = cfg.connection().map_err(|e| e.to_string())?;
    let keep = parse_duration(&cfg.keep).map_err(|e| e.to_string())?;
    let base_every = parse_duration(&cfg.base_every).map_err(|e| e.to_string())?;
    let spool = spool(state_dir);
    let wal_dir = wal::wal_dir(&spool);
    let incoming = incoming(state_dir);
    let pid_file = state_dir.join("wal.pid");
    crate::binlog::stop_orphan(&pid_file, &["pg_receivewal"], &|args| {
        args.windows(2)
            .any(|w| w[0] == "--directory" && Path::new(&w[1]) == incoming)
    });
    let mut receiver = Receiver::start(&conn, &incoming, &cfg.slot).map_err(|e| e.to_string())?;
    if let Err(e) = std::fs::write(&pid_file, receiver.pid().to_string()) {
        tracing::warn!(file = %pid_file.display(), error = %e, "recording the stream's pid");
    }
    set(
        tx,
        "streaming",
        format!("streaming WAL through replication slot {}", cfg.slot),
    );
    let mut base = BaseRun(None);
    let mut last_alive = None::<Instant>;
    let mut last_prune = None::<Instant>;
    loop {
        if let Some(why) = receiver.ended() {
            return Err(why);
        }
        if let Err(e) = mirror(&incoming, &wal_dir) {
            return Err(format!("linking WAL into {}: {e}", wal_dir.display()));
        }
        if last_alive.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            mark_alive(&spool);
            last_alive = Some(Instant::now());
        }
        match base.0.take() {
            Some(h) if h.is_finished() => match h.join() {
                Ok(Ok(end)) => tracing::info!(end, "base backup taken"),
                Ok(Err(why)) => {
                    set(tx, "unavailable", format!("the base backup failed: {why}"));
                    return Err(format!("the base backup failed: {why}"));
                }
                Err(_) => return Err("the base backup thread panicked".into()),
            },
            Some(h) => base.0 = Some(h),
            None => {
                let newest = wal::bases(&wal::base_dir(&spool))
                    .ok()
                    .and_then(|b| b.last().map(|(t, _)| *t));
                if newest.is_none_or(|t| unix_now() - t >= base_every.as_secs() as i64) {
                    let (conn, state_dir) = (conn.clone(), state_dir.to_path_buf());
                    base.0 = Some(std::thread::spawn(move || take_base(&conn, &state_dir)));
                }
            }
        }
        if base.0.is_none() && last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            prune(&spool, &incoming, keep);
            last_prune = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where `pg_receivewal` writes. It renames a segment's `.partial` file
/// when the segment is complete, which a shipment listing the directory at
/// that moment would miss under both names; so it writes here, and the
/// shipped `wal/` gets hard links that are only ever added or replaced whole
/// (a `.partial` link is dropped only before a shipment, by [`settle`]).
fn incoming(state_dir: &Path) -> PathBuf {
    state_dir.join("wal-incoming")
}

/// Links every segment (and timeline history) of `incoming` into `wal`.
fn mirror(incoming: &Path, wal: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(wal)?;
    for e in std::fs::read_dir(incoming)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let wanted = wal::segments_named(&name) || name.ends_with(".history");
        if !wanted {
            continue;
        }
        let Ok(src) = e.metadata() else { continue };
        let dst = wal.join(&name);
        match std::fs::metadata(&dst) {
            Ok(m) if m.ino() == src.ino() => continue,
            Ok(_) | Err(_) => {
                // Replaced whole: a reader sees the old link or the new one.
                let tmp = wal.join(format!(".{name}.link"));
                let _ = std::fs::remove_file(&tmp);
                match std::fs::hard_link(e.path(), &tmp) {
                    Ok(()) => std::fs::rename(&tmp, &dst)?,
                    // Renamed by pg_receivewal meanwhile: next round.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
    }
    Ok(())
}

/// Before a shipment lists the spool: drops each `.partial` link whose
/// segment is complete, so no listing can miss a segment, and records that
/// the stream runs now if it does (what this shipment holds reaches now).
pub fn settle(state_dir: &Path) {
    let spool = spool(state_dir);
    if receiving(state_dir) {
        mark_alive(&spool);
    }
    let wal_dir = wal::wal_dir(&spool);
    let Ok(segments) = wal::segments(&wal_dir) else {
        return;
    };
    for s in &segments {
        if let Some(full) = s.strip_suffix(".partial") {
            if segments.iter().any(|o| o == full) {
                let _ = std::fs::remove_file(wal_dir.join(s));
            }
        }
    }
}

/// Whether this agent's `pg_receivewal` runs (its pid file names a live
/// one writing into the incoming directory).
fn receiving(state_dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(state_dir.join("wal.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let args = crate::binlog::process_args(pid);
    let dir = incoming(state_dir);
    args.first().is_some_and(|a| a.ends_with("pg_receivewal"))
        && args
            .windows(2)
            .any(|w| w[0] == "--directory" && Path::new(&w[1]) == dir)
}

/// A base backup in progress; a stream that ends waits for it, so two
/// never write the same temporary directory.
struct BaseRun(Option<std::thread::JoinHandle<Result<i64, String>>>);

impl Drop for BaseRun {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// Records that the stream runs now (whole file, through a rename).
fn mark_alive(spool: &Path) {
    let file = wal::alive_file(spool);
    let tmp = file.with_extension("tmp");
    let done =
        std::fs::write(&tmp, unix_now().to_string()).and_then(|_| std::fs::rename(&tmp, &file));
    if let Err(e) = done {
        tracing::warn!(file = %file.display(), error = %e, "recording the stream's progress");
    }
}

/// A base backup, taken beside the spool and moved in once complete, so a
/// shipment never carries half of one. Returns its end time.
fn take_base(conn: &cairn_dump::Connection, state_dir: &Path) -> Result<i64, String> {
    let (spool, tmp) = (&spool(state_dir), &state_dir.join("pgbase.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    wal::base_backup(conn, tmp).map_err(|e| e.to_string())?;
    let end = unix_now();
    // Usable only with the WAL from its start on: the stream must have it.
    let first = wal::base_start_segment(tmp)
        .ok_or_else(|| format!("{}: no readable backup_label", tmp.display()))?;
    let incoming = incoming(state_dir);
    // By log and segment number (a name's last 16 digits).
    let numbers = || -> Vec<String> {
        wal::segments(&incoming)
            .unwrap_or_default()
            .iter()
            .map(|s| s.trim_end_matches(".partial")[8..].to_string())
            .collect()
    };
    let first_number = &first[8..];
    let received = || numbers().iter().any(|n| n.as_str() >= first_number);
    let since = Instant::now();
    while !received() {
        if since.elapsed() > Duration::from_secs(60) {
            let _ = std::fs::remove_dir_all(tmp);
            return Err(format!(
                "the stream has not received WAL segment {first}, where the base backup starts, within 60 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !numbers().iter().any(|n| n.as_str() <= first_number) {
        let _ = std::fs::remove_dir_all(tmp);
        return Err(format!(
            "the stream began after WAL segment {first}, where the base backup starts: the next one will be usable"
        ));
    }
    let dir = wal::base_dir(spool);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let into = dir.join(end.to_string());
    std::fs::rename(tmp, &into).map_err(|e| format!("{}: {e}", into.display()))?;
    Ok(end)
}

/// Removes base backups that ended more than `keep` ago (the newest older
/// one stays: it reaches back to `keep`), then the WAL no kept base needs.
fn prune(spool: &Path, incoming: &Path, keep: Duration) {
    let dir = wal::base_dir(spool);
    let Ok(all) = wal::bases(&dir) else { return };
    let cutoff = unix_now() - keep.as_secs() as i64;
    // The newest base at or before the cutoff, and all after it, stay.
    let first_kept = all.iter().rposition(|(t, _)| *t <= cutoff).unwrap_or(0);
    for (t, p) in &all[..first_kept] {
        match std::fs::remove_dir_all(p) {
            Ok(()) => tracing::info!(base = t, "old base backup removed from the spool"),
            Err(e) => tracing::warn!(base = t, error = %e, "removing an old base backup"),
        }
    }
    let Some(start) = all
        .get(first_kept)
        .and_then(|(_, p)| wal::base_start_segment(p))
    else {
        return;
    };
    for dir in [wal::wal_dir(spool), incoming.to_path_buf()] {
        let Ok(segments) = wal::segments(&dir) else {
            continue;
        };
        // Names order by timeline first; the log and segment numbers decide.
        for s in segments {
            if s[8..24] < start[8..] {
                if let Err(e) = std::fs::remove_file(dir.join(&s)) {
                    tracing::warn!(segment = %s, error = %e, "removing an old WAL segment");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_what_reaches_back_to_keep() {
        let d = tempfile::tempdir().unwrap();
        let spool = d.path();
        let now = unix_now();
        let day = 86_400;
        let base = wal::base_dir(spool);
        for (age, seg) in [(5 * day, 2), (3 * day, 5), (day, 9), (0, 12)] {
            let p = base.join((now - age).to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(
                p.join("backup_label"),
                format!(
                    "START WAL LOCATION: 0/0 (file {:024X})\n",
                    (1u128 << 64) | seg
                ),
            )
            .unwrap();
        }
        let wal_dir = wal::wal_dir(spool);
        std::fs::create_dir_all(&wal_dir).unwrap();
        for seg in 1..=13u128 {
            let name = format!("{:024X}", (1u128 << 64) | seg);
            let name = if seg == 13 {
                format!("{name}.partial")
            } else {
                name
            };
            std::fs::write(wal_dir.join(name), b"").unwrap();
        }
        prune(
            spool,
            &d.path().join("none"),
            Duration::from_secs(2 * day as u64),
        );
        let left: Vec<i64> = wal::bases(&base)
            .unwrap()
            .iter()
            .map(|(t, _)| now - t)
            .collect();
        assert_eq!(left, [3 * day, day, 0], "the base older than keep stays");
        let segs = wal::segments(&wal_dir).unwrap();
        assert_eq!(segs.first().unwrap(), "000000010000000000000005");
        assert_eq!(segs.len(), 9);
    }

    #[test]
    fn the_shipped_wal_never_loses_a_segment_to_a_rename() {
        let d = tempfile::tempdir().unwrap();
        let incoming = incoming(d.path());
        let wal_dir = wal::wal_dir(&spool(d.path()));
        std::fs::create_dir_all(&incoming).unwrap();
        let seg = "000000010000000000000007";
        let partial = format!("{seg}.partial");
        std::fs::write(incoming.join(&partial), b"half").unwrap();
        mirror(&incoming, &wal_dir).unwrap();
        assert_eq!(
            wal::segments(&wal_dir).unwrap(),
            std::slice::from_ref(&partial)
        );
        // pg_receivewal completes the segment: the shipped name stays until
        // a shipment settles, and the complete one is added beside it.
        std::fs::rename(incoming.join(&partial), incoming.join(seg)).unwrap();
        assert_eq!(
            wal::segments(&wal_dir).unwrap(),
            std::slice::from_ref(&partial)
        );
        mirror(&incoming, &wal_dir).unwrap();
        assert_eq!(
            wal::segments(&wal_dir).unwrap(),
            [seg.to_string(), partial.clone()]
        );
        settle(d.path());
        assert_eq!(wal::segments(&wal_dir).unwrap(), [seg]);
        // A partial file written anew replaces its link whole.
        let next = "000000010000000000000008.partial";
        std::fs::write(incoming.join(next), b"a").unwrap();
        mirror(&incoming, &wal_dir).unwrap();
        std::fs::remove_file(incoming.join(next)).unwrap();
        std::fs::write(incoming.join(next), b"b").unwrap();
        mirror(&incoming, &wal_dir).unwrap();
        assert_eq!(std::fs::read(wal_dir.join(next)).unwrap(), b"b");
    }
}
