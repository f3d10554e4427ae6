//! Size and activity of a site (SPEC INT-2, INT-4): one parallel walk counts
//! the files and bytes a backup would read (excludes applied) and the files
//! modified in the last 24 hours; a per-domain history in the agent's state
//! dir keeps one sample a day, from which come the average daily changes and
//! the trend.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use cairn_repo::exclude::Excludes;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

const DAY: i64 = 86_400;
/// Days of samples kept on disk.
const KEEP_DAYS: usize = 30;
/// Days the average and the trend look back over.
const WINDOW_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Walk {
    pub files: u64,
    pub bytes: u64,
    /// Regular files whose mtime falls in the last 24 hours.
    pub changed_24h: u64,
}

impl std::ops::Add for Walk {
    type Output = Walk;
    fn add(self, o: Walk) -> Walk {
        Walk {
            files: self.files + o.files,
            bytes: self.bytes + o.bytes,
            changed_24h: self.changed_24h + o.changed_24h,
        }
    }
}

/// Walks `root` as a backup would (excluded directories are not entered,
/// symlinks are not followed); `now` is Unix seconds.
pub fn walk(root: &Path, excludes: &Excludes, now: i64) -> Walk {
    walk_dir(root, "", excludes, now - DAY)
}

fn walk_dir(dir: &Path, rel: &str, excludes: &Excludes, since: i64) -> Walk {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Walk::default();
    };
    let mut here = Walk::default();
    let mut subdirs: Vec<(PathBuf, String)> = Vec::new();
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        let rel_child = if rel.is_empty() {
            name.into_owned()
        } else {
            format!("{rel}/{name}")
        };
        if excludes.is_excluded(&rel_child, ft.is_dir()) {
            continue;
        }
        if ft.is_dir() {
            subdirs.push((e.path(), rel_child));
        } else if ft.is_file() {
            let Ok(m) = e.metadata() else { continue };
            here.files += 1;
            here.bytes += m.len();
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            if mtime >= since {
                here.changed_24h += 1;
            }
        }
    }
    here + subdirs
        .par_iter()
        .map(|(p, r)| walk_dir(p, r, excludes, since))
        .reduce(Walk::default, |a, b| a + b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    Rising,
    Stable,
    Falling,
}

impl Trend {
    pub fn as_str(self) -> &'static str {
        match self {
            Trend::Rising => "rising",
            Trend::Stable => "stable",
            Trend::Falling => "falling",
        }
    }
}

/// One day's analysis (the last of that day wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaySample {
    /// UTC day, YYYY-MM-DD.
    pub day: String,
    pub changes: u64,
    /// Requests in the 24 hours before the analysis; None without access logs.
    #[serde(default)]
    pub requests: Option<u64>,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first, one per day, at most [`KEEP_DAYS`].
    pub samples: Vec<DaySample>,
}

pub fn day_of(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn day_number(day: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp() / DAY)
}

/// `state_dir/activity/<domain>.json`; the name is made safe for a file name.
fn history_path(state_dir: &Path, domain: &str) -> PathBuf {
    let safe: String = domain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join("activity").join(format!("{safe}.json"))
}

impl History {
    /// The domain's history; empty when there is none yet or it is unreadable
    /// (a warning is logged: history is advice, never a reason to fail).
    pub fn load(state_dir: &Path, domain: &str) -> History {
        let path = history_path(state_dir, domain);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "activity history is corrupt; starting over");
                History::default()
            }),
            Err(_) => History::default(),
        }
    }

    /// Writes atomically (temp file, fsync, rename), 0600 in a 0700 dir.
    pub fn save(&self, state_dir: &Path, domain: &str) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let path = history_path(state_dir, domain);
        let dir = path.parent().expect("history path has a parent");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let json = serde_json::to_string_pretty(self).expect("history serializes");
        cairn_net::write_file(&path, &json, 0o600)
    }

    /// Adds today's sample, replacing an earlier one of the same day.
    pub fn record(&mut self, sample: DaySample) {
        self.samples.retain(|s| s.day != sample.day);
        self.samples.push(sample);
        self.samples.sort_by(|a, b| a.day.cmp(&b.day));
        let excess = self.samples.len().saturating_sub(KEEP_DAYS);
        self.samples.drain(..excess);
    }

    /// Samples of the [`WINDOW_DAYS`] days up to and including the latest.
    fn window(&self) -> Vec<&DaySample> {
        let Some(last) = self.samples.last().and_then(|s| day_number(&s.day)) else {
            return Vec::new();
        };
        self.samples
            .iter()
            .filter(|s| day_number(&s.day).is_some_and(|d| d > last - WINDOW_DAYS))
            .collect()
    }

    /// Mean changes per day over the window.
    pub fn average_daily_changes(&self) -> f64 {
        let w = self.window();
        if w.is_empty() {
            return 0.0;
        }
        w.iter().map(|s| s.changes as f64).sum::<f64>() / w.len() as f64
    }

    /// The latest day against the mean of the days before it in the window:
    /// a move of more than a quarter (and more than 5 files) is a trend.
    pub fn trend(&self) -> Trend {
        let w = self.window();
        let Some((latest, before)) = w.split_last() else {
            return Trend::Stable;
        };
        if before.is_empty() {
            return Trend::Stable;
        }
        let mean = before.iter().map(|s| s.changes as f64).sum::<f64>() / before.len() as f64;
        let delta = latest.changes as f64 - mean;
        let threshold = (mean * 0.25).max(5.0);
        if delta > threshold {
            Trend::Rising
        } else if delta < -threshold {
            Trend::Falling
        } else {
            Trend::Stable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(day: &str, changes: u64) -> DaySample {
        DaySample {
            day: day.into(),
            changes,
            requests: None,
            size_bytes: 0,
        }
    }

    #[test]
    fn walk_counts_what_a_backup_reads_and_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let now = 1_800_000_000;
        let put = |rel: &str, len: usize, mtime: i64| {
            let p = d.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, vec![b'x'; len]).unwrap();
            filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(mtime, 0)).unwrap();
        };
        put("index.php", 10, now - 3 * DAY);
        put("wp-content/uploads/a.jpg", 100, now - 60);
        put("wp-content/uploads/b.jpg", 1000, now - DAY + 1);
        put("wp-content/cache/page.html", 5000, now - 1); // excluded
        put("error.log", 7, now - 1); // excluded
        std::os::unix::fs::symlink("index.php", d.join("link.php")).unwrap();
        let w = walk(d, &Excludes::with_defaults::<&str>(&[]).unwrap(), now);
        assert_eq!(
            w,
            Walk {
                files: 3,
                bytes: 1110,
                changed_24h: 2
            }
        );
    }

    #[test]
    fn history_keeps_a_day_each_and_finds_the_trend() {
        let mut h = History::default();
        assert_eq!(h.trend(), Trend::Stable);
        h.record(sample("2026-01-01", 10));
        assert_eq!(h.trend(), Trend::Stable, "one day is no trend");
        h.record(sample("2026-01-02", 12));
        h.record(sample("2026-01-03", 9));
        assert_eq!(h.trend(), Trend::Stable);
        assert!((h.average_daily_changes() - 31.0 / 3.0).abs() < 1e-9);
        h.record(sample("2026-01-04", 150));
        assert_eq!(h.trend(), Trend::Rising);
        // A later analysis the same day replaces that day's sample.
        h.record(sample("2026-01-04", 0));
        assert_eq!(h.samples.len(), 4);
        assert_eq!(h.trend(), Trend::Falling);
        // Days older than the window no longer count.
        h.record(sample("2026-01-20", 0));
        assert_eq!(h.average_daily_changes(), 0.0);
        assert_eq!(h.trend(), Trend::Stable);
        for d in 1..=40 {
            h.record(sample(&format!("2026-03-{:02}", d.min(31)), d));
        }
        assert!(h.samples.len() <= KEEP_DAYS);
    }

    #[test]
    fn history_survives_a_reload_and_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::default();
        h.record(sample("2026-01-01", 3));
        h.save(dir.path(), "shop.example").unwrap();
        assert_eq!(History::load(dir.path(), "shop.example"), h);
        let path = history_path(dir.path(), "shop.example");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(
            History::load(dir.path(), "shop.example"),
            History::default()
        );
        assert_eq!(
            history_path(dir.path(), "../x/y"),
            dir.path().join("activity/.._x_y.json")
        );
    }
}
