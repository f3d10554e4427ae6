//! `controller.toml`: where the controller listens, keeps its state, and
//! which repository it serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC over mutual TLS, for agents and cairnctl.
    pub listen: SocketAddr,
    /// The status page, /api/status, /metrics and /healthz.
    #[serde(default = "default_web")]
    pub web_listen: SocketAddr,
    /// File holding the token the web listener asks for (mode 600);
    /// required when `web_listen` is not a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_token_file: Option<PathBuf>,
    /// The URL agents and cairnctl dial (printed in join commands).
    pub public_url: String,
    /// Catalog (sled) and PKI (`pki/`).
    pub state_dir: PathBuf,
    pub repository: RepositoryConfig,
    /// Seconds between heartbeats an agent sends; three missed mean offline.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u32,
    /// A running job that has not ended after this long (`90m`, `12h`) is
    /// failed and its agent told to cancel it; its read grant and the blobs
    /// it pinned against gc are released.
    #[serde(default = "default_job_timeout")]
    pub job_timeout: String,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Where alerts are told (`[[notify]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::ChannelConfig>,
}

/// Thresholds of the built-in alert rules (`cairnctl alerts list`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// An agent away longer than this is alerted on.
    #[serde(default = "default_agent_offline")]
    pub agent_offline: String,
    /// Certificates (CA, controller, agents) expiring within this are alerted on.
    #[serde(default = "default_cert_expiry")]
    pub cert_expiry: String,
    /// Percent of the repository's storage in use that is alerted on.
    #[serde(default = "default_storage_full")]
    pub storage_full: u8,
    /// The repository's capacity (`2 TB`) where the storage does not say
    /// (S3); a local repository's is its file system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_limit: Option<String>,
    /// A day that stores this many times the median day of the two weeks
    /// before it is alerted on.
    #[serde(default = "default_storage_growth")]
    pub storage_growth: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            agent_offline: default_agent_offline(),
            cert_expiry: default_cert_expiry(),
            storage_full: default_storage_full(),
            storage_limit: None,
            storage_growth: default_storage_growth(),
        }
    }
}

fn default_agent_offline() -> String {
    "15m".into()
}

fn default_cert_expiry() -> String {
    "30d".into()
}

fn default_storage_full() -> u8 {
    85
}

fn default_storage_growth() -> f64 {
    3.0
}

fn seconds(name: &str, v: &str) -> anyhow::Result<i64> {
    let d =
        humantime::parse_duration(v).map_err(|e| anyhow::anyhow!("alerts.{name} {v:?}: {e}"))?;
    Ok(d.as_secs().min(i64::MAX as u64) as i64)
}

impl AlertsConfig {
    pub fn agent_offline(&self) -> anyhow::Result<i64> {
        seconds("agent_offline", &self.agent_offline)
    }

    /// The rules' thresholds; errors name the setting.
    pub fn limits(&self) -> anyhow::Result<crate::alerts::Limits> {
        if !(1..=100).contains(&self.storage_full) {
            anyhow::bail!(
                "alerts.storage_full {}: expected a percent, 1 to 100",
                self.storage_full
            );
        }
        if !(self.storage_growth > 1.0 && self.storage_growth.is_finite()) {
            anyhow::bail!(
                "alerts.storage_growth {}: expected a factor above 1",
                self.storage_growth
            );
        }
        Ok(crate::alerts::Limits {
            agent_offline: self.agent_offline()?,
            cert_expiry: seconds("cert_expiry", &self.cert_expiry)?,
            storage_full: self.storage_full,
            storage_growth: self.storage_growth,
        })
    }

    /// `storage_limit` in bytes.
    pub fn storage_limit(&self) -> anyhow::Result<Option<u64>> {
        self.storage_limit
            .as_deref()
            .map(|v| {
                v.parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|e| anyhow::anyhow!("alerts.storage_limit {v:?}: {e}"))
            })
            .transpose()
    }
}

/// How the controller runs the fleet's schedules, retention and gc.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// false: no scheduled runs and no maintenance window; only jobs started
    /// with cairnctl run (a freeze, or a controller kept for restores).
    #[serde(default = "yes")]
    pub run_schedules: bool,
    /// Jobs one agent runs at once.
    #[serde(default = "default_agent_jobs")]
    pub agent_jobs: usize,
    /// Jobs the whole fleet runs at once.
    #[serde(default = "default_fleet_jobs")]
    pub fleet_jobs: usize,
    /// A scheduled run whose agent stays offline this long is failed.
    #[serde(default = "default_offline_give_up")]
    pub offline_give_up: String,
    /// When retention is applied and gc runs (cron, UTC unless
    /// `maintenance_timezone` says otherwise).
    #[serde(default = "default_maintenance")]
    pub maintenance: String,
    #[serde(default)]
    pub maintenance_timezone: String,
    /// Packs younger than this (by the storage's clock) are never collected.
    #[serde(default = "default_gc_grace")]
    pub gc_grace: String,
    /// Bytes per second all agents together may stream into the controller
    /// (`100MiB`, `50MB/s`); empty or 0: no cap.
    #[serde(default)]
    pub ingest_bandwidth: String,
    /// How long an in-place restore keeps the tree it replaced beside the
    /// site, for `cairnctl rollback`.
    #[serde(default = "default_keep_rollback")]
    pub keep_rollback: String,
    /// How often an agent that streams its database server's binary log
    /// ships it: the recovery point of point-in-time restores.
    #[serde(default = "default_binlog_ship_every")]
    pub binlog_ship_every: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            run_schedules: true,
            agent_jobs: default_agent_jobs(),
            fleet_jobs: default_fleet_jobs(),
            offline_give_up: default_offline_give_up(),
            maintenance: default_maintenance(),
            maintenance_timezone: String::new(),
            gc_grace: default_gc_grace(),
            ingest_bandwidth: String::new(),
            keep_rollback: default_keep_rollback(),
            binlog_ship_every: default_binlog_ship_every(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_agent_jobs() -> usize {
    4
}
fn default_fleet_jobs() -> usize {
    64
}
fn default_binlog_ship_every() -> String {
    "30s".into()
}
fn default_keep_rollback() -> String {
    "7d".into()
}
fn default_offline_give_up() -> String {
    "6h".into()
}
fn default_maintenance() -> String {
    "0 5 * * *".into()
}
fn default_gc_grace() -> String {
    "1h".into()
}

impl SchedulerConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.agent_jobs > 0,
            "scheduler.agent_jobs must be above zero"
        );
        anyhow::ensure!(
            self.fleet_jobs > 0,
            "scheduler.fleet_jobs must be above zero"
        );
        self.offline_give_up()?;
        self.keep_rollback()?;
        self.binlog_ship_every()?;
        self.gc_grace()?;
        self.maintenance_cron()
            .map_err(|e| anyhow::anyhow!("scheduler.maintenance: {e}"))?;
        Ok(())
    }

    pub fn keep_rollback(&self) -> anyhow::Result<i64> {
        let d = humantime::parse_duration(&self.keep_rollback).map_err(|e| {
            anyhow::anyhow!("scheduler.keep_rollback {:?}: {e}", self.keep_rollback)
        })?;
        Ok(d.as_secs().min(i64::MAX as u64) as i64)
    }

    pub fn binlog_ship_every(&self) -> anyhow::Result<i64> {
        let d = humantime::parse_duration(&self.binlog_ship_every).map_err(|e| {
            anyhow::anyhow!(
                "scheduler.binlog_ship_every {:?}: {e}",
                self.binlog_ship_every
            )
        })?;
        anyhow::ensure!(
            !d.is_zero(),
            "scheduler.binlog_ship_every must be above zero"
        );
        Ok(d.as_secs().clamp(1, i64::MAX as u64) as i64)
    }

    pub fn offline_give_up(&self) -> anyhow::Result<i64> {
        let d = humantime::parse_duration(&self.offline_give_up).map_err(|e| {
            anyhow::anyhow!("scheduler.offline_give_up {:?}: {e}", self.offline_give_up)
        })?;
        Ok(d.as_secs().min(i64::MAX as u64) as i64)
    }

    pub fn ingest_bytes_per_second(&self) -> anyhow::Result<u64> {
        crate::ingest::parse_rate(&self.ingest_bandwidth)
            .map_err(|e| anyhow::anyhow!("scheduler.ingest_bandwidth {e}"))
    }

    pub fn gc_grace(&self) -> anyhow::Result<std::time::Duration> {
        humantime::parse_duration(&self.gc_grace)
            .map_err(|e| anyhow::anyhow!("scheduler.gc_grace {:?}: {e}", self.gc_grace))
    }

    pub fn maintenance_cron(&self) -> Result<crate::schedule::CronIn, String> {
        let tz = crate::schedule::parse_tz(&self.maintenance_timezone)?;
        crate::schedule::parse_cron(&self.maintenance, tz)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataPath {
    /// Agents stream packs to the controller, which writes them; agents hold no
    /// storage credentials and cannot delete anything.
    #[default]
    ViaController,
    /// Agents write packs to the storage themselves and register them; the
    /// controller verifies each before indexing it. On S3 each pack goes to
    /// a presigned PUT the controller issues, so agents hold no credential;
    /// a directory location must be shared with the agents (NFS, say).
    Direct,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// A directory, or s3://BUCKET/PREFIX.
    pub location: String,
    /// File holding the repository passphrase (else $CAIRN_PASSPHRASE).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    #[serde(default)]
    pub data_path: DataPath,
    /// KEY=VALUE lines (AWS_ACCESS_KEY_ID …) for S3, read by the controller
    /// only, never logged. Must not be world-readable.
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Direct mode on S3: how long a presigned PUT of one pack stays valid.
    /// A pack is verified once its PUT has expired, so a backup's commit
    /// waits up to this long after its last pack.
    #[serde(default = "default_presign_seconds")]
    pub presign_seconds: u32,
}

fn default_presign_seconds() -> u32 {
    60
}

fn default_web() -> SocketAddr {
    "127.0.0.1:7480".parse().expect("valid address")
}

fn default_heartbeat() -> u32 {
    15
}

fn default_job_timeout() -> String {
    "12h".into()
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cfg.job_timeout()
            .map_err(|e| anyhow::anyhow!("{}: job_timeout: {e}", path.display()))?;
        cfg.scheduler
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !cfg.web_listen.ip().is_loopback() && cfg.web_token_file.is_none() {
            anyhow::bail!(
                "{}: web_listen {} is reachable beyond this machine: set web_token_file (a file holding a token the status pages and /metrics will ask for)",
                path.display(),
                cfg.web_listen
            );
        }
        if !cfg.public_url.starts_with("https://") {
            anyhow::bail!(
                "{}: public_url must be https://HOST:PORT, got {:?}",
                path.display(),
                cfg.public_url
            );
        }
        Ok(cfg)
    }

    pub fn job_timeout(&self) -> anyhow::Result<std::time::Duration> {
        let d = humantime::parse_duration(&self.job_timeout).map_err(|e| {
            anyhow::anyhow!(
                "{:?} is not a duration like 90m or 12h: {e}",
                self.job_timeout
            )
        })?;
        anyhow::ensure!(!d.is_zero(), "must be above zero");
        Ok(d)
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }
}

/// Reads KEY=VALUE lines (comments and blanks skipped), refusing a file
/// others can read: it holds storage credentials.
pub fn read_env_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        anyhow::bail!(
            "{} is world-readable; it holds credentials (chmod 600 it)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{}:{}: expected KEY=VALUE", path.display(), n + 1))?;
        out.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.repository.data_path, DataPath::ViaController);
        assert!(cfg.web_listen.ip().is_loopback());
    }
}
