//! The status pages (SPEC MON-1, MON-6, CAT-3): server-rendered HTML with
//! inline SVG charts, no script but a timed reload. `/` is the fleet at a
//! glance (health bands, alerts, domains with health and RPO, running jobs,
//! upcoming runs, storage growth); `/domain/AGENT/DOMAIN` is one site (its
//! health and why, RPO and RTO, sizes and dedup over time, runs, alerts).
//! Everything an agent reported is escaped before it is written.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use crate::alerts::{AlertRecord, AlertState};
use crate::catalog::{AgentRecord, DomainRecord, JobRecord, JobState, SnapshotRecord};
use crate::health::DomainHealth;
use crate::scheduler::Upcoming;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A path segment of a link (domain and agent names come from agents).
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn ago(now: i64, t: i64) -> String {
    format!("{} ago", crate::alerts::words(now - t))
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().si().to_string()
}

fn when(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}\
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}\
header a{color:#fff;text-decoration:none;font-weight:600;font-size:18px}main{padding:16px 24px}\
section{background:#fff;border-radius:8px;padding:12px 16px;margin-bottom:16px;box-shadow:0 1px 2px #0001}\
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}\
td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;font-size:13px}th{color:#667}\
.cards{display:flex;gap:16px;flex-wrap:wrap}.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:140px;box-shadow:0 1px 2px #0001}\
.card b{display:block;font-size:24px}.excellent{color:#0a7d32}.good{color:#2f6fd6}.warning{color:#b86e00}.critical{color:#c0182b}\
.badge{display:inline-block;min-width:2.5em;text-align:center;border-radius:4px;color:#fff;padding:0 4px}\
.badge.excellent{background:#0a7d32;color:#fff}.badge.good{background:#2f6fd6;color:#fff}.badge.warning{background:#b86e00;color:#fff}.badge.critical{background:#c0182b;color:#fff}\
.on{color:#0a7d32}.off{color:#c0182b}.firing{color:#c0182b;font-weight:600}.muted{color:#889}progress{width:10em}\
svg text{font:11px system-ui;fill:#667}a{color:#2f6fd6}";

fn page(title: &str, refresh: u32, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=refresh content={refresh}><meta name=viewport content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">Cairn</a><span>{}</span></header><main>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

/// Bars over time: one per value, with a tooltip; `label` formats values.
pub fn bar_chart(id: &str, points: &[(i64, f64)], label: fn(f64) -> String) -> String {
    let (w, h, pad) = (640.0, 140.0, 24.0);
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut s = format!(
        "<svg id=\"{id}\" class=chart viewBox=\"0 0 {w} {h}\" width=\"100%\" height=\"{h}\" role=img>"
    );
    if points.is_empty() || max <= 0.0 {
        s.push_str("<text x=8 y=20>no data yet</text></svg>");
        return s;
    }
    let bw = (w - pad) / points.len() as f64;
    for (i, (t, v)) in points.iter().enumerate() {
        let bh = (v / max * (h - pad - 8.0)).max(1.0);
        let _ = write!(
            s,
            "<rect class=bar x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#2f6fd6\"><title>{} · {}</title></rect>",
            pad + i as f64 * bw + 1.0,
            h - pad - bh,
            (bw - 2.0).max(1.0),
            bh,
            when(*t),
            esc(&label(*v))
        );
    }
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=end>{}</text>\
         <text x=2 y=12>{}</text></svg>",
        h - 6.0,
        when(points[0].0),
        w - 2.0,
        h - 6.0,
        when(points[points.len() - 1].0),
        esc(&label(max))
    );
    s
}

fn health_bar(dist: &[(&str, usize); 4]) -> String {
    let total: usize = dist.iter().map(|d| d.1).sum();
    let mut s = String::from(
        "<svg id=fleet-health-bar viewBox=\"0 0 600 28\" width=\"100%\" height=28 preserveAspectRatio=none role=img>",
    );
    let mut x = 0.0;
    for (band, n) in dist {
        if *n == 0 || total == 0 {
            continue;
        }
        let w = 600.0 * *n as f64 / total as f64;
        let color = match *band {
            "excellent" => "#0a7d32",
            "good" => "#2f6fd6",
            "warning" => "#b86e00",
            _ => "#c0182b",
        };
        let _ = write!(
            s,
            "<rect class=\"band {band}\" x=\"{x:.1}\" y=0 width=\"{w:.1}\" height=28 fill=\"{color}\"><title>{n} {band}</title></rect>"
        );
        x += w;
    }
    s.push_str("</svg>");
    s
}

/// What the fleet page shows, read from the catalog once.
pub struct Fleet<'a> {
    pub now: i64,
    pub agents: &'a [AgentRecord],
    pub online: &'a std::collections::HashSet<String>,
    pub domains: &'a [DomainRecord],
    pub health: &'a [DomainHealth],
    pub alerts: &'a [AlertRecord],
    pub running: &'a [JobRecord],
    pub upcoming: &'a [Upcoming],
    /// Bytes newly stored, by UTC day.
    pub stored_per_day: &'a BTreeMap<i64, u64>,
    pub stored_bytes: u64,
    /// (agent, domain) → the controller's strategy for it.
    pub strategies: &'a HashMap<(String, String), String>,
}

pub fn fleet_page(v: &Fleet) -> String {
    let mut b = String::new();
    let dist = crate::health::distribution(v.health);
    let avg = if v.health.is_empty() {
        0
    } else {
        v.health.iter().map(|d| d.health.score).sum::<u32>() / v.health.len() as u32
    };
    let firing: Vec<&AlertRecord> = v
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    let live: Vec<&AgentRecord> = v.agents.iter().filter(|a| !a.revoked).collect();
    let online = live.iter().filter(|a| v.online.contains(&a.id)).count();
    let met = v.health.iter().filter(|d| d.health.rpo_met).count();
    let _ = write!(
        b,
        "<div class=cards id=fleet-health>\
         <div class=card><span>Fleet health</span><b class={}>{avg}</b>{} domains</div>\
         <div class=card><span>RPO met</span><b>{met}/{}</b>domains</div>\
         <div class=card><span>Alerts firing</span><b class={}>{}</b>&nbsp;</div>\
         <div class=card><span>Agents online</span><b>{online}/{}</b>&nbsp;</div>\
         <div class=card><span>Stored</span><b>{}</b>in the repository</div></div>",
        crate::health::band(avg),
        v.health.len(),
        v.health.len(),
        if firing.is_empty() {
            "excellent"
        } else {
            "critical"
        },
        firing.len(),
        live.len(),
        bytes(v.stored_bytes)
    );
    let _ = write!(
        b,
        "<section><h2>Health by domain</h2>{}<p>",
        health_bar(&dist)
    );
    for (band, n) in dist {
        let _ = write!(b, "<span class={band}>{n} {band}</span> · ");
    }
    b.push_str("</p></section>");

    let _ = write!(
        b,
        "<section id=alerts><h2>Alerts firing ({})</h2><table><tr><th>rule</th><th>domain</th><th>agent</th><th>since</th><th>message</th></tr>",
        firing.len()
    );
    for a in &firing {
        let _ = write!(
            b,
            "<tr class=alert><td class=firing>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.rule),
            esc(&a.domain),
            esc(&a.agent_id),
            ago(v.now, a.fired_at),
            esc(&a.message)
        );
    }
    if firing.is_empty() {
        b.push_str("<tr><td colspan=5 class=muted>none: every site is protected</td></tr>");
    }
    b.push_str("</table></section>");

    let by_key: HashMap<(&str, &str), &DomainRecord> = v
        .domains
        .iter()
        .map(|d| ((d.agent_id.as_str(), d.name.as_str()), d))
        .collect();
    let mut worst: Vec<&DomainHealth> = v.health.iter().collect();
    worst.sort_by_key(|d| (d.health.score, d.domain.clone()));
    let _ = write!(
        b,
        "<section id=domains><h2>Domains ({}), worst first</h2><table><tr><th>health</th><th>domain</th><th>agent</th><th>RPO</th><th>RTO</th><th>size</th><th>dedup</th><th>type</th><th>activity</th><th>strategy</th></tr>",
        worst.len()
    );
    for d in &worst {
        let h = &d.health;
        let rec = by_key.get(&(d.agent.as_str(), d.domain.as_str()));
        let size = rec.map_or(0, |r| r.size_bytes);
        let site_type = rec.map_or("", |r| r.site_type.as_str());
        let activity = rec.map_or("", |r| {
            crate::strategy::Activity::of(r.analysis.as_ref().map_or(0, |a| a.changes_24h)).as_str()
        });
        let strategy = v
            .strategies
            .get(&(d.agent.clone(), d.domain.clone()))
            .map_or("", String::as_str);
        let _ = write!(
            b,
            "<tr class=domain><td><span class=\"badge {}\">{}</span></td><td><a href=\"/domain/{}/{}\">{}</a></td><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            h.band,
            h.score,
            seg(&d.agent),
            seg(&d.domain),
            esc(&d.domain),
            esc(&d.agent),
            if h.rpo_met { "on" } else { "off" },
            h.rpo_seconds
                .map(crate::alerts::words)
                .unwrap_or_else(|| "never backed up".into()),
            h.rto_seconds
                .map(crate::alerts::words)
                .unwrap_or_else(|| "not measured".into()),
            bytes(size),
            h.dedup_ratio
                .map(|r| format!("{r:.1}×"))
                .unwrap_or_default(),
            esc(site_type),
            activity,
            esc(strategy)
        );
    }
    b.push_str("</table></section>");

    let _ = write!(
        b,
        "<section id=running><h2>Running jobs ({})</h2><table><tr><th>job</th><th>kind</th><th>domain</th><th>step</th><th>progress</th></tr>",
        v.running.len()
    );
    for j in v.running {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><progress max={} value={}></progress> {} files</td></tr>",
            esc(&j.id),
            esc(&j.kind),
            esc(&j.domain),
            esc(&j.step),
            j.total_bytes.max(1),
            j.bytes,
            j.files
        );
    }
    b.push_str("</table></section>");

    b.push_str("<section id=upcoming><h2>Upcoming runs (24 h)</h2><table><tr><th>starts</th><th>domain</th><th>agent</th><th>kind</th></tr>");
    for u in v.upcoming.iter().take(15) {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(u.starts_at),
            esc(&u.domain),
            esc(&u.agent_id),
            esc(&u.kind)
        );
    }
    if v.upcoming.len() > 15 {
        let _ = write!(
            b,
            "<tr><td colspan=4 class=muted>and {} more (cairnctl schedule)</td></tr>",
            v.upcoming.len() - 15
        );
    }
    b.push_str("</table></section>");

    // Storage growth: bytes newly stored per day, the last 30 days.
    let from = v.now - 30 * 86_400;
    let points: Vec<(i64, f64)> = v
        .stored_per_day
        .range(from - from.rem_euclid(86_400)..)
        .map(|(day, n)| (*day, *n as f64))
        .collect();
    let _ = write!(
        b,
        "<section id=storage><h2>Storage growth: bytes stored per day</h2>{}</section>",
        bar_chart("storage-growth", &points, |v| bytes(v as u64))
    );

    b.push_str("<section id=agents><h2>Agents</h2><table><tr><th>agent</th><th>host</th><th>state</th><th>last seen</th></tr>");
    for a in &live {
        let on = v.online.contains(&a.id);
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td></tr>",
            esc(&a.id),
            esc(&a.hostname),
            if on { "on" } else { "off" },
            if on { "online" } else { "offline" },
            ago(v.now, a.last_seen)
        );
    }
    b.push_str("</table></section>");
    page("Fleet", 10, &b)
}

/// What one domain's page shows.
pub struct Domain<'a> {
    pub now: i64,
    pub record: &'a DomainRecord,
    pub health: &'a DomainHealth,
    /// Its snapshots, oldest first.
    pub snapshots: &'a [&'a SnapshotRecord],
    /// Its jobs, newest first.
    pub jobs: &'a [&'a JobRecord],
    pub alerts: &'a [&'a AlertRecord],
}

pub fn domain_page(v: &Domain) -> String {
    let h = &v.health.health;
    let d = v.record;
    let mut b = String::new();
    let _ = write!(
        b,
        "<div class=cards id=domain-health>\
         <div class=card><span>Health</span><b class={}>{}</b>{}</div>\
         <div class=card><span>RPO</span><b class={}>{}</b>target {}</div>\
         <div class=card><span>RTO</span><b>{}</b>last test restore, scaled</div>\
         <div class=card><span>Size</span><b>{}</b>{} · {}</div>\
         <div class=card><span>Dedup</span><b>{}</b>backed up per byte stored</div></div>",
        h.band,
        h.score,
        h.band,
        if h.rpo_met { "excellent" } else { "critical" },
        h.rpo_seconds
            .map(crate::alerts::words)
            .unwrap_or_else(|| "never".into()),
        crate::alerts::words(h.rpo_target_seconds),
        h.rto_seconds
            .map(crate::alerts::words)
            .unwrap_or_else(|| "unknown".into()),
        bytes(d.size_bytes),
        esc(&d.site_type),
        esc(&d.agent_id),
        h.dedup_ratio
            .map(|r| format!("{r:.1}×"))
            .unwrap_or_else(|| "–".into()),
    );
    b.push_str("<section id=health-parts><h2>Why this score</h2><table><tr><th>part</th><th>points</th><th>of</th></tr>");
    for (name, got, of) in &h.parts {
        let _ = write!(b, "<tr><td>{name}</td><td>{got}</td><td>{of}</td></tr>");
    }
    b.push_str("</table></section>");

    let firing: Vec<&&AlertRecord> = v
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    let _ = write!(
        b,
        "<section id=alerts><h2>Alerts ({} firing)</h2><table><tr><th>state</th><th>rule</th><th>fired</th><th>message</th></tr>",
        firing.len()
    );
    for a in v.alerts.iter().take(20) {
        let state = match a.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        };
        let _ = write!(
            b,
            "<tr class=alert><td class={state}>{state}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.rule),
            ago(v.now, a.fired_at),
            esc(&a.message)
        );
    }
    b.push_str("</table></section>");

    let files: Vec<(i64, f64)> = v
        .snapshots
        .iter()
        .filter(|s| s.content != "database")
        .map(|s| (s.time, s.total_bytes as f64))
        .collect();
    let stored: Vec<(i64, f64)> = v
        .snapshots
        .iter()
        .map(|s| (s.time, s.stored_bytes as f64))
        .collect();
    let _ = write!(
        b,
        "<section id=sizes><h2>Site size at each backup</h2>{}</section>\
         <section id=dedup><h2>Bytes newly stored by each backup (the rest deduplicated)</h2>{}</section>",
        bar_chart("size-history", &files, |v| bytes(v as u64)),
        bar_chart("stored-history", &stored, |v| bytes(v as u64))
    );

    b.push_str("<section id=runs><h2>Runs</h2><table><tr><th>started</th><th>job</th><th>kind</th><th>content</th><th>state</th><th>took</th><th>bytes</th><th>error</th></tr>");
    for j in v.jobs.iter().take(40) {
        let took = match (j.started_at, j.finished_at) {
            (Some(s), Some(e)) => crate::alerts::words(e - s),
            _ => String::new(),
        };
        let state = format!("{:?}", j.state).to_lowercase();
        let _ = write!(
            b,
            "<tr class=run><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(j.started_at.unwrap_or(j.created_at)),
            esc(&j.id),
            esc(&j.kind),
            if j.spec.test { " (test)" } else { "" },
            if j.spec.content.is_empty() { "files" } else { &j.spec.content },
            if j.state == JobState::Failed { "off" } else { "on" },
            state,
            took,
            bytes(j.total_bytes),
            esc(j.error.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</table></section>");
    page(&format!("{} on {}", d.name, d.agent_id), 30, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_agents_cannot_break_the_page() {
        assert_eq!(esc("<script>x</script>"), "&lt;script&gt;x&lt;/script&gt;");
        assert_eq!(seg("a b/../c"), "a%20b%2F..%2Fc");
        let svg = bar_chart("t", &[(0, 1.0), (86_400, 3.0)], |v| format!("{v}"));
        assert_eq!(svg.matches("<rect class=bar").count(), 2);
        assert!(bar_chart("t", &[], |v| format!("{v}")).contains("no data yet"));
    }
}
