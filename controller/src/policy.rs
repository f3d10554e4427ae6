//! Fleet-wide policies (SPEC FLT-5): TOML documents that select domains by
//! agent labels and names, domain globs, site type and size class, and set
//! their schedule, time zone, window, excludes, database settings,
//! retention, priority and verification cadence.
//!
//! Precedence: every policy that selects a domain applies, in ascending
//! `order` (then name); a later policy overrides each setting it names, and
//! leaves the others. A setting no policy names comes from the domain's
//! automatic plan (schedule) or the built-in default. [`effective`] says,
//! per setting, where its value came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::retention::Keep;
use crate::schedule::{parse_cron, parse_tz, Window};

/// Largest policy document accepted.
pub const MAX_DOCUMENT: usize = 64 << 10;
/// Most policies a fleet may hold.
pub const MAX_POLICIES: usize = 1000;
const DEFAULT_SPLAY: &str = "30m";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// Policies apply in ascending order; a later one overrides earlier ones.
    #[serde(default = "default_order")]
    pub order: i32,
    #[serde(default)]
    pub select: Selector,
    /// `"auto"` (the domain's recommended plan) or a table of
    /// kind = cron (`full = "0 3 * * 0"`, `incremental = "0 */6 * * *"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// IANA time zone the cron expressions and retention days are read in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Local hours runs may start in, `HH:MM-HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Runs start up to this long after their cron time (fixed per domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Vec<String>>,
    /// Back up the domain's databases in its scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<bool>,
    /// wordpress, laravel or none: which tables and rows dumps skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cms_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Higher runs first when the fleet is at its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// How often kept snapshots are verified (`7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_every: Option<String>,
    /// Failed scheduled runs are retried this many times, with backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The domains' alert thresholds, where the built-in ones do not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertTuning>,
}

/// A policy's `[alerts]`: thresholds of the per-domain alert rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTuning {
    /// backup_overdue after this long without a snapshot (`36h`); by
    /// default 1.5× the schedule's interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue: Option<String>,
    /// snapshot_shrunk below this fraction of the snapshot before (0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrink: Option<f64>,
    /// snapshot_grew above this multiple of the snapshot before (3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grow: Option<f64>,
    /// Rules never raised for these domains (a staging site's size swings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mute: Vec<String>,
}

impl AlertTuning {
    pub fn check(&self) -> Result<(), String> {
        self.overdue_seconds()?;
        if let Some(s) = self.shrink {
            if !(s > 0.0 && s < 1.0) {
                return Err(format!(
                    "alerts.shrink {s}: expected a fraction between 0 and 1"
                ));
            }
        }
        if let Some(g) = self.grow {
            if !(g > 1.0 && g.is_finite()) {
                return Err(format!("alerts.grow {g}: expected a factor above 1"));
            }
        }
        for r in &self.mute {
            if !crate::alerts::RULES.iter().any(|(name, _)| name == r) {
                return Err(format!(
                    "alerts.mute {r:?}: no such rule (cairnctl alerts list shows them)"
                ));
            }
        }
        Ok(())
    }

    pub fn overdue_seconds(&self) -> Result<Option<i64>, String> {
        self.overdue
            .as_deref()
            .map(|v| {
                humantime::parse_duration(v)
                    .map(|d| d.as_secs().min(i64::MAX as u64) as i64)
                    .map_err(|e| format!("alerts.overdue {v:?}: {e}"))
            })
            .transpose()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.overdue {
            parts.push(format!("overdue after {o}"));
        }
        if let Some(s) = self.shrink {
            parts.push(format!("shrunk below {s}×"));
        }
        if let Some(g) = self.grow {
            parts.push(format!("grew above {g}×"));
        }
        if !self.mute.is_empty() {
            parts.push(format!("muted: {}", self.mute.join(", ")));
        }
        if parts.is_empty() {
            "built-in".into()
        } else {
            parts.join("; ")
        }
    }
}

fn default_order() -> i32 {
    100
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Every label must match (`env = "prod"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Agent host name (or id) globs; any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Domain name globs (`*.example.com`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// wordpress, laravel, php, static.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site_types: Vec<String>,
    /// small, medium, large.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub size_classes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Schedule {
    /// Must be "auto".
    Auto(String),
    /// kind → cron.
    Runs(BTreeMap<String, String>),
}

/// Retention for all snapshots of a domain, with optional rules per backup
/// kind (`[retention.full]`, `[retention.incremental]`) and for database
/// snapshots (`[retention.database]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(flatten)]
    pub all: Keep,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<Keep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Keep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential: Option<Keep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Keep>,
}

impl Retention {
    /// The rule for snapshots of `content` (files/database) and `kind`, and
    /// the name of the group it judges them in.
    pub fn rule_for(&self, content: &str, kind: &str) -> (&Keep, String) {
        if content == "database" {
            return (
                self.database.as_ref().unwrap_or(&self.all),
                "database".into(),
            );
        }
        let by_kind = match kind {
            "full" => self.full.as_ref(),
            "incremental" => self.incremental.as_ref(),
            "differential" => self.differential.as_ref(),
            _ => None,
        };
        match by_kind {
            Some(k) => (k, format!("files/{kind}")),
            None => (&self.all, "files".into()),
        }
    }

    pub fn describe(&self) -> String {
        let mut s = self.all.describe();
        for (name, k) in [
            ("full", &self.full),
            ("incremental", &self.incremental),
            ("differential", &self.differential),
            ("database", &self.database),
        ] {
            if let Some(k) = k {
                s.push_str(&format!("; {name}: {}", k.describe()));
            }
        }
        s
    }
}

fn glob(p: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(p)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("glob {p:?}: {e}"))
}

impl Policy {
    /// Parses and checks a policy document.
    pub fn parse(text: &str) -> Result<Policy, String> {
        if text.len() > MAX_DOCUMENT {
            return Err(format!(
                "the policy is {} bytes; at most {MAX_DOCUMENT} are accepted",
                text.len()
            ));
        }
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        p.check()?;
        Ok(p)
    }

    /// Everything a policy names must be valid before it is stored.
    pub fn check(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 64
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "policy name {n:?}: 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        for g in self.select.agents.iter().chain(&self.select.domains) {
            glob(g)?;
        }
        for t in &self.select.site_types {
            if !["wordpress", "laravel", "php", "static"].contains(&t.as_str()) {
                return Err(format!(
                    "site type {t:?}: expected wordpress, laravel, php or static"
                ));
            }
        }
        for c in &self.select.size_classes {
            if !["small", "medium", "large"].contains(&c.as_str()) {
                return Err(format!("size class {c:?}: expected small, medium or large"));
            }
        }
        let tz = parse_tz(self.timezone.as_deref().unwrap_or(""))?;
        match &self.schedule {
            Some(Schedule::Auto(a)) if a != "auto" => {
                return Err(format!(
                    "schedule {a:?}: expected \"auto\" or a table like {{ incremental = \"0 2 * * *\" }}"
                ))
            }
            Some(Schedule::Runs(runs)) => {
                if runs.is_empty() {
                    return Err("schedule: name at least one kind and its cron".into());
                }
                for (kind, cron) in runs {
                    if !["full", "incremental", "differential"].contains(&kind.as_str()) {
                        return Err(format!(
                            "schedule kind {kind:?}: expected full, incremental or differential"
                        ));
                    }
                    parse_cron(cron, tz)?;
                }
            }
            _ => {}
        }
        if let Some(w) = &self.window {
            Window::parse(w)?;
        }
        if let Some(s) = &self.splay {
            humantime::parse_duration(s).map_err(|e| format!("splay {s:?}: {e}"))?;
        }
        if let Some(v) = &self.verify_every {
            crate::retention::parse_days(v).map_err(|e| format!("verify_every {v:?}: {e}"))?;
        }
        if let Some(p) = &self.cms_profile {
            if !["wordpress", "laravel", "none"].contains(&p.as_str()) {
                return Err(format!(
                    "cms_profile {p:?}: expected wordpress, laravel or none"
                ));
            }
        }
        if let Some(a) = &self.alerts {
            a.check()?;
        }
        if let Some(r) = self.retries {
            if r > 20 {
                return Err(format!("retries {r}: at most 20"));
            }
        }
        if let Some(ex) = &self.excludes {
            cairn_repo::exclude::Excludes::with_defaults(ex)
                .map_err(|e| format!("excludes: {e}"))?;
        }
        if let Some(r) = &self.retention {
            for k in [
                Some(&r.all),
                r.full.as_ref(),
                r.incremental.as_ref(),
                r.differential.as_ref(),
                r.database.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                k.within_seconds()?;
            }
        }
        Ok(())
    }

    /// Whether this policy applies to `d`.
    pub fn selects(&self, d: &Subject) -> bool {
        let s = &self.select;
        let any = |globs: &[String], names: &[&str]| {
            globs.is_empty()
                || globs
                    .iter()
                    .any(|g| glob(g).is_ok_and(|m| names.iter().any(|n| m.is_match(n))))
        };
        s.labels.iter().all(|(k, v)| d.labels.get(k) == Some(v))
            && any(&s.agents, &[d.agent_id, d.hostname])
            && any(&s.domains, &[d.domain])
            && (s.site_types.is_empty() || s.site_types.iter().any(|t| t == d.site_type))
            && (s.size_classes.is_empty() || s.size_classes.iter().any(|c| c == d.size_class))
    }
}

/// Most labels an agent may carry.
pub const MAX_LABELS: usize = 32;

/// Labels come from agents and operators: bounded, printable, no surprises.
pub fn check_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<BTreeMap<String, String>, String> {
    let ok = |s: &str, max: usize, what: &str| {
        if s.len() > max
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            Err(format!(
                "label {what} {s:?}: at most {max} letters, digits, '-', '_', '.' or '/'"
            ))
        } else {
            Ok(())
        }
    };
    let mut out = BTreeMap::new();
    for (k, v) in labels {
        if k.is_empty() {
            return Err("a label needs a key".into());
        }
        ok(k, 63, "key")?;
        ok(v, 63, "value")?;
        out.insert(k.clone(), v.clone());
    }
    if out.len() > MAX_LABELS {
        return Err(format!("{} labels; at most {MAX_LABELS}", out.len()));
    }
    Ok(out)
}

/// What a selector looks at.
pub struct Subject<'a> {
    pub agent_id: &'a str,
    pub hostname: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub domain: &'a str,
    pub site_type: &'a str,
    pub size_class: &'a str,
}

/// A setting and where its value came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct From<T> {
    pub value: T,
    /// `policy NAME`, `automatic plan` or `default`.
    pub source: String,
}

fn default<T>(value: T) -> From<T> {
    From {
        value,
        source: "default".into(),
    }
}

/// One domain's settings after every policy that selects it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effective {
    /// kind → cron; `None` means the automatic plan.
    pub schedule: From<Option<BTreeMap<String, String>>>,
    pub timezone: From<String>,
    pub window: From<Option<String>>,
    pub splay: From<String>,
    pub excludes: From<Vec<String>>,
    pub database: From<bool>,
    pub cms_profile: From<Option<String>>,
    pub retention: From<Option<Retention>>,
    pub priority: From<i32>,
    pub verify_every: From<Option<String>>,
    pub retries: From<u32>,
    pub alerts: From<Option<AlertTuning>>,
    /// The policies that selected the domain, in the order they applied.
    pub policies: Vec<String>,
}

impl Effective {
    /// Each setting as (name, value in words, source), in a fixed order;
    /// `auto_runs` describes the automatic plan's runs.
    pub fn settings(&self, auto_runs: &str) -> Vec<(String, String, String)> {
        let opt = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_string());
        let schedule = match &self.schedule.value {
            Some(runs) => runs
                .iter()
                .map(|(k, c)| format!("{k} {c}"))
                .collect::<Vec<_>>()
                .join(", "),
            None if auto_runs.is_empty() => "automatic (no analysis yet)".into(),
            None => format!("automatic: {auto_runs}"),
        };
        let mut out = vec![
            ("schedule", schedule, &self.schedule.source),
            (
                "timezone",
                self.timezone.value.clone(),
                &self.timezone.source,
            ),
            (
                "window",
                opt(&self.window.value, "any time"),
                &self.window.source,
            ),
            ("splay", self.splay.value.clone(), &self.splay.source),
            (
                "excludes",
                if self.excludes.value.is_empty() {
                    "built-in only".into()
                } else {
                    self.excludes.value.join(", ")
                },
                &self.excludes.source,
            ),
            (
                "database",
                if self.database.value { "on" } else { "off" }.into(),
                &self.database.source,
            ),
            (
                "cms_profile",
                opt(&self.cms_profile.value, "from the site type"),
                &self.cms_profile.source,
            ),
            (
                "retention",
                self.retention
                    .value
                    .as_ref()
                    .map_or("keep everything".into(), Retention::describe),
                &self.retention.source,
            ),
            (
                "priority",
                self.priority.value.to_string(),
                &self.priority.source,
            ),
            (
                "verify_every",
                opt(&self.verify_every.value, "never"),
                &self.verify_every.source,
            ),
            (
                "retries",
                self.retries.value.to_string(),
                &self.retries.source,
            ),
            (
                "alerts",
                self.alerts
                    .value
                    .as_ref()
                    .map_or("built-in".into(), AlertTuning::describe),
                &self.alerts.source,
            ),
        ];
        out.drain(..)
            .map(|(n, v, s)| (n.to_string(), v, s.clone()))
            .collect()
    }
}

/// Settings whose value differs between two effective sets:
/// (setting, before, after).
pub fn differences(before: &Effective, after: &Effective) -> Vec<(String, String, String)> {
    let a = before.settings("");
    let b = after.settings("");
    a.into_iter()
        .zip(b)
        .filter(|(x, y)| x.1 != y.1 || x.2 != y.2)
        .map(|(x, y)| {
            (
                x.0,
                format!("{} ({})", x.1, x.2),
                format!("{} ({})", y.1, y.2),
            )
        })
        .collect()
}

/// Applies the policies selecting `d`, in precedence order.
pub fn effective(policies: &[Policy], d: &Subject) -> Effective {
    let mut e = Effective {
        schedule: From {
            value: None,
            source: "automatic plan".into(),
        },
        timezone: default("UTC".into()),
        window: default(None),
        splay: default(DEFAULT_SPLAY.into()),
        excludes: default(Vec::new()),
        database: default(true),
        cms_profile: default(None),
        retention: default(None),
        priority: default(0),
        verify_every: default(None),
        retries: default(3),
        alerts: default(None),
        policies: Vec::new(),
    };
    let mut ordered: Vec<&Policy> = policies.iter().filter(|p| p.selects(d)).collect();
    ordered.sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(&b.name)));
    for p in ordered {
        let src = format!("policy {}", p.name);
        let set = |src: &str| src.to_string();
        match &p.schedule {
            Some(Schedule::Auto(_)) => {
                e.schedule = From {
                    value: None,
                    source: format!("{src} (automatic plan)"),
                }
            }
            Some(Schedule::Runs(r)) => {
                e.schedule = From {
                    value: Some(r.clone()),
                    source: set(&src),
                }
            }
            None => {}
        }
        macro_rules! take {
            ($field:ident) => {
                if let Some(v) = &p.$field {
                    e.$field = From {
                        value: v.clone(),
                        source: set(&src),
                    };
                }
            };
            ($field:ident, some) => {
                if let Some(v) = &p.$field {
                    e.$field = From {
                        value: Some(v.clone()),
                        source: set(&src),
                    };
                }
            };
        }
        take!(timezone);
        take!(window, some);
        take!(splay);
        take!(excludes);
        take!(database);
        take!(cms_profile, some);
        take!(retention, some);
        take!(priority);
        take!(verify_every, some);
        take!(retries);
        take!(alerts, some);
        e.policies.push(p.name.clone());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(labels: &'a BTreeMap<String, String>, domain: &'a str) -> Subject<'a> {
        Subject {
            agent_id: "a1",
            hostname: "web-1.example",
            labels,
            domain,
            site_type: "wordpress",
            size_class: "small",
        }
    }

    #[test]
    fn later_policies_override_only_what_they_name() {
        let base = Policy::parse(
            r#"
            name = "fleet"
            order = 10
            timezone = "Europe/Berlin"
            window = "01:00-06:00"
            [retention]
            keep_daily = 7
            keep_weekly = 4
            "#,
        )
        .unwrap();
        let shops = Policy::parse(
            r#"
            name = "shops"
            [select]
            labels = { tier = "shop" }
            domains = ["*.shop"]
            [schedule]
            incremental = "0 */4 * * *"
            full = "0 2 * * 0"
            [retention]
            keep_last = 10
            [retention.full]
            keep_within = "8w"
            "#,
        )
        .unwrap();
        let policies = vec![shops.clone(), base];
        let plain = BTreeMap::new();
        let e = effective(&policies, &subject(&plain, "x.shop"));
        assert_eq!(e.policies, ["fleet"]);
        assert_eq!(e.schedule.source, "automatic plan");
        assert_eq!(e.timezone.value, "Europe/Berlin");
        assert_eq!(e.retention.source, "policy fleet");

        let shop: BTreeMap<String, String> = [("tier".into(), "shop".into())].into();
        let e = effective(&policies, &subject(&shop, "X.Shop"));
        assert_eq!(e.policies, ["fleet", "shops"]);
        assert_eq!(
            e.schedule.value.as_ref().unwrap()["incremental"],
            "0 */4 * * *"
        );
        assert_eq!(e.schedule.source, "policy shops");
        assert_eq!(e.timezone.source, "policy fleet");
        assert_eq!(e.window.value.as_deref(), Some("01:00-06:00"));
        let r = e.retention.value.unwrap();
        assert_eq!((r.all.keep_last, r.all.keep_daily), (10, 0));
        assert_eq!(r.rule_for("files", "full").1, "files/full");
        assert_eq!(r.rule_for("files", "incremental").1, "files");
        assert_eq!(e.database, default(true));
        // A domain the glob does not match.
        let e = effective(&policies, &subject(&shop, "x.blog"));
        assert_eq!(e.policies, ["fleet"]);
    }

    #[test]
    fn bad_documents_are_refused_with_the_cause() {
        for (doc, want) in [
            ("name = \"\"", "policy name"),
            ("name = \"a\"\nschedule = \"often\"", "expected \"auto\""),
            ("name = \"a\"\n[schedule]\nfull = \"0 3 * *\"", "fields"),
            (
                "name = \"a\"\n[schedule]\nweekly = \"0 3 * * 0\"",
                "schedule kind",
            ),
            ("name = \"a\"\ntimezone = \"Moon/Base\"", "time zone"),
            ("name = \"a\"\nwindow = \"1-5\"", "window"),
            (
                "name = \"a\"\n[select]\nsite_types = [\"joomla\"]",
                "site type",
            ),
            (
                "name = \"a\"\n[retention]\nkeep_within = \"soon\"",
                "keep_within",
            ),
            ("name = \"a\"\nkeep_daily = 3", "unknown field"),
            ("name = \"a\"\n[select]\ndomains = [\"[\"]", "glob"),
            (
                "name = \"a\"\n[alerts]\noverdue = \"soon\"",
                "alerts.overdue",
            ),
            ("name = \"a\"\n[alerts]\nshrink = 2.0", "alerts.shrink"),
            ("name = \"a\"\n[alerts]\ngrow = 0.5", "alerts.grow"),
            (
                "name = \"a\"\n[alerts]\nmute = [\"site_down\"]",
                "no such rule",
            ),
        ] {
            let err = Policy::parse(doc).unwrap_err();
            assert!(err.contains(want), "{doc:?}: {err}");
        }
        let tuned = Policy::parse(
            "name = \"staging\"\n[alerts]\noverdue = \"3d\"\nmute = [\"snapshot_grew\"]",
        )
        .unwrap();
        assert_eq!(
            tuned.alerts.unwrap().describe(),
            "overdue after 3d; muted: snapshot_grew"
        );
        let big = format!("name = \"a\"\n#{}", "x".repeat(MAX_DOCUMENT));
        assert!(Policy::parse(&big).unwrap_err().contains("bytes"));
    }
}
