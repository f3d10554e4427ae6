//! What a site is and its own database settings (SPEC INT-6): WordPress's
//! `wp-config.php`, Laravel's `.env`, generic PHP (`composer.json`) or static.
//! The password stays on the agent: [`SiteDb`]'s Debug hides it, and the
//! inventory carries only engine and database name.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteType {
    Wordpress,
    Laravel,
    Php,
    Static,
}

impl SiteType {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteType::Wordpress => "wordpress",
            SiteType::Laravel => "laravel",
            SiteType::Php => "php",
            SiteType::Static => "static",
        }
    }
}

/// The site's type and, where its config names one, its database. WordPress
/// may keep `wp-config.php` one directory above its root (when that
/// directory is not itself a WordPress install); `getenv()` in it falls back
/// to the literal, since the agent's environment is not the site's.
pub fn detect(root: &Path) -> (SiteType, Option<SiteDb>) {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let above = root
        .parent()
        .map(|p| p.join("wp-config.php"))
        .filter(|p| p.is_file() && !p.with_file_name("wp-settings.php").is_file());
    if let Some(text) = [Some(root.join("wp-config.php")), above]
        .into_iter()
        .flatten()
        .find_map(|p| read(&p))
    {
        return (SiteType::Wordpress, wordpress(&text, &|_| None));
    }
    let env = read(&root.join(".env"));
    let laravel_env = env
        .as_deref()
        .is_some_and(|t| dotenv(t).contains_key("DB_CONNECTION"));
    if root.join("artisan").is_file() || laravel_env {
        return (SiteType::Laravel, env.as_deref().and_then(laravel));
    }
    if root.join("composer.json").is_file() || has_php(root) {
        return (SiteType::Php, None);
    }
    (SiteType::Static, None)
}

fn has_php(root: &Path) -> bool {
    std::fs::read_dir(root).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "php"))
    })
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct SiteDb {
    /// `mariadb` (MySQL/MariaDB), `postgres` or `sqlite`.
    pub engine: String,
    pub name: String,
    pub user: String,
    pub password: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub socket: Option<String>,
    /// WordPress's `$table_prefix`.
    pub table_prefix: Option<String>,
}

impl SiteDb {
    /// How to reach it, credentials included: for the agent's own use.
    pub fn connection(&self) -> cairn_dump::Connection {
        cairn_dump::Connection {
            host: self.host.clone(),
            port: self.port,
            socket: self.socket.as_ref().map(std::path::PathBuf::from),
            user: (!self.user.is_empty()).then(|| self.user.clone()),
            password: (!self.password.is_empty()).then(|| self.password.clone()),
            database: self.name.clone(),
        }
    }
}

impl std::fmt::Debug for SiteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteDb")
            .field("engine", &self.engine)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("table_prefix", &self.table_prefix)
            .finish_non_exhaustive()
    }
}

/// Splits WordPress's `DB_HOST` (`host`, `host:port`, `host:/socket`, `:/socket`).
fn split_host(db: &mut SiteDb, host: &str) {
    match host.split_once(':') {
        Some((h, rest)) if rest.starts_with('/') => {
            db.socket = Some(rest.to_string());
            db.host = (!h.is_empty()).then(|| h.to_string());
        }
        Some((h, rest)) => match rest.parse() {
            Ok(p) => {
                db.host = Some(h.to_string());
                db.port = Some(p);
            }
            Err(_) => db.host = Some(host.to_string()),
        },
        None => db.host = (!host.is_empty()).then(|| host.to_string()),
    }
}

/// Reads one PHP string literal at the start of `s` ('…' or "…"); returns it
/// and the rest.
fn php_string(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    if n != q && n != '\\' {
                        out.push('\\');
                    }
                    out.push(n);
                }
            }
            c if c == q => return Some((out, &s[1 + i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// The value of a `define('NAME', VALUE)` argument: a literal, or
/// `getenv('X') ?: 'default'` (the environment at the agent, else the default).
fn php_value(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let s = s.trim_start();
    if let Some((v, _)) = php_string(s) {
        return Some(v);
    }
    let rest = s.strip_prefix("getenv")?.trim_start().strip_prefix('(')?;
    let (var, rest) = php_string(rest)?;
    let rest = rest.trim_start().strip_prefix(')')?.trim_start();
    if let Some(v) = env(&var).filter(|v| !v.is_empty()) {
        return Some(v);
    }
    let fallback = rest
        .strip_prefix("?:")
        .or_else(|| rest.strip_prefix("||"))?;
    php_string(fallback).map(|(v, _)| v)
}

/// One `define('NAME', value)` or `$table_prefix = '…'` statement.
fn statement(
    stmt: &str,
    env: &dyn Fn(&str) -> Option<String>,
    defines: &mut HashMap<String, String>,
    prefix: &mut Option<String>,
) {
    if let Some(rest) = stmt.strip_prefix("define") {
        let Some(args) = rest.trim_start().strip_prefix('(') else {
            return;
        };
        let Some((name, rest)) = php_string(args) else {
            return;
        };
        let Some(rest) = rest.trim_start().strip_prefix(',') else {
            return;
        };
        if let Some(v) = php_value(rest, env) {
            defines.insert(name, v);
        }
    } else if let Some(rest) = stmt.strip_prefix("$table_prefix") {
        if let Some(rest) = rest.trim_start().strip_prefix('=') {
            *prefix = php_string(rest).map(|(v, _)| v);
        }
    }
}

/// What follows the first `;` outside a string literal ("" when none).
fn next_statement(s: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => return &s[i + 1..],
            _ => {}
        }
    }
    ""
}

/// Parses `wp-config.php` text. Commented-out defines are skipped.
pub fn wordpress(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<SiteDb> {
    let mut defines: HashMap<String, String> = HashMap::new();
    let mut prefix = None;
    let mut in_block = false;
    for raw in text.lines() {
        let mut line = raw.trim();
        if in_block {
            match line.find("*/") {
                Some(i) => {
                    line = line[i + 2..].trim();
                    in_block = false;
                }
                None => continue,
            }
        }
        if line.starts_with("//") || line.starts_with('#') {
            continue;
        }
        if let Some(i) = line.find("/*") {
            if !line[i..].contains("*/") {
                in_block = true;
            }
            line = line[..i].trim();
        }
        // Several statements may share a line (`<?php define(…); define(…);`).
        let mut stmt = line.strip_prefix("<?php").unwrap_or(line).trim_start();
        while !stmt.is_empty() {
            statement(stmt, env, &mut defines, &mut prefix);
            stmt = next_statement(stmt).trim_start();
        }
    }
    let name = defines.get("DB_NAME")?.clone();
    let mut db = SiteDb {
        engine: "mariadb".into(),
        name,
        user: defines.get("DB_USER").cloned().unwrap_or_default(),
        password: defines.get("DB_PASSWORD").cloned().unwrap_or_default(),
        table_prefix: Some(prefix.unwrap_or_else(|| "wp_".into())),
        ..Default::default()
    };
    split_host(
        &mut db,
        defines
            .get("DB_HOST")
            .map(String::as_str)
            .unwrap_or("localhost"),
    );
    Some(db)
}

/// Parses a dotenv file: `KEY=value`, `export KEY=value`, quoted values
/// (`"…"` with escapes, `'…'` literal), `#` comments on their own line or
/// after an unquoted value.
pub fn dotenv(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let value = if let Some(rest) = v.strip_prefix('"') {
            let mut s = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some(n) => s.push(n),
                        None => {}
                    },
                    '"' => break,
                    c => s.push(c),
                }
            }
            s
        } else if let Some(rest) = v.strip_prefix('\'') {
            rest.split('\'').next().unwrap_or("").to_string()
        } else {
            match v.find(" #") {
                Some(i) => v[..i].trim_end().to_string(),
                None => v.to_string(),
            }
        };
        out.insert(k.trim().to_string(), value);
    }
    out
}

/// Laravel's database settings from its `.env`.
pub fn laravel(text: &str) -> Option<SiteDb> {
    let env = dotenv(text);
    let engine = match env
        .get("DB_CONNECTION")
        .map(String::as_str)
        .unwrap_or("mysql")
    {
        "mysql" | "mariadb" => "mariadb",
        "pgsql" | "postgres" | "postgresql" => "postgres",
        "sqlite" => "sqlite",
        _ => return None,
    };
    let name = env.get("DB_DATABASE").filter(|v| !v.is_empty())?.clone();
    Some(SiteDb {
        engine: engine.into(),
        name,
        user: env.get("DB_USERNAME").cloned().unwrap_or_default(),
        password: env.get("DB_PASSWORD").cloned().unwrap_or_default(),
        host: env.get("DB_HOST").filter(|v| !v.is_empty()).cloned(),
        port: env.get("DB_PORT").and_then(|p| p.parse().ok()),
        socket: env.get("DB_SOCKET").filter(|v| !v.is_empty()).cloned(),
        table_prefix: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn wp_config_quotes_ports_sockets_and_prefix() {
        let text = r#"<?php
// define('DB_NAME', 'commented_out');
/* define('DB_NAME', 'in_a_block');
*/
define( 'DB_NAME', "shop_db" );
define('DB_USER', 'shop');
define('DB_PASSWORD', 'p\'a"ss:w0rd');
define('DB_HOST', '127.0.0.1:3307');
$table_prefix = 'wpx_';
"#;
        let db = wordpress(text, &no_env).unwrap();
        assert_eq!(db.name, "shop_db");
        assert_eq!(db.user, "shop");
        assert_eq!(db.password, "p'a\"ss:w0rd");
        assert_eq!(
            (db.host.as_deref(), db.port),
            (Some("127.0.0.1"), Some(3307))
        );
        assert_eq!(db.table_prefix.as_deref(), Some("wpx_"));
        assert!(
            !format!("{db:?}").contains("w0rd"),
            "Debug hides the password"
        );

        let sock = wordpress(
            "define('DB_NAME','a');\ndefine('DB_HOST','localhost:/run/mysqld/mysqld.sock');",
            &no_env,
        );
        let sock = sock.unwrap();
        assert_eq!(sock.socket.as_deref(), Some("/run/mysqld/mysqld.sock"));
        assert_eq!(sock.table_prefix.as_deref(), Some("wp_"));
    }

    #[test]
    fn wp_config_getenv_falls_back() {
        let text = "define('DB_NAME', getenv('WORDPRESS_DB_NAME') ?: 'fallback_db');\ndefine('DB_USER', getenv('WORDPRESS_DB_USER'));";
        let db = wordpress(text, &no_env).unwrap();
        assert_eq!(db.name, "fallback_db");
        assert_eq!(db.user, "");
        let env = |k: &str| (k == "WORDPRESS_DB_NAME").then(|| "from_env".to_string());
        assert_eq!(wordpress(text, &env).unwrap().name, "from_env");
        assert!(wordpress("<?php echo 1;", &no_env).is_none());
    }

    #[test]
    fn detects_site_types_and_databases() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let site = |name: &str, files: &[(&str, &str)]| {
            let root = d.join(name);
            for (f, text) in files {
                let p = root.join(f);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
            std::fs::create_dir_all(&root).unwrap();
            detect(&root)
        };
        let (t, db) = site(
            "wp",
            &[(
                "wp-config.php",
                "<?php define('DB_NAME', 'wpdb'); define('DB_PASSWORD', 'pw');",
            )],
        );
        assert_eq!(
            (t, db.unwrap().name.as_str()),
            (SiteType::Wordpress, "wpdb")
        );
        // wp-config.php one level above the install.
        let (t, db) = site(
            "up/public_html",
            &[
                ("wp-settings.php", ""),
                ("../wp-config.php", "<?php define('DB_NAME', 'updb');"),
            ],
        );
        assert_eq!(
            (t, db.unwrap().name.as_str()),
            (SiteType::Wordpress, "updb")
        );
        let (t, db) = site(
            "lara",
            &[
                ("artisan", ""),
                (".env", "DB_CONNECTION=pgsql\nDB_DATABASE=app\n"),
            ],
        );
        assert_eq!(
            (t, db.unwrap().engine.as_str()),
            (SiteType::Laravel, "postgres")
        );
        let (t, db) = site("lara-nodb", &[("artisan", "")]);
        assert_eq!((t, db), (SiteType::Laravel, None));
        assert_eq!(site("php", &[("composer.json", "{}")]).0, SiteType::Php);
        assert_eq!(site("php2", &[("index.php", "<?php")]).0, SiteType::Php);
        assert_eq!(site("html", &[("index.html", "<p>")]).0, SiteType::Static);
    }

    #[test]
    fn laravel_env_quotes_and_comments() {
        let text = "# Laravel\nAPP_NAME=\"My App\"\nDB_CONNECTION=pgsql\nDB_HOST=db.internal # primary\nDB_PORT=5433\nexport DB_DATABASE='shop'\nDB_USERNAME=laravel\nDB_PASSWORD=\"s3cr#t \\\"x\\\"\"\n";
        let db = laravel(text).unwrap();
        assert_eq!(db.engine, "postgres");
        assert_eq!(db.host.as_deref(), Some("db.internal"));
        assert_eq!(db.port, Some(5433));
        assert_eq!(db.name, "shop");
        assert_eq!(db.password, "s3cr#t \"x\"");
        assert!(
            laravel("DB_CONNECTION=mysql\n").is_none(),
            "no database name"
        );
        assert_eq!(laravel("DB_DATABASE=x").unwrap().engine, "mariadb");
    }
}
