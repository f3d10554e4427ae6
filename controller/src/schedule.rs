//! When runs start (SPEC SCH-1, SCH-2): cron expressions in a time zone,
//! a per-domain splay so a fleet on the same cron does not start in the
//! same second, and backup windows. Pure functions of their inputs and the
//! time they are given, so tests drive them with any clock.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A parsed five-field cron expression (minute hour day-of-month month
/// day-of-week) in a time zone.
#[derive(Debug, Clone)]
pub struct CronIn {
    cron: Cron,
    tz: Tz,
}

/// Parses `expr`, which must have exactly five fields (no seconds).
pub fn parse_cron(expr: &str, tz: Tz) -> Result<CronIn, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 && !expr.trim().starts_with('@') {
        return Err(format!(
            "cron {expr:?} has {fields} fields; expected 5 (minute hour day-of-month month day-of-week)"
        ));
    }
    let cron = Cron::from_str(expr).map_err(|e| format!("cron {expr:?}: {e}"))?;
    Ok(CronIn { cron, tz })
}

pub fn parse_tz(name: &str) -> Result<Tz, String> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?} (expected an IANA name like Europe/Berlin)")
    })
}

fn at(t: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(t, 0).single().unwrap_or_default()
}

impl CronIn {
    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let local = at(t).with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.timestamp())
    }

    /// The last occurrence at or before `t`.
    pub fn last_at_or_before(&self, t: i64) -> Option<i64> {
        let local = at(t).with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|d| d.timestamp())
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }
}

/// Local hours a run may start in, `HH:MM-HH:MM`; may wrap midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start_min: u32,
    end_min: u32,
}

impl Window {
    pub fn parse(s: &str) -> Result<Window, String> {
        let bad = || format!("window {s:?}: expected HH:MM-HH:MM, like 01:00-06:00");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let min = |x: &str| -> Result<u32, String> {
            let (h, m) = x.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let w = Window {
            start_min: min(a)?,
            end_min: min(b)?,
        };
        if w.start_min == w.end_min {
            return Err(format!("window {s:?} is empty"));
        }
        Ok(w)
    }

    fn contains_minute(&self, m: u32) -> bool {
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&m)
        } else {
            m >= self.start_min || m < self.end_min
        }
    }

    /// `t` if it lies in the window (local time in `tz`), else the window's
    /// next opening.
    pub fn next_open(&self, t: i64, tz: Tz) -> i64 {
        let local = at(t).with_timezone(&tz);
        if self.contains_minute(local.hour() * 60 + local.minute()) {
            return t;
        }
        // Step to the next whole minute, then minute by minute is too slow
        // for a day; jump by the minutes left to the opening instead, then
        // settle (DST shifts move it by at most an hour).
        let mut t = t - local.second() as i64;
        for _ in 0..4 {
            let l = at(t).with_timezone(&tz);
            let m = l.hour() * 60 + l.minute();
            if self.contains_minute(m) {
                return t;
            }
            let wait = (self.start_min + 24 * 60 - m) % (24 * 60);
            t += wait.max(1) as i64 * 60;
        }
        t
    }
}

/// A fixed offset in `[0, splay)` seconds for one (agent, domain, kind):
/// the same every run, different across domains, so 500 servers on one
/// cron spread over the splay instead of starting in the same second.
pub fn splay_offset(key: &str, splay: u64) -> i64 {
    if splay == 0 {
        return 0;
    }
    let h = blake3::hash(key.as_bytes());
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    (n % splay) as i64
}

/// How one run of a domain is timed.
#[derive(Debug, Clone)]
pub struct Timing {
    pub cron: CronIn,
    pub splay_offset: i64,
    pub window: Option<Window>,
}

impl Timing {
    /// When the run of occurrence `occ` may start.
    pub fn start_of(&self, occ: i64) -> i64 {
        let t = occ + self.splay_offset;
        match self.window {
            Some(w) => w.next_open(t, self.cron.tz()),
            None => t,
        }
    }

    /// The occurrence to run now, if any: the newest occurrence after
    /// `last` whose start time has come. Older ones missed meanwhile (the
    /// controller was down) are folded into it: one catch-up run, not N.
    /// Returns it with the number of occurrences it stands for.
    pub fn due(&self, last: i64, now: i64) -> Option<(i64, u32)> {
        let mut occ = self.cron.last_at_or_before(now)?;
        // A window or splay can hold the newest occurrence back while an
        // older one may already start; a few steps back suffice.
        for _ in 0..48 {
            if occ <= last {
                return None;
            }
            if self.start_of(occ) <= now {
                let mut n = 1u32;
                let mut o = occ;
                while let Some(p) = self.cron.last_at_or_before(o - 1) {
                    if p <= last || n >= 10_000 {
                        break;
                    }
                    n += 1;
                    o = p;
                }
                return Some((occ, n));
            }
            occ = self.cron.last_at_or_before(occ - 1)?;
        }
        None
    }

    /// Start times of the runs from `from` up to `until`.
    pub fn upcoming(&self, last: i64, from: i64, until: i64, max: usize) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut t = last.max(from - 7 * 86_400);
        while out.len() < max {
            let Some(occ) = self.cron.next_after(t) else {
                break;
            };
            let start = self.start_of(occ);
            if occ > until && start > until {
                break;
            }
            if start >= from && start <= until {
                out.push((occ, start));
            }
            t = occ;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn timing(expr: &str, tz: &str, splay: i64, window: Option<&str>) -> Timing {
        Timing {
            cron: parse_cron(expr, parse_tz(tz).unwrap()).unwrap(),
            splay_offset: splay,
            window: window.map(|w| Window::parse(w).unwrap()),
        }
    }

    #[test]
    fn cron_follows_the_time_zone() {
        let t = timing("0 3 * * *", "Europe/Berlin", 0, None);
        // 03:00 in Berlin in winter is 02:00 UTC; in summer 01:00 UTC.
        assert_eq!(
            t.cron.next_after(ts("2026-01-10T00:00:00Z")),
            Some(ts("2026-01-10T02:00:00Z"))
        );
        assert_eq!(
            t.cron.next_after(ts("2026-07-10T00:00:00Z")),
            Some(ts("2026-07-10T01:00:00Z"))
        );
        assert!(parse_cron("0 3 * *", Tz::UTC).is_err());
        assert!(parse_cron("0 3 * * * *", Tz::UTC).is_err());
        assert!(parse_cron("61 3 * * *", Tz::UTC).is_err());
        assert!(parse_tz("Mars/Olympus").is_err());
    }

    #[test]
    fn one_catch_up_run_after_downtime_not_n() {
        let t = timing("0 */6 * * *", "UTC", 0, None);
        let last = ts("2026-03-01T00:00:00Z");
        assert_eq!(t.due(last, ts("2026-03-01T05:59:59Z")), None);
        assert_eq!(
            t.due(last, ts("2026-03-01T06:00:00Z")),
            Some((ts("2026-03-01T06:00:00Z"), 1))
        );
        // Down for two days: eight occurrences missed, one run for the newest.
        assert_eq!(
            t.due(last, ts("2026-03-03T01:00:00Z")),
            Some((ts("2026-03-03T00:00:00Z"), 8))
        );
        // Already run: nothing until the next.
        let done = ts("2026-03-03T00:00:00Z");
        assert_eq!(t.due(done, ts("2026-03-03T05:00:00Z")), None);
    }

    #[test]
    fn splay_delays_and_spreads_starts() {
        let t = timing("0 2 * * *", "UTC", 600, None);
        let last = ts("2026-03-01T02:00:00Z");
        assert_eq!(t.due(last, ts("2026-03-02T02:09:59Z")), None);
        assert!(t.due(last, ts("2026-03-02T02:10:00Z")).is_some());
        let offsets: std::collections::HashSet<i64> = (0..500)
            .map(|i| splay_offset(&format!("agent{i}\0site.test\0full"), 1800))
            .collect();
        assert!(offsets.iter().all(|o| (0..1800).contains(o)));
        assert!(
            offsets.len() > 400,
            "500 domains spread over 1800 s: {}",
            offsets.len()
        );
        assert_eq!(splay_offset("k", 1800), splay_offset("k", 1800));
    }

    #[test]
    fn windows_hold_runs_until_they_open() {
        // Hourly cron, window 01:00-03:00 across nothing else.
        let t = timing("30 * * * *", "UTC", 0, Some("01:00-03:00"));
        let last = ts("2026-03-01T02:30:00Z");
        // 03:30 … 00:30 fall outside; the next start is 01:00 (for 00:30's run).
        assert_eq!(t.due(last, ts("2026-03-01T12:00:00Z")), None);
        let (occ, _) = t.due(last, ts("2026-03-02T01:00:00Z")).unwrap();
        assert_eq!(occ, ts("2026-03-02T00:30:00Z"));
        assert_eq!(t.start_of(occ), ts("2026-03-02T01:00:00Z"));
        // A window across midnight.
        let w = Window::parse("22:00-04:00").unwrap();
        assert_eq!(
            w.next_open(ts("2026-03-01T23:10:00Z"), Tz::UTC),
            ts("2026-03-01T23:10:00Z")
        );
        assert_eq!(
            w.next_open(ts("2026-03-01T12:00:00Z"), Tz::UTC),
            ts("2026-03-01T22:00:00Z")
        );
        assert!(Window::parse("3-5").is_err());
        assert!(Window::parse("02:00-02:00").is_err());
        assert!(Window::parse("25:00-02:00").is_err());
    }

    #[test]
    fn upcoming_lists_start_times_in_order() {
        let t = timing("0 */6 * * *", "UTC", 60, None);
        let from = ts("2026-03-01T00:00:30Z");
        let got = t.upcoming(ts("2026-03-01T00:00:00Z"), from, from + 86_400, 100);
        let starts: Vec<i64> = got.iter().map(|g| g.1).collect();
        assert_eq!(
            starts,
            [0, 6, 12]
                .iter()
                .map(|h| ts("2026-03-01T06:01:00Z") + h * 3600)
                .collect::<Vec<_>>()
        );
    }
}
