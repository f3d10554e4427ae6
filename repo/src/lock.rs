//! Repository locks: backups hold shared locks, gc an exclusive one.
//!
//! `locks/<random id>` is plaintext JSON `{"time","host","pid","exclusive"}`,
//! refreshed every 5 minutes while held; a lock not refreshed for 30 minutes is
//! stale (its process died) and ignored. Backups never wait for each other;
//! gc refuses to start while any backup runs, and a backup refuses to start
//! while gc runs, so gc never deletes a pack a running backup dedups against.

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
}

impl LockInfo {
    pub fn is_stale(&self) -> bool {
        (chrono::Utc::now() - self.time)
            .to_std()
            .map(|age| age > STALE)
            .unwrap_or(false)
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

fn info(exclusive: bool) -> LockInfo {
    LockInfo {
        time: chrono::Utc::now(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        pid: std::process::id(),
        exclusive,
    }
}

impl Lock {
    pub fn acquire(storage: Arc<dyn Storage>, exclusive: bool) -> Result<Lock> {
        let conflict = |key: &str| -> Result<Option<String>> {
            Ok(list(&*storage)?
                .into_iter()
                .filter(|(k, l)| k != key && !l.is_stale() && (exclusive || l.exclusive))
                .map(|(k, l)| {
                    format!(
                        "{} lock {k} held by pid {} on {} since {}",
                        if l.exclusive { "exclusive" } else { "shared" },
                        l.pid,
                        l.host,
                        l.time
                    )
                })
                .next())
        };
        if let Some(c) = conflict("")? {
            return Err(Error::Locked(c));
        }
        let key = format!("locks/{}", Id::random());
        storage.put(&key, &serde_json::to_vec(&info(exclusive)).unwrap())?;
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
                    if let Err(e) = s2.put(&k2, &serde_json::to_vec(&info(exclusive)).unwrap()) {
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
