//! The controller's clock. Real time by default; a simulation steps it by
//! writing unix seconds to a file named by `CAIRN_CLOCK_FILE`, so tests run
//! weeks of schedules through the real binaries in minutes. Everything that
//! decides by the wall clock (schedules, retention, job times, snapshot
//! times) reads [`now`]; storage ages (gc grace) stay on real time, since
//! the storage stamps them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

/// The variable naming a clock file (tests and simulations only).
pub const CLOCK_FILE_ENV: &str = "CAIRN_CLOCK_FILE";

enum Clock {
    System,
    /// Seconds read from a file; never goes back, so a torn or missing read
    /// repeats the last good value.
    File {
        path: PathBuf,
        last: AtomicI64,
    },
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

/// Chooses the clock from the environment; called once at startup.
pub fn install_from_env() -> anyhow::Result<()> {
    let clock = match std::env::var_os(CLOCK_FILE_ENV) {
        Some(p) if !p.is_empty() => {
            let path = PathBuf::from(p);
            let first = read(&path).ok_or_else(|| {
                anyhow::anyhow!(
                    "{CLOCK_FILE_ENV}={}: the file must hold unix seconds",
                    path.display()
                )
            })?;
            tracing::warn!(file = %path.display(), now = first, "running on a simulated clock");
            Clock::File {
                path,
                last: AtomicI64::new(first),
            }
        }
        _ => Clock::System,
    };
    let _ = CLOCK.set(clock);
    Ok(())
}

fn read(path: &std::path::Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Unix seconds, from the installed clock.
pub fn now() -> i64 {
    match CLOCK.get() {
        None | Some(Clock::System) => chrono::Utc::now().timestamp(),
        Some(Clock::File { path, last }) => {
            let t = read(path).unwrap_or(0);
            last.fetch_max(t, Ordering::Relaxed).max(t)
        }
    }
}

/// Whether time is simulated (the scheduler then polls more often).
pub fn simulated() -> bool {
    matches!(CLOCK.get(), Some(Clock::File { .. }))
}
