//! `agent.toml`: which controller to dial, where state lives, and the domains
//! this server protects (until discovery, issue 4, finds them itself).

use std::path::{Path, PathBuf};

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
    #[serde(default, rename = "domain")]
    pub domains: Vec<DomainConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    pub name: String,
    pub path: PathBuf,
    /// Extra exclude globs, on top of the defaults (cache/, logs/, *.log …).
    #[serde(default)]
    pub exclude: Vec<String>,
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
    }
}
