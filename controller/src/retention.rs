//! Which snapshots a retention rule keeps (SPEC RET-1, RET-2): keep-last,
//! keep-hourly/daily/weekly/monthly/yearly and keep-within, as restic and
//! borg define them. For each bucket kind, walking from the newest
//! snapshot back, the newest snapshot of each of the N most recent buckets
//! is kept. keep-within counts back from the newest snapshot, not from now,
//! so a domain whose backups stopped never loses its last copies. Held
//! snapshots are always kept. A pure function: the caller forgets the rest.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One rule; zero means "not used". A rule that keeps nothing keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_last: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_hourly: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_daily: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_weekly: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_monthly: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_yearly: u32,
    /// A duration like `7d` or `8w`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Keep {
    pub fn keeps_all(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_within.is_none()
    }

    pub fn within_seconds(&self) -> Result<Option<i64>, String> {
        self.keep_within
            .as_deref()
            .map(|w| parse_days(w).map_err(|e| format!("keep_within {w:?}: {e}")))
            .transpose()
    }

    /// `last 3, daily 7, weekly 4, within 2d`.
    pub fn describe(&self) -> String {
        if self.keeps_all() {
            return "keep everything".into();
        }
        let mut parts = Vec::new();
        for (n, word) in [
            (self.keep_last, "last"),
            (self.keep_hourly, "hourly"),
            (self.keep_daily, "daily"),
            (self.keep_weekly, "weekly"),
            (self.keep_monthly, "monthly"),
            (self.keep_yearly, "yearly"),
        ] {
            if n > 0 {
                parts.push(format!("{word} {n}"));
            }
        }
        if let Some(w) = &self.keep_within {
            parts.push(format!("within {w}"));
        }
        parts.join(", ")
    }
}

/// `7d`, `8w`, `36h`, `1y` (365 days) and what humantime reads.
pub fn parse_days(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let mult = match unit {
        "w" => Some(7 * 86_400),
        "y" => Some(365 * 86_400),
        _ => None,
    };
    let secs = match (mult, num.parse::<i64>()) {
        (Some(m), Ok(n)) => n.checked_mul(m).ok_or("too long")?,
        _ => humantime::parse_duration(s)
            .map_err(|e| format!("not a duration like 7d or 8w: {e}"))?
            .as_secs()
            .min(i64::MAX as u64) as i64,
    };
    if secs <= 0 {
        return Err("must be above zero".into());
    }
    Ok(secs)
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: i64,
    pub held: bool,
}

/// Why a snapshot stays.
pub type Reasons = Vec<String>;
/// Kept (with reasons) and forgotten, newest first.
pub type Decision = (Vec<(Candidate, Reasons)>, Vec<Candidate>);

/// Splits `snaps` into kept (with reasons) and forgotten, newest first.
pub fn decide(snaps: &[Candidate], rule: &Keep, tz: Tz) -> Result<Decision, String> {
    let mut sorted: Vec<&Candidate> = snaps.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let within = rule.within_seconds()?;
    let newest = sorted.first().map(|s| s.time).unwrap_or(0);
    type Bucket = fn(DateTime<Tz>) -> i64;
    let buckets: [(&str, u32, Bucket); 5] = [
        ("hourly", rule.keep_hourly, |d| {
            d.year() as i64 * 1_000_000 + d.ordinal() as i64 * 100 + d.hour() as i64
        }),
        ("daily", rule.keep_daily, |d| {
            d.year() as i64 * 1000 + d.ordinal() as i64
        }),
        ("weekly", rule.keep_weekly, |d| {
            let w = d.iso_week();
            w.year() as i64 * 100 + w.week() as i64
        }),
        ("monthly", rule.keep_monthly, |d| {
            d.year() as i64 * 100 + d.month() as i64
        }),
        ("yearly", rule.keep_yearly, |d| d.year() as i64),
    ];
    let mut left: BTreeMap<&str, (u32, Option<i64>)> =
        buckets.iter().map(|(n, c, _)| (*n, (*c, None))).collect();
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for (i, s) in sorted.iter().enumerate() {
        let mut why = Vec::new();
        if rule.keeps_all() {
            why.push("no retention rule".to_string());
        }
        if s.held {
            why.push("legal hold".to_string());
        }
        if (i as u32) < rule.keep_last {
            why.push("last".to_string());
        }
        if let Some(w) = within {
            if newest - s.time <= w {
                why.push("within".to_string());
            }
        }
        let local = Utc
            .timestamp_opt(s.time, 0)
            .single()
            .unwrap_or_default()
            .with_timezone(&tz);
        for (name, _, bucket) in &buckets {
            let (n, last) = left.get_mut(name).expect("every bucket kind");
            let b = bucket(local);
            if *n > 0 && *last != Some(b) {
                *n -= 1;
                *last = Some(b);
                why.push(name.to_string());
            }
        }
        if why.is_empty() {
            gone.push((*s).clone());
        } else {
            kept.push(((*s).clone(), why));
        }
    }
    Ok((kept, gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(i: usize, time: i64) -> Candidate {
        Candidate {
            id: format!("s{i:03}"),
            time,
            held: false,
        }
    }

    const DAY: i64 = 86_400;
    // 2026-03-02 00:00 UTC is a Monday.
    const MONDAY: i64 = 1_772_409_600;

    #[test]
    fn daily_weekly_monthly_keep_the_newest_of_each_bucket() {
        // Four runs a day (00, 06, 12, 18) for 60 days.
        let snaps: Vec<Candidate> = (0..240)
            .map(|i| snap(i, MONDAY + i as i64 * 6 * 3600))
            .collect();
        let rule = Keep {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 2,
            ..Default::default()
        };
        let (kept, gone) = decide(&snaps, &rule, Tz::UTC).unwrap();
        assert_eq!(kept.len() + gone.len(), 240);
        // Every kept one is the last run (18:00) of its day.
        for (s, _) in &kept {
            assert_eq!((s.time - MONDAY) % DAY, 18 * 3600, "{s:?}");
        }
        let days: Vec<i64> = kept.iter().map(|(s, _)| (s.time - MONDAY) / DAY).collect();
        // 7 newest days; weeks end on Sundays (days 55, 48, 41 after the
        // newest week's own day 59); month ends: March 31 (day 29).
        assert_eq!(days, [59, 58, 57, 56, 55, 54, 53, 48, 41, 29]);
        let reasons = &kept
            .iter()
            .find(|(s, _)| s.time == MONDAY + 59 * DAY + 18 * 3600)
            .unwrap()
            .1;
        assert_eq!(reasons, &["daily", "weekly", "monthly"]);
    }

    #[test]
    fn held_and_within_and_last_are_kept() {
        let mut snaps: Vec<Candidate> = (0..10).map(|i| snap(i, MONDAY + i as i64 * DAY)).collect();
        snaps[0].held = true;
        let rule = Keep {
            keep_last: 2,
            keep_within: Some("3d".into()),
            ..Default::default()
        };
        let (kept, gone) = decide(&snaps, &rule, Tz::UTC).unwrap();
        let ids: Vec<&str> = kept.iter().map(|(s, _)| s.id.as_str()).collect();
        assert_eq!(ids, ["s009", "s008", "s007", "s006", "s000"]);
        assert_eq!(gone.len(), 5);
        // No rule: everything stays.
        let (kept, gone) = decide(&snaps, &Keep::default(), Tz::UTC).unwrap();
        assert_eq!((kept.len(), gone.len()), (10, 0));
    }

    #[test]
    fn days_follow_the_time_zone() {
        // 23:30 UTC on two days is the next day in Berlin; with two runs a
        // day at 22:30 and 23:30 UTC, Berlin and UTC days split differently.
        let snaps = vec![
            snap(0, MONDAY + 22 * 3600 + 1800),
            snap(1, MONDAY + 23 * 3600 + 1800),
        ];
        let rule = Keep {
            keep_daily: 2,
            ..Default::default()
        };
        let utc = decide(&snaps, &rule, Tz::UTC).unwrap().0.len();
        let berlin = decide(&snaps, &rule, "Europe/Berlin".parse().unwrap())
            .unwrap()
            .0
            .len();
        assert_eq!((utc, berlin), (1, 2));
    }

    #[test]
    fn durations_read_like_operators_write_them() {
        assert_eq!(parse_days("7d").unwrap(), 7 * DAY);
        assert_eq!(parse_days("8w").unwrap(), 56 * DAY);
        assert_eq!(parse_days("1y").unwrap(), 365 * DAY);
        assert_eq!(parse_days("36h").unwrap(), 36 * 3600);
        assert!(parse_days("0d").is_err());
        assert!(parse_days("soon").is_err());
    }
}
