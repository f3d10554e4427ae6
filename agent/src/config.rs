//! `agent.toml`: which controller to dial, where state lives, where to look
//! for domains (`[discovery]`), and domains declared by hand (`[[domain]]`),
//! which override what discovery finds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// https://HOST:PORT of the controller (written by `enroll`).
    #[serde(default)]
    pub controller: String,
    /// Certificate, key, CA (0600/0700).
    #[serde(default = "default_state")]
    pub state_dir: PathBuf,
    /// The name this agent enrolls under (default: the host name).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub discovery: Discovery,
    #[serde(default, rename = "domain")]
    pub domains: Vec<DomainConfig>,
    /// The MariaDB/MySQL server whose binary log is streamed and shipped
    /// for point-in-time database restores; none: dumps only.
    #[serde(default)]
    pub binlog: Option<BinlogConfig>,
    /// The PostgreSQL server whose write-ahead log is streamed and shipped,
    /// with a daily base backup, for point-in-time restores; none: dumps only.
    #[serde(default)]
    pub wal: Option<WalConfig>,
}

/// `[wal]`: how to reach the PostgreSQL server as a user with the
/// REPLICATION attribute. The password is read from a file (0600).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// The socket directory (as PGHOST takes it), or host and port.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The replication slot the stream holds on the server.
    #[serde(default = "default_wal_slot")]
    pub slot: String,
    /// How often a new base backup of the whole cluster is taken.
    #[serde(default = "default_wal_base_every")]
    pub base_every: String,
    /// Base backups (and the WAL after them) kept this long in the spool:
    /// point in time reaches back this far. Each one is a copy of the
    /// cluster on this server's disk.
    #[serde(default = "default_wal_keep")]
    pub keep: String,
}

fn default_wal_slot() -> String {
    "cairn".into()
}

fn default_wal_base_every() -> String {
    "1d".into()
}

fn default_wal_keep() -> String {
    "2d".into()
}

impl WalConfig {
    /// The connection, with the password read from its file.
    pub fn connection(&self) -> anyhow::Result<cairn_dump::Connection> {
        Ok(cairn_dump::Connection {
            host: self.host.clone(),
            port: self.port,
            socket: self.socket.clone(),
            user: self.user.clone(),
            password: read_password("wal", self.password_file.as_deref())?,
            database: String::new(),
        })
    }
}

fn read_password(section: &str, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    file.map(|p| {
        Ok(std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("[{section}] password_file {}: {e}", p.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string())
    })
    .transpose()
}

/// `[binlog]`: how to reach the server as a user that may read and replay
/// its binary log (REPLICATION SLAVE, BINLOG MONITOR, BINLOG REPLAY). The
/// password is read from a file (0600), never written here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogConfig {
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Log files older than this are removed from the spool (and so, after
    /// the next shipment, from the newest copy): point in time reaches back
    /// this far.
    #[serde(default = "default_binlog_keep")]
    pub keep: String,
    /// The replica id the stream uses; unique among the server's replicas.
    #[serde(default = "default_binlog_server_id")]
    pub server_id: u32,
}

fn default_binlog_keep() -> String {
    "8d".into()
}

fn default_binlog_server_id() -> u32 {
    // Replicas rarely use ids this high.
    4_000_000_000
}

impl BinlogConfig {
    /// The connection, with the password read from its file.
    pub fn connection(&self) -> anyhow::Result<cairn_dump::Connection> {
        Ok(cairn_dump::Connection {
            host: self.host.clone(),
            port: self.port,
            socket: self.socket.clone(),
            user: self.user.clone(),
            password: read_password("binlog", self.password_file.as_deref())?,
            database: String::new(),
        })
    }
}

/// Where domains are looked for (SPEC INT-1), and how often the domains are
/// found and analyzed again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    pub enabled: bool,
    /// Globs whose directories are web roots, one domain each.
    pub web_roots: Vec<String>,
    /// nginx main files (or lone vhost files); their includes are followed.
    pub nginx: Vec<PathBuf>,
    /// apache main files; their Include/IncludeOptional are followed.
    pub apache: Vec<PathBuf>,
    /// Where a domain's access log may be, besides what the web server names:
    /// `{name}` is the domain, `{root}` its directory.
    pub access_logs: Vec<String>,
    /// Discovery and analysis run at start and then this often ("30s", "15m", "1h").
    pub interval: String,
}

impl Default for Discovery {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Discovery {
            enabled: true,
            web_roots: s(&["/var/www/*", "/home/*/public_html", "/srv/www/*"]),
            nginx: vec!["/etc/nginx/nginx.conf".into()],
            apache: vec![
                "/etc/apache2/apache2.conf".into(),
                "/etc/httpd/conf/httpd.conf".into(),
            ],
            access_logs: s(&[
                "{root}/logs/access.log",
                "/var/log/nginx/{name}.access.log",
                "/var/log/nginx/{name}-access.log",
                "/var/log/apache2/{name}-access.log",
                "/var/log/apache2/{name}.access.log",
                "/var/log/httpd/{name}-access_log",
            ]),
            interval: "1h".into(),
        }
    }
}

impl Discovery {
    pub fn interval(&self) -> anyhow::Result<Duration> {
        parse_duration(&self.interval)
    }
}

/// `90s`, `15m`, `1h`, `1d`, `1h30m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(n) => Duration::from_secs(n),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| anyhow::anyhow!("{s:?} is not a duration (like 90s, 15m, 1h, 1d): {e}"))?,
    };
    if d.is_zero() {
        anyhow::bail!("{s:?}: the interval must be above zero");
    }
    Ok(d)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    pub name: String,
    pub path: PathBuf,
    /// Extra exclude globs, on top of the defaults (cache/, logs/, *.log …).
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Access logs for traffic analysis, if discovery's places miss them.
    #[serde(default)]
    pub access_logs: Vec<PathBuf>,
}

fn default_state() -> PathBuf {
    PathBuf::from("/var/lib/cairn/agent")
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cfg.discovery
            .interval()
            .map_err(|e| anyhow::anyhow!("{}: [discovery] interval: {e}", path.display()))?;
        if let Some(b) = &cfg.binlog {
            parse_duration(&b.keep)
                .map_err(|e| anyhow::anyhow!("{}: [binlog] keep: {e}", path.display()))?;
        }
        if let Some(w) = &cfg.wal {
            for (what, v) in [("keep", &w.keep), ("base_every", &w.base_every)] {
                parse_duration(v)
                    .map_err(|e| anyhow::anyhow!("{}: [wal] {what}: {e}", path.display()))?;
            }
        }
        let mut seen = std::collections::HashSet::new();
        for d in &cfg.domains {
            if !seen.insert(&d.name) {
                anyhow::bail!("{}: domain {:?} is listed twice", path.display(), d.name);
            }
            cairn_repo::exclude::Excludes::with_defaults(&d.exclude)
                .map_err(|e| anyhow::anyhow!("{}: domain {:?}: {e}", path.display(), d.name))?;
        }
        Ok(cfg)
    }

    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.name == name)
    }

    pub fn host_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "agent".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.state_dir, Path::new("/var/lib/cairn/agent"));
        assert!(cfg.domain("example.com").is_some());
        assert!(cfg.discovery.enabled);
        assert_eq!(cfg.discovery.interval().unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn durations_and_bad_settings() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        for bad in ["", "0s", "1q", "m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, "[discovery]\ninterval = \"soon\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("interval"), "{e}");
        std::fs::write(&p, "[discovery]\nweb_root = []\n").unwrap();
        assert!(Config::load(&p)
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }
}
