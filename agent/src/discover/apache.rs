//! Apache httpd configuration: `Include`/`IncludeOptional` globs (relative to
//! `ServerRoot`, by default the main file's directory), `Define` variables,
//! and each `<VirtualHost>`'s `ServerName`, `ServerAlias`, `DocumentRoot` and
//! `CustomLog` (SPEC INT-1). Directives are case-insensitive, as in httpd.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{expand_glob, Vhost};

struct Reader<'a> {
    server_root: PathBuf,
    defines: HashMap<String, String>,
    warnings: &'a mut Vec<String>,
    out: Vec<Vhost>,
    current: Option<Vhost>,
}

/// Splits a directive's arguments: whitespace-separated, `"…"` quoted.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut w = String::new();
            while let Some(n) = chars.next() {
                match n {
                    '\\' => w.extend(chars.next()),
                    '"' => break,
                    n => w.push(n),
                }
            }
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&n) = chars.peek() {
                if n.is_whitespace() {
                    break;
                }
                w.push(n);
                chars.next();
            }
            out.push(w);
        }
    }
    out
}

impl Reader<'_> {
    /// `${VAR}` from `Define`; None when one is unknown.
    fn expand(&self, s: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let end = rest[i..].find('}')? + i;
            out.push_str(self.defines.get(&rest[i + 2..end])?);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    fn read_file(&mut self, file: &Path, depth: usize) {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                self.warnings
                    .push(format!("apache: {}: {e}", file.display()));
                return;
            }
        };
        let mut logical = String::new();
        for raw in text.lines() {
            // A trailing backslash continues the directive on the next line.
            if let Some(part) = raw.strip_suffix('\\') {
                logical.push_str(part);
                logical.push(' ');
                continue;
            }
            logical.push_str(raw);
            let line = std::mem::take(&mut logical);
            self.directive(line.trim(), file, depth);
        }
    }

    fn directive(&mut self, line: &str, file: &Path, depth: usize) {
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        if let Some(tag) = line.strip_prefix("</") {
            if tag
                .trim_end_matches('>')
                .eq_ignore_ascii_case("virtualhost")
            {
                if let Some(v) = self.current.take() {
                    if v.root.as_os_str().is_empty() {
                        self.warnings.push(format!(
                            "apache: a VirtualHost in {} has no DocumentRoot",
                            file.display()
                        ));
                    } else {
                        self.out.push(v);
                    }
                }
            }
            return;
        }
        if let Some(tag) = line.strip_prefix('<') {
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or("");
            if name.eq_ignore_ascii_case("virtualhost") {
                self.current = Some(Vhost {
                    names: Vec::new(),
                    root: PathBuf::new(),
                    access_logs: Vec::new(),
                    source: format!("apache {}", file.display()),
                });
            }
            return;
        }
        let mut w = words(line);
        if w.is_empty() {
            return;
        }
        let name = w.remove(0).to_ascii_lowercase();
        let Some(args) = w
            .iter()
            .map(|a| self.expand(a))
            .collect::<Option<Vec<String>>>()
        else {
            return;
        };
        match (name.as_str(), self.current.as_mut()) {
            ("serverroot", _) if !args.is_empty() => self.server_root = PathBuf::from(&args[0]),
            ("define", _) if args.len() >= 2 => {
                self.defines.insert(args[0].clone(), args[1].clone());
            }
            ("include" | "includeoptional", _) => {
                if depth > 16 {
                    self.warnings.push(format!(
                        "apache: includes nested too deep in {}",
                        file.display()
                    ));
                    return;
                }
                for a in args {
                    for f in expand_glob(&self.server_root.join(a)) {
                        if f.is_file() {
                            self.read_file(&f, depth + 1);
                        }
                    }
                }
            }
            ("servername", Some(v)) if !args.is_empty() => {
                // ServerName may carry a scheme and a port.
                let n = args[0].rsplit("://").next().unwrap_or(&args[0]);
                let n = n.split(':').next().unwrap_or(n).to_ascii_lowercase();
                v.names.retain(|x| *x != n);
                v.names.insert(0, n);
            }
            ("serveralias", Some(v)) => {
                for a in args {
                    let a = a.to_ascii_lowercase();
                    if !v.names.contains(&a) {
                        v.names.push(a);
                    }
                }
            }
            ("documentroot", Some(v)) if !args.is_empty() => v.root = PathBuf::from(&args[0]),
            // A piped log ("|rotatelogs …") has no file to read.
            ("customlog" | "transferlog", Some(v))
                if !args.is_empty() && !args[0].starts_with('|') =>
            {
                v.access_logs.push(PathBuf::from(&args[0]));
            }
            _ => {}
        }
    }
}

/// Every virtual host reachable from `main` (apache2.conf / httpd.conf).
pub fn vhosts(main: &Path, warnings: &mut Vec<String>) -> Vec<Vhost> {
    let server_root = main.parent().unwrap_or(Path::new("/")).to_path_buf();
    // Debian's envvars default; a Define in the config overrides it.
    let defines = HashMap::from([("APACHE_LOG_DIR".to_string(), "/var/log/apache2".to_string())]);
    let mut r = Reader {
        server_root,
        defines,
        warnings,
        out: Vec::new(),
        current: None,
    };
    r.read_file(main, 0);
    r.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_with_includes_aliases_and_defines() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sites-enabled")).unwrap();
        std::fs::write(
            d.join("apache2.conf"),
            "ServerRoot \"DIR\"\nDefine SITES /var/www\nIncludeOptional sites-enabled/*.conf\nIncludeOptional conf-enabled/*.conf\n"
                .replace("DIR", &d.display().to_string()),
        )
        .unwrap();
        std::fs::write(
            d.join("sites-enabled/000-shop.conf"),
            "<VirtualHost *:443>\n  ServerName https://Shop.Example:443\n  ServerAlias www.shop.example \\\n     m.shop.example\n  DocumentRoot \"${SITES}/shop\"\n  CustomLog ${APACHE_LOG_DIR}/shop-access.log combined\n  CustomLog \"|/usr/bin/rotatelogs x\" common\n</VirtualHost>\n# <VirtualHost *:80> commented\n<virtualhost *:80>\n ServerName norooot.example\n</virtualhost>\n",
        )
        .unwrap();
        let mut warnings = Vec::new();
        let v = vhosts(&d.join("apache2.conf"), &mut warnings);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].names,
            ["shop.example", "www.shop.example", "m.shop.example"]
        );
        assert_eq!(v[0].root, Path::new("/var/www/shop"));
        assert_eq!(
            v[0].access_logs,
            [PathBuf::from("/var/log/apache2/shop-access.log")]
        );
        assert!(
            warnings.iter().any(|w| w.contains("no DocumentRoot")),
            "{warnings:?}"
        );
    }
}
