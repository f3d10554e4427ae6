//! Which domains this server hosts (SPEC INT-1): web roots from configured
//! globs, nginx server blocks and apache virtual hosts, merged by root, with
//! the domains of `agent.toml` overriding whatever was found for the same
//! name or root. A missing root is reported on the domain, never fatal.

mod apache;
mod nginx;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// A web server's view of one site.
#[derive(Debug, Clone)]
pub(crate) struct Vhost {
    /// server_name / ServerName first, then aliases; lowercase.
    pub names: Vec<String>,
    pub root: PathBuf,
    pub access_logs: Vec<PathBuf>,
    /// `nginx FILE`, `apache FILE`.
    pub source: String,
}

/// A domain this agent protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub aliases: Vec<String>,
    /// What is backed up: the document root, or the application above it
    /// (`public/` of Laravel or Symfony).
    pub root: PathBuf,
    pub exclude: Vec<String>,
    /// Access logs named by the web server or the domain's config.
    pub access_logs: Vec<PathBuf>,
    /// Where it was found: `config`, `web root GLOB`, `nginx FILE`, `apache FILE`.
    pub source: String,
    pub root_missing: bool,
}

#[derive(Debug, Default)]
pub struct Discovered {
    pub sites: Vec<Site>,
    /// Unreadable configs, clashing names: worth a log line, never fatal.
    pub warnings: Vec<String>,
}

/// Expands `*`, `?` and `[…]` in each component of an absolute pattern;
/// sorted, only paths that exist.
pub fn expand_glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for comp in pattern.components() {
        let s = comp.as_os_str().to_string_lossy();
        let wild = s.contains(['*', '?', '[']);
        let mut next = Vec::new();
        for base in &found {
            if !wild {
                next.push(base.join(comp));
                continue;
            }
            let Ok(m) = globset::Glob::new(&s).map(|g| g.compile_matcher()) else {
                continue;
            };
            let Ok(rd) = std::fs::read_dir(base) else {
                continue;
            };
            let mut hits: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    // Like the shell, `*` does not match hidden names.
                    !n.to_string_lossy().starts_with('.') && m.is_match(&n)
                })
                .map(|e| e.path())
                .collect();
            hits.sort();
            next.extend(hits);
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found
}

/// The directory to back up for a document root: an application's `public/`
/// or `web/` stands for the application above it.
fn site_root(doc_root: &Path) -> PathBuf {
    let is_app_dir = |p: &Path| {
        ["artisan", "composer.json", ".env"]
            .iter()
            .any(|f| p.join(f).is_file())
    };
    match (
        doc_root.file_name().and_then(|n| n.to_str()),
        doc_root.parent(),
    ) {
        (Some("public" | "web"), Some(parent)) if is_app_dir(parent) => parent.to_path_buf(),
        _ => doc_root.to_path_buf(),
    }
}

/// A name for a directory found by a glob: `/var/www/example.com` is
/// `example.com`; `/home/alice/public_html` is `alice`.
fn dir_name(root: &Path) -> String {
    let base = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match base.as_str() {
        "public_html" | "htdocs" | "httpdocs" | "www" | "public" | "web" => root
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(base),
        _ => base,
    }
}

fn key(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn discover(cfg: &Config) -> Discovered {
    let mut warnings = Vec::new();
    let mut sites: Vec<Site> = Vec::new();
    // Each site's canonical root, computed once (sites[i] ↔ keys[i]).
    let mut keys: Vec<PathBuf> = Vec::new();
    if cfg.discovery.enabled {
        let mut vhosts = Vec::new();
        for f in cfg.discovery.nginx.iter().filter(|f| f.is_file()) {
            vhosts.extend(nginx::vhosts(f, &mut warnings));
        }
        for f in cfg.discovery.apache.iter().filter(|f| f.is_file()) {
            vhosts.extend(apache::vhosts(f, &mut warnings));
        }
        // One site per root: vhosts for the same root (http and https, nginx
        // and apache) pool their names and logs.
        for v in vhosts {
            let root = site_root(&v.root);
            let k = key(&root);
            match keys.iter().position(|x| *x == k).map(|i| &mut sites[i]) {
                Some(s) => {
                    for n in v.names {
                        if n != s.name && !s.aliases.contains(&n) {
                            s.aliases.push(n);
                        }
                    }
                    if s.name.is_empty() && !s.aliases.is_empty() {
                        s.name = s.aliases.remove(0);
                    }
                    s.access_logs.extend(v.access_logs);
                }
                None => {
                    let mut names = v.names.into_iter();
                    keys.push(k);
                    sites.push(Site {
                        name: names.next().unwrap_or_default(),
                        aliases: names.collect(),
                        root_missing: !root.is_dir(),
                        root,
                        exclude: Vec::new(),
                        access_logs: v.access_logs,
                        source: v.source,
                    });
                }
            }
        }
        for pattern in &cfg.discovery.web_roots {
            for dir in expand_glob(Path::new(pattern))
                .into_iter()
                .filter(|d| d.is_dir())
            {
                let k = key(&dir);
                let inside: Vec<usize> = (0..sites.len())
                    .filter(|&i| keys[i].starts_with(&k))
                    .collect();
                if keys.iter().any(|x| k.starts_with(x)) && inside.is_empty() {
                    continue; // within a site already found
                }
                match inside.as_slice() {
                    // A vhost's document root below this directory: the
                    // directory is the site (wp-config.php one level up, say).
                    [i] => {
                        sites[*i].root = dir;
                        keys[*i] = k;
                    }
                    [] => {
                        keys.push(k);
                        sites.push(Site {
                            name: dir_name(&dir),
                            aliases: Vec::new(),
                            root: dir,
                            exclude: Vec::new(),
                            access_logs: Vec::new(),
                            source: format!("web root {pattern}"),
                            root_missing: false,
                        });
                    }
                    _ => {} // a parent of several sites: they stand on their own
                }
            }
        }
        for s in &mut sites {
            if s.name.is_empty() {
                s.name = dir_name(&s.root);
            }
        }
    }
    // The domains of agent.toml win over what was found for the same name or root.
    for d in &cfg.domains {
        let k = key(&d.path);
        let keep: Vec<bool> = sites
            .iter()
            .zip(&keys)
            .map(|(s, x)| s.name != d.name && !s.aliases.contains(&d.name) && *x != k)
            .collect();
        let mut flags = keep.iter();
        sites.retain(|_| *flags.next().unwrap());
        let mut flags = keep.iter();
        keys.retain(|_| *flags.next().unwrap());
        keys.push(k);
        sites.push(Site {
            name: d.name.clone(),
            aliases: d.aliases.clone(),
            root: d.path.clone(),
            exclude: d.exclude.clone(),
            access_logs: d.access_logs.clone(),
            source: "config".into(),
            root_missing: !d.path.is_dir(),
        });
    }
    let mut seen = HashSet::new();
    sites.retain(|s| {
        let fresh = seen.insert(s.name.clone());
        if !fresh {
            warnings.push(format!(
                "domain {} at {} ({}) is already served from another root; skipped",
                s.name,
                s.root.display(),
                s.source
            ));
        }
        fresh
    });
    for s in &sites {
        if s.root_missing {
            warnings.push(format!(
                "domain {}: root {} is missing ({})",
                s.name,
                s.root.display(),
                s.source
            ));
        }
    }
    sites.sort_by(|a, b| a.name.cmp(&b.name));
    Discovered { sites, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_per_component() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for p in [
            "home/alice/public_html",
            "home/bob/public_html",
            "home/carol/x",
            "home/.skel/public_html",
        ] {
            std::fs::create_dir_all(d.join(p)).unwrap();
        }
        let got = expand_glob(&d.join("home/*/public_html"));
        assert_eq!(
            got,
            [
                d.join("home/alice/public_html"),
                d.join("home/bob/public_html")
            ]
        );
        assert_eq!(dir_name(&got[0]), "alice");
        assert!(expand_glob(&d.join("nothing/*")).is_empty());
    }

    #[test]
    fn laravel_public_stands_for_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(app.join("public")).unwrap();
        assert_eq!(site_root(&app.join("public")), app.join("public"));
        std::fs::write(app.join("artisan"), "").unwrap();
        assert_eq!(site_root(&app.join("public")), app);
    }
}
