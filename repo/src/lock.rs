//! Repository locks: backups hold shared locks, gc an exclusive one.
//!
//! `locks/<random id>` is plaintext JSON `{"time","host","pid","exclusive"}`,
//! refreshed every 5 minutes while held; a lock not refreshed for 30 minutes,
//! or whose process is gone from this same host, is stale and ignored.
//! Backups never wait for each other; gc refuses to start while any backup
//! runs, and a backup waits (saying so) while gc runs, so gc never deletes a
//! pack a running backup dedups against.
//!
//! A controller holds a *lease*: a shared lock naming its `holder`, held for
//! as long as it runs. Maintenance from outside (`cairnctl repo gc|forget`)
//! is refused while it lives, with the fleet command to use instead: the
//! controller serves an index of the repository and must be the one that
//! deletes from it.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::storage::Storage;

const REFRESH: Duration = Duration::from_secs(300);
pub const STALE: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub time: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub pid: u32,
    pub exclusive: bool,
    /// A lease's holder ("controller https://…"); absent on plain locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

impl LockInfo {
    pub fn is_stale(&self) -> bool {
        let old = (chrono::Utc::now() - self.time)
            .to_std()
            .map(|age| age > STALE)
            .unwrap_or(false);
        // On this host a dead process's lock is stale at once: waiting 30
        // minutes for a crash to age out helps no one.
        let dead_here = !self.host.is_empty()
            && self.host == hostname()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists();
        old || dead_here
    }

    fn describe(&self, key: &str) -> String {
        match &self.holder {
            Some(h) => format!("lease {key} of {h} (pid {} on {})", self.pid, self.host),
            None => format!(
                "{} lock {key} held by pid {} on {} since {}",
                if self.exclusive {
                    "exclusive"
                } else {
                    "shared"
                },
                self.pid,
                self.host,
                self.time
            ),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The live lease of a controller on this repository, if any.
pub fn lease(storage: &dyn Storage) -> Result<Option<LockInfo>> {
    Ok(list(storage)?
        .into_iter()
        .map(|(_, l)| l)
        .find(|l| l.holder.is_some() && !l.is_stale()))
}

/// Refuses maintenance from outside while a controller holds the repository.
pub fn refuse_if_leased(storage: &dyn Storage, what: &str) -> Result<()> {
    match lease(storage)? {
        Some(l) => Err(Error::Leased {
            holder: l.holder.unwrap_or_default(),
            host: l.host,
            pid: l.pid,
            what: what.to_string(),
        }),
        None => Ok(()),
    }
}

pub struct Lock {
    storage: Arc<dyn Storage>,
    key: String,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

pub fn list(storage: &dyn Storage) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for o in storage.list("locks/")? {
        let Ok(bytes) = storage.get(&o.key) else {
            continue;
        };
        if let Ok(info) = serde_json::from_slice::<LockInfo>(&bytes) {
            out.push((o.key, info));
        }
    }
    Ok(out)
}

fn info(exclusive: bool, holder: &Option<String>) -> LockInfo {
    LockInfo {
        time: chrono::Utc::now(),
        host: hostname(),
        pid: std::process::id(),
        exclusive,
        holder: holder.clone(),
    }
}

/// How long a backup waits for a running gc before giving up.
pub const BACKUP_WAIT: Duration = Duration::from_secs(3600);

/// How often a waiting lock looks again.
const WAIT_POLL: Duration = Duration::from_secs(2);

impl Lock {
    pub fn acquire(storage: Arc<dyn Storage>, exclusive: bool) -> Result<Lock> {
        Lock::take(storage, exclusive, None)
    }

    /// A shared lock that names its holder, for as long as the holder runs
    /// (see the module docs).
    pub fn lease(storage: Arc<dyn Storage>, holder: &str) -> Result<Lock> {
        Lock::take(storage, false, Some(holder.to_string()))
    }

    /// Like [`Lock::acquire`], but waits up to `wait` for a conflicting lock
    /// to go, logging once what it waits for.
    pub fn acquire_waiting(
        storage: Arc<dyn Storage>,
        exclusive: bool,
        wait: Duration,
    ) -> Result<Lock> {
        let start = std::time::Instant::now();
        let mut told = false;
        loop {
            match Lock::acquire(storage.clone(), exclusive) {
                Err(Error::Locked(why)) if start.elapsed() < wait => {
                    if !told {
                        tracing::warn!(
                            "waiting up to {}s for the repository: {why}",
                            wait.as_secs()
                        );
                        told = true;
                    }
                    std::thread::sleep(WAIT_POLL);
                }
                other => return other,
            }
        }
    }

    fn take(storage: Arc<dyn Storage>, exclusive: bool, holder: Option<String>) -> Result<Lock> {
        let conflict = |key: &str| -> Result<Option<String>> {
            Ok(list(&*storage)?
                .into_iter()
                .filter(|(k, l)| k != key && !l.is_stale() && (exclusive || l.exclusive))
                .map(|(k, l)| l.describe(&k))
                .next())
        };
        if let Some(c) = conflict("")? {
            return Err(Error::Locked(c));
        }
        let key = format!("locks/{}", Id::random());
        storage.put(
            &key,
            &serde_json::to_vec(&info(exclusive, &holder)).unwrap(),
        )?;
        // Check again: another process may have locked between our look and our write.
        if let Some(c) = conflict(&key)? {
            let _ = storage.delete(&key);
            return Err(Error::Locked(c));
        }
        let (tx, rx) = mpsc::channel::<()>();
        let (s2, k2) = (storage.clone(), key.clone());
        let refresher = std::thread::Builder::new()
            .name("cairn-lock".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH) {
                    if let Err(e) =
                        s2.put(&k2, &serde_json::to_vec(&info(exclusive, &holder)).unwrap())
                    {
                        tracing::warn!(error = %e, "could not refresh repository lock");
                    }
                }
            })
            .expect("spawn lock refresher");
        Ok(Lock {
            storage,
            key,
            stop: Some(tx),
            refresher: Some(refresher),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Err(e) = self.storage.delete(&self.key) {
            tracing::warn!(error = %e, lock = %self.key, "could not remove repository lock");
        }
    }
}

/// Removes stale locks (or every lock with `all`). Returns how many.
pub fn unlock(storage: &dyn Storage, all: bool) -> Result<usize> {
    let mut n = 0;
    for (k, l) in list(storage)? {
        if all || l.is_stale() {
            storage.delete(&k)?;
            n += 1;
        }
    }
    Ok(n)
}
