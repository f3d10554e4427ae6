//! Notifications (SPEC MON-4): alerts that fire or resolve are told to the
//! channels of `[[notify]]` in controller.toml: email over SMTP, Slack and
//! Microsoft Teams incoming webhooks, and a generic JSON webhook whose body
//! is HMAC-signed.
//!
//! Each change is queued in the catalog's outbox in the same transaction as
//! the alert itself, and leaves it only once its channel took it, so a
//! receiver that is down or a controller restart loses nothing: delivery is
//! retried with backoff. A channel sends at most `max_per_hour` messages;
//! what is queued beyond that goes out as one summary, and with `digest` a
//! channel sends one summary per interval at most. Secrets (SMTP password,
//! webhook URLs, which carry tokens, HMAC keys) are read from files,
//! never from the catalog, and never logged.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::alerts::{AlertRecord, AlertState};

/// What happened, as receivers see it.
pub const ALERT_FIRING: &str = "alert_firing";
pub const ALERT_RESOLVED: &str = "alert_resolved";
pub const TEST: &str = "test";

/// Queued notifications older than this are dropped (and logged): a channel
/// down for a day is told the current state by the next changes.
const GIVE_UP_AFTER: i64 = 24 * 3600;
/// Retry backoff: first wait, doubled per failure, capped.
const RETRY_FIRST: i64 = 10;
const RETRY_MAX: i64 = 600;
/// One HTTP or SMTP delivery may take this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Email,
    Slack,
    Teams,
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, refused if the server
    /// does not offer it (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only to a relay on loopback.
    None,
}

/// One `[[notify]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// What `cairnctl notify test NAME` names: letters, digits, `-`, `_`.
    pub name: String,
    pub kind: Kind,
    /// email: HOST:PORT of the SMTP server.
    #[serde(default)]
    pub smtp_server: String,
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    #[serde(default)]
    pub smtp_user: String,
    /// File holding the SMTP password (mode 600).
    #[serde(default)]
    pub smtp_password_file: Option<PathBuf>,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: Vec<String>,
    /// slack, teams, webhook: the URL, or (better, since Slack's and
    /// Teams' URLs carry a token) a file holding it.
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// webhook: file holding the HMAC-SHA256 key signing each body
    /// (`X-Cairn-Signature: sha256=HEX`).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// At most one message per this interval (`1h`), summing up what
    /// happened; empty: one message per change.
    #[serde(default)]
    pub digest: String,
    /// Messages per hour at most; what is queued beyond goes out as one
    /// summary.
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
    /// Which events to send (`alert_firing`, `alert_resolved`); empty: both.
    #[serde(default)]
    pub events: Vec<String>,
}

fn default_max_per_hour() -> u32 {
    30
}

/// One queued notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `alert_firing`, `alert_resolved` or `test`.
    pub event: String,
    /// When it happened (controller clock).
    pub at: i64,
    pub alert: AlertRecord,
}

impl Event {
    /// The events an alert change causes: a new firing alert, or one that
    /// resolved. Message updates of a firing alert cause none.
    pub fn of_changes(before: &[AlertRecord], changed: &[AlertRecord], now: i64) -> Vec<Event> {
        let known: std::collections::HashSet<&str> = before.iter().map(|a| a.id.as_str()).collect();
        changed
            .iter()
            .filter_map(|a| {
                let event = match a.state {
                    AlertState::Firing if !known.contains(a.id.as_str()) => ALERT_FIRING,
                    AlertState::Resolved => ALERT_RESOLVED,
                    AlertState::Firing => return None,
                };
                Some(Event {
                    event: event.into(),
                    at: now,
                    alert: a.clone(),
                })
            })
            .collect()
    }

    fn line(&self) -> String {
        let verb = match self.event.as_str() {
            ALERT_FIRING => "FIRING",
            ALERT_RESOLVED => "RESOLVED",
            _ => "TEST",
        };
        format!("{verb} {}: {}", self.alert.rule, self.alert.message)
    }
}

impl ChannelConfig {
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }

    pub fn digest_seconds(&self) -> anyhow::Result<i64> {
        if self.digest.is_empty() {
            return Ok(0);
        }
        let d = humantime::parse_duration(&self.digest).map_err(|e| {
            anyhow::anyhow!("notify {:?}: digest {:?}: {e}", self.name, self.digest)
        })?;
        Ok(d.as_secs().min(i64::MAX as u64) as i64)
    }

    /// Checks the table and reads its secrets: a channel that cannot work
    /// stops the controller at startup, not at 3 a.m.
    pub fn open(&self) -> anyhow::Result<Channel> {
        let name = &self.name;
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "notify {name:?}: a channel name is 1-64 letters, digits, '-' or '_'"
        );
        self.digest_seconds()?;
        anyhow::ensure!(
            self.max_per_hour > 0,
            "notify {name:?}: max_per_hour must be above zero"
        );
        for e in &self.events {
            anyhow::ensure!(
                e == ALERT_FIRING || e == ALERT_RESOLVED,
                "notify {name:?}: unknown event {e:?} (alert_firing, alert_resolved)"
            );
        }
        let sender = match self.kind {
            Kind::Email => self.open_email()?,
            Kind::Slack | Kind::Teams | Kind::Webhook => self.open_http()?,
        };
        Ok(Channel {
            cfg: self.clone(),
            sender,
            state: Mutex::new(ChannelState::default()),
        })
    }

    fn open_email(&self) -> anyhow::Result<Sender> {
        let name = &self.name;
        let (host, port) = self
            .smtp_server
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "notify {name:?}: smtp_server must be HOST:PORT, got {:?}",
                    self.smtp_server
                )
            })?;
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("notify {name:?}: from {:?}: {e}", self.from))?;
        anyhow::ensure!(!self.to.is_empty(), "notify {name:?}: no `to` address");
        let to = self
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| anyhow::anyhow!("notify {name:?}: to {t:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut b = match self.smtp_tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
            SmtpTls::None => {
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                anyhow::ensure!(
                    loopback,
                    "notify {name:?}: smtp_tls = \"none\" is only allowed to a relay on loopback, not {host}"
                );
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            }
        }
        .port(port)
        .timeout(Some(SEND_TIMEOUT));
        if !self.smtp_user.is_empty() {
            let file = self.smtp_password_file.as_deref().ok_or_else(|| {
                anyhow::anyhow!("notify {name:?}: smtp_user needs smtp_password_file")
            })?;
            let password = read_secret_file(file)?;
            b = b.credentials(Credentials::new(self.smtp_user.clone(), password));
        }
        Ok(Sender::Email {
            transport: b.build(),
            from,
            to,
        })
    }

    fn open_http(&self) -> anyhow::Result<Sender> {
        let name = &self.name;
        let url = match (&self.url_file, self.url.is_empty()) {
            (Some(f), true) => read_secret_file(f)?,
            (None, false) => self.url.clone(),
            _ => anyhow::bail!("notify {name:?}: set one of url and url_file"),
        };
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| anyhow::anyhow!("notify {name:?}: the URL does not parse: {e}"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "https" | "http"),
            "notify {name:?}: the URL must be http(s)"
        );
        let key = match (&self.secret_file, self.kind) {
            (Some(f), Kind::Webhook) => Some(read_secret_file(f)?.into_bytes()),
            (Some(_), _) => {
                anyhow::bail!("notify {name:?}: secret_file signs generic webhooks only")
            }
            (None, _) => None,
        };
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .user_agent(concat!("cairn-controller/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender::Http {
            host: parsed.host_str().unwrap_or_default().to_string(),
            url,
            key,
            client,
        })
    }
}

/// A secret's file: its first line, trimmed; refused if others may read it.
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        meta.permissions().mode() & 0o004 == 0,
        "{} is world-readable; it holds a secret (chmod 600 it)",
        path.display()
    );
    let text = std::fs::read_to_string(path)?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
    Ok(secret)
}

enum Sender {
    Email {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
    Http {
        /// The URL holds a token: only its host is ever shown.
        url: String,
        host: String,
        key: Option<Vec<u8>>,
        client: reqwest::Client,
    },
}

/// Delivery bookkeeping, in memory (the outbox itself is in the catalog).
#[derive(Debug, Default, Clone)]
pub struct ChannelState {
    pub failures: u32,
    /// No attempt before this (controller clock).
    pub retry_at: i64,
    /// Times of the messages sent in the last hour.
    pub sent: VecDeque<i64>,
    pub last_sent: Option<i64>,
    pub last_error: Option<String>,
}

pub struct Channel {
    pub cfg: ChannelConfig,
    sender: Sender,
    pub state: Mutex<ChannelState>,
}

/// The channels of controller.toml, by name.
#[derive(Default)]
pub struct Channels(pub Vec<Channel>);

impl Channels {
    pub fn open(cfgs: &[ChannelConfig]) -> anyhow::Result<Channels> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for c in cfgs {
            anyhow::ensure!(
                seen.insert(c.name.clone()),
                "notify {:?} is defined twice",
                c.name
            );
            out.push(c.open()?);
        }
        Ok(Channels(out))
    }

    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.0.iter().find(|c| c.cfg.name == name)
    }

    /// The outbox entries one set of events makes: each event for each
    /// channel that wants it.
    pub fn route(&self, events: &[Event]) -> Vec<(String, Event)> {
        let mut out = Vec::new();
        for c in &self.0 {
            for e in events.iter().filter(|e| c.cfg.wants(&e.event)) {
                out.push((c.cfg.name.clone(), e.clone()));
            }
        }
        out
    }
}

/// What one message carries: one event, or a summary of several.
pub struct Message<'a> {
    pub events: &'a [Event],
    pub controller: &'a str,
    pub sent_at: i64,
}

impl Message<'_> {
    pub fn subject(&self) -> String {
        match self.events {
            [one] => format!("[cairn] {}", one.line()),
            many => {
                let firing = many.iter().filter(|e| e.event == ALERT_FIRING).count();
                format!(
                    "[cairn] {} alert changes: {firing} firing, {} resolved",
                    many.len(),
                    many.len() - firing
                )
            }
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for e in self.events {
            let a = &e.alert;
            out.push_str(&e.line());
            out.push('\n');
            out.push_str(&format!(
                "  alert {} · agent {}{} · fired {}",
                a.id,
                a.agent_id,
                if a.domain.is_empty() {
                    String::new()
                } else {
                    format!(" · domain {}", a.domain)
                },
                rfc3339(a.fired_at)
            ));
            if let Some(r) = a.resolved_at {
                out.push_str(&format!(" · resolved {}", rfc3339(r)));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "\nfrom the cairn controller at {} · cairnctl alerts list\n",
            self.controller
        ));
        out
    }

    /// The generic webhook's body.
    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "source": "cairn",
            "controller": self.controller,
            "sent_at": self.sent_at,
            "events": self.events.iter().map(|e| serde_json::json!({
                "event": e.event,
                "at": e.at,
                "alert": e.alert,
            })).collect::<Vec<_>>(),
        }))
        .expect("json")
    }
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}

/// `sha256=HEX` of HMAC-SHA256(key, body).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Channel {
    /// Where it sends, without secrets.
    pub fn target(&self) -> String {
        match &self.sender {
            Sender::Email { to, .. } => format!(
                "smtp {} → {}",
                self.cfg.smtp_server,
                to.iter()
                    .map(|m| m.email.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Sender::Http { host, .. } => host.clone(),
        }
    }

    /// Sends one message; the error names the cause without the URL.
    pub async fn send(&self, m: &Message<'_>) -> Result<(), String> {
        match &self.sender {
            Sender::Email {
                transport,
                from,
                to,
            } => {
                let mut b = lettre::Message::builder()
                    .from(from.clone())
                    .subject(m.subject());
                for t in to {
                    b = b.to(t.clone());
                }
                let mail = b
                    .header(lettre::message::header::ContentType::TEXT_PLAIN)
                    .body(m.text())
                    .map_err(|e| format!("building the mail: {e}"))?;
                transport
                    .send(mail)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("smtp {}: {}", self.cfg.smtp_server, causes(&e)))
            }
            Sender::Http {
                url,
                host,
                key,
                client,
            } => {
                let body = match self.cfg.kind {
                    Kind::Slack => serde_json::to_vec(&serde_json::json!({
                        "text": format!("*{}*\n{}", m.subject(), m.text()),
                    }))
                    .expect("json"),
                    Kind::Teams => serde_json::to_vec(&teams_card(m)).expect("json"),
                    _ => m.json(),
                };
                let mut req = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json");
                if let Some(k) = key {
                    req = req.header("X-Cairn-Signature", signature(k, &body));
                }
                let resp = req
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("{host}: {}", causes(&e.without_url())))?;
                let status = resp.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{host}: HTTP {status}"))
                }
            }
        }
    }
}

/// An error with its causes ("error sending request: … : Connection refused").
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// An Adaptive Card, as Teams' workflow webhooks take it.
fn teams_card(m: &Message) -> serde_json::Value {
    let mut body = vec![serde_json::json!({
        "type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
        "text": m.subject(),
    })];
    for line in m.text().lines().filter(|l| !l.is_empty()) {
        body.push(serde_json::json!({"type": "TextBlock", "wrap": true, "text": line}));
    }
    serde_json::json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

/// What to do with a channel's queue now.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to send yet.
    Wait,
    /// Send these (indices into the queue) as one message each, in order.
    EachAlone(usize),
    /// Send the whole queue as one summary.
    Summary,
}

/// Decides from the queue length, the channel's limits and what it sent.
pub fn plan(
    cfg_digest: i64,
    max_per_hour: u32,
    st: &ChannelState,
    queued: usize,
    now: i64,
) -> Plan {
    if queued == 0 || now < st.retry_at {
        return Plan::Wait;
    }
    if cfg_digest > 0 {
        return match st.last_sent {
            Some(t) if now - t < cfg_digest => Plan::Wait,
            _ if queued == 1 => Plan::EachAlone(1),
            _ => Plan::Summary,
        };
    }
    let sent = st.sent.iter().filter(|t| now - **t < 3600).count() as u32;
    let left = max_per_hour.saturating_sub(sent) as usize;
    if left == 0 {
        Plan::Wait
    } else if queued <= left {
        Plan::EachAlone(queued)
    } else {
        Plan::Summary
    }
}

/// Delivers what is due on every channel; called by the notifier loop.
pub async fn deliver(f: &crate::fleet::Fleet) {
    for c in &f.channels.0 {
        if let Err(e) = deliver_channel(f, c).await {
            tracing::error!(channel = %c.cfg.name, error = %e, "notifications");
        }
    }
}

async fn deliver_channel(f: &crate::fleet::Fleet, c: &Channel) -> anyhow::Result<()> {
    let now = crate::clock::now();
    let mut queue = f.catalog.outbox(&c.cfg.name)?;
    let stale: Vec<Vec<u8>> = queue
        .iter()
        .filter(|(_, e)| now - e.at > GIVE_UP_AFTER)
        .map(|(k, _)| k.clone())
        .collect();
    if !stale.is_empty() {
        tracing::error!(channel = %c.cfg.name, dropped = stale.len(), "notifications undelivered for a day were dropped");
        f.catalog.outbox_done(&stale)?;
        f.metrics
            .count_notify(&c.cfg.name, "dropped", stale.len() as u64);
        queue.retain(|(_, e)| now - e.at <= GIVE_UP_AFTER);
    }
    let st = c.state.lock().unwrap().clone();
    let batches: Vec<std::ops::Range<usize>> = match plan(
        c.cfg.digest_seconds()?,
        c.cfg.max_per_hour,
        &st,
        queue.len(),
        now,
    ) {
        Plan::Wait => return Ok(()),
        Plan::EachAlone(n) => (0..n).map(|i| i..i + 1).collect(),
        Plan::Summary => std::iter::once(0..queue.len()).collect(),
    };
    for range in batches {
        let events: Vec<Event> = queue[range.clone()]
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        let m = Message {
            events: &events,
            controller: &f.cfg.public_url,
            sent_at: now,
        };
        match c.send(&m).await {
            Ok(()) => {
                let keys: Vec<Vec<u8>> = queue[range].iter().map(|(k, _)| k.clone()).collect();
                f.catalog.outbox_done(&keys)?;
                f.metrics.count_notify(&c.cfg.name, "sent", 1);
                let mut s = c.state.lock().unwrap();
                s.failures = 0;
                s.retry_at = 0;
                s.last_error = None;
                s.last_sent = Some(now);
                s.sent.push_back(now);
                while s.sent.front().is_some_and(|t| now - t >= 3600) {
                    s.sent.pop_front();
                }
                tracing::info!(channel = %c.cfg.name, events = events.len(), "notification sent");
            }
            Err(e) => {
                f.metrics.count_notify(&c.cfg.name, "failed", 1);
                let mut s = c.state.lock().unwrap();
                s.failures += 1;
                let wait = (RETRY_FIRST << (s.failures - 1).min(10)).min(RETRY_MAX);
                s.retry_at = now + wait;
                s.last_error = Some(e.clone());
                tracing::warn!(channel = %c.cfg.name, error = %e, retry_in = wait, "notification not delivered; will retry");
                break;
            }
        }
    }
    Ok(())
}

/// Sends a test message now, outside the queue (`cairnctl notify test`).
pub async fn send_test(f: &crate::fleet::Fleet, c: &Channel, who: &str) -> Result<(), String> {
    let now = crate::clock::now();
    let ev = Event {
        event: TEST.into(),
        at: now,
        alert: AlertRecord {
            id: "test".into(),
            rule: "test".into(),
            agent_id: String::new(),
            domain: String::new(),
            state: AlertState::Resolved,
            message: format!("a test of channel {} asked by {who}", c.cfg.name),
            fired_at: now,
            last_seen: now,
            resolved_at: None,
            acked_by: None,
            acked_at: None,
        },
    };
    let r = c
        .send(&Message {
            events: std::slice::from_ref(&ev),
            controller: &f.cfg.public_url,
            sent_at: now,
        })
        .await;
    f.metrics
        .count_notify(&c.cfg.name, if r.is_ok() { "sent" } else { "failed" }, 1);
    r
}

/// Counters by (channel, outcome), for /metrics.
#[derive(Default)]
pub struct NotifyCounts(pub Mutex<HashMap<(String, &'static str), u64>>);

#[cfg(test)]
mod tests {
    use super::*;

    fn st(sent: &[i64], last: Option<i64>, retry_at: i64) -> ChannelState {
        ChannelState {
            sent: sent.iter().copied().collect(),
            last_sent: last,
            retry_at,
            ..Default::default()
        }
    }

    #[test]
    fn the_plan_keeps_the_rate_and_the_digest() {
        // Nothing queued, or a retry not yet due: wait.
        assert_eq!(plan(0, 30, &st(&[], None, 0), 0, 100), Plan::Wait);
        assert_eq!(plan(0, 30, &st(&[], None, 200), 3, 100), Plan::Wait);
        // Within the hourly allowance: one message per change.
        assert_eq!(plan(0, 30, &st(&[], None, 0), 3, 100), Plan::EachAlone(3));
        // 300 changes against 30 an hour: one summary, not 300 mails.
        assert_eq!(plan(0, 30, &st(&[], None, 0), 300, 100), Plan::Summary);
        // The allowance spent within the hour: wait; an hour on, send.
        let full: Vec<i64> = (0..30).collect();
        assert_eq!(plan(0, 30, &st(&full, Some(29), 0), 1, 100), Plan::Wait);
        assert_eq!(
            plan(0, 30, &st(&full, Some(29), 0), 1, 3_600 + 30),
            Plan::EachAlone(1)
        );
        // Digest: the first change goes at once, then one summary an hour.
        assert_eq!(
            plan(3600, 30, &st(&[], None, 0), 1, 100),
            Plan::EachAlone(1)
        );
        assert_eq!(
            plan(3600, 30, &st(&[100], Some(100), 0), 5, 200),
            Plan::Wait
        );
        assert_eq!(
            plan(3600, 30, &st(&[100], Some(100), 0), 5, 3_700),
            Plan::Summary
        );
    }

    fn alert(id: &str, state: AlertState) -> AlertRecord {
        AlertRecord {
            id: id.into(),
            rule: "dump_failed".into(),
            agent_id: "a1".into(),
            domain: "shop.test".into(),
            state,
            message: "shop.test on a1: mariadb-dump: Access denied".into(),
            fired_at: 1_000,
            last_seen: 1_000,
            resolved_at: (state == AlertState::Resolved).then_some(2_000),
            acked_by: None,
            acked_at: None,
        }
    }

    #[test]
    fn only_new_and_resolved_alerts_are_told() {
        let before = [alert("al1", AlertState::Firing)];
        let changed = [
            // al1's message moved: not news.
            alert("al1", AlertState::Firing),
            alert("al2", AlertState::Firing),
            alert("al3", AlertState::Resolved),
        ];
        let ev = Event::of_changes(&before, &changed, 5);
        let got: Vec<(&str, &str)> = ev
            .iter()
            .map(|e| (e.event.as_str(), e.alert.id.as_str()))
            .collect();
        assert_eq!(got, [(ALERT_FIRING, "al2"), (ALERT_RESOLVED, "al3")]);
    }

    #[test]
    fn messages_name_the_alert_and_bodies_are_signed() {
        let ev = [Event {
            event: ALERT_FIRING.into(),
            at: 1_000,
            alert: alert("al2", AlertState::Firing),
        }];
        let m = Message {
            events: &ev,
            controller: "https://c.example:7443",
            sent_at: 1_001,
        };
        assert_eq!(
            m.subject(),
            "[cairn] FIRING dump_failed: shop.test on a1: mariadb-dump: Access denied"
        );
        assert!(m.text().contains("domain shop.test"), "{}", m.text());
        let body = m.json();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["events"][0]["alert"]["id"], "al2");
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_channel_that_cannot_work_is_refused_at_startup() {
        let base = ChannelConfig {
            name: "ops".into(),
            kind: Kind::Email,
            smtp_server: "mail.example.com:587".into(),
            smtp_tls: SmtpTls::None,
            smtp_user: String::new(),
            smtp_password_file: None,
            from: "cairn@example.com".into(),
            to: vec!["ops@example.com".into()],
            url: String::new(),
            url_file: None,
            secret_file: None,
            digest: String::new(),
            max_per_hour: 30,
            events: vec![],
        };
        let err = |c: ChannelConfig| c.open().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(base.clone()).contains("only allowed to a relay on loopback"));
        let mut ok = base.clone();
        ok.smtp_tls = SmtpTls::Starttls;
        assert!(ok.open().is_ok());
        let mut bad = ok.clone();
        bad.name = "a\0b".into();
        assert!(err(bad).contains("channel name"));
        let mut bad = ok.clone();
        bad.events = vec!["backup_ok".into()];
        assert!(err(bad).contains("unknown event"));
        let mut bad = ok.clone();
        bad.smtp_user = "cairn".into();
        assert!(err(bad).contains("smtp_password_file"));
        let tmp = tempfile::tempdir().unwrap();
        let url = tmp.path().join("slack.url");
        std::fs::write(&url, "https://hooks.slack.example/T0/B0/secret\n").unwrap();
        let mut hook = ok.clone();
        hook.kind = Kind::Slack;
        hook.url_file = Some(url.clone());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(err(hook.clone()).contains("world-readable"));
        std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ch = hook.open().unwrap();
        assert_eq!(ch.target(), "hooks.slack.example", "the token stays hidden");
    }
}
