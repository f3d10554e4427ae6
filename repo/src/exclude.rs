//! Exclude patterns: the default excludes of SPEC BKP-2 plus user globs.
//!
//! A pattern without `/` matches a name at any depth (`*.log`); one with `/`
//! matches a path relative to the backup root, at any depth unless it starts
//! with `/` (`/wp-content/cache` only at the root). A trailing `/` limits the
//! pattern to directories. An excluded directory is not descended into.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// SPEC BKP-2. `vendor/` is not here: it is optional (`--exclude vendor/`).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "cache/",
    "tmp/",
    "temp/",
    ".cache/",
    "logs/",
    "*.log",
    "node_modules/",
    ".git/",
    "wp-content/cache/",
    "wp-content/uploads/cache/",
    "storage/framework/cache/",
    "storage/framework/sessions/",
    "storage/framework/views/",
    "storage/logs/",
];

#[derive(Debug, Clone)]
pub struct Excludes {
    any: GlobSet,
    dirs_only: GlobSet,
    patterns: Vec<String>,
}

impl Excludes {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Excludes> {
        let mut any = GlobSetBuilder::new();
        let mut dirs = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            let (body, dir_only) = match p.strip_suffix('/') {
                Some(b) => (b, true),
                None => (p, false),
            };
            if body.is_empty() {
                return Err(Error::Invalid(format!("empty exclude pattern {p:?}")));
            }
            let glob = match body.strip_prefix('/') {
                Some(anchored) => anchored.to_string(),
                None => format!("**/{body}"),
            };
            let g = Glob::new(&glob)
                .map_err(|e| Error::Invalid(format!("exclude pattern {p:?}: {e}")))?;
            if dir_only {
                dirs.add(g);
            } else {
                any.add(g);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("exclude patterns: {e}")))
        };
        Ok(Excludes {
            any: build(any)?,
            dirs_only: build(dirs)?,
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// The defaults followed by `extra`.
    pub fn with_defaults<S: AsRef<str>>(extra: &[S]) -> Result<Excludes> {
        let mut all: Vec<String> = DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect();
        all.extend(extra.iter().map(|s| s.as_ref().to_string()));
        Excludes::new(&all)
    }

    /// `rel` is the path relative to the backup root, `/`-separated, no leading `/`.
    pub fn is_excluded(&self, rel: &str, is_dir: bool) -> bool {
        self.any.is_match(rel) || (is_dir && self.dirs_only.is_match(rel))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_excludes_follow_bkp2() {
        let e = Excludes::with_defaults::<&str>(&[]).unwrap();
        let cases: &[(&str, bool, bool)] = &[
            ("wp-content/cache", true, true),
            ("site/wp-content/cache", true, true),
            ("wp-content/uploads/cache", true, true),
            ("storage/framework/sessions", true, true),
            ("storage/logs", true, true),
            ("logs", true, true),
            ("error.log", false, true),
            ("a/b/debug.log", false, true),
            ("node_modules", true, true),
            (".git", true, true),
            ("cache", false, false),
            ("wp-content/uploads/2024/photo.jpg", false, false),
            ("wp-config.php", false, false),
            ("vendor", true, false),
            ("logs.php", false, false),
        ];
        for (path, dir, want) in cases {
            assert_eq!(e.is_excluded(path, *dir), *want, "{path} dir={dir}");
        }
    }

    #[test]
    fn user_patterns() {
        let e = Excludes::new(&["/private", "*.bak", "vendor/"]).unwrap();
        assert!(e.is_excluded("private", true));
        assert!(!e.is_excluded("a/private", true));
        assert!(e.is_excluded("x/y.bak", false));
        assert!(e.is_excluded("vendor", true));
        assert!(!e.is_excluded("vendor", false));
        assert!(Excludes::new(&["a[", "x"]).is_err());
    }
}
