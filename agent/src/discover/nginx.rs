//! nginx configuration, read the way nginx reads it: tokens (quotes, `#`
//! comments), blocks, `include` globs relative to the main file's directory,
//! then every `server` block's names, root and access logs (SPEC INT-1).

use std::path::{Path, PathBuf};

use super::{expand_glob, Vhost};

#[derive(Debug, Clone)]
struct Directive {
    name: String,
    args: Vec<String>,
    block: Option<Vec<Directive>>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
    End,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ';' => out.push(Token::End),
            '"' | '\'' => {
                let mut w = String::new();
                while let Some(n) = chars.next() {
                    match n {
                        '\\' => w.extend(chars.next()),
                        n if n == c => break,
                        n => w.push(n),
                    }
                }
                out.push(Token::Word(w));
            }
            c if c.is_whitespace() => {}
            c => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';') {
                        break;
                    }
                    w.push(n);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
        }
    }
    out
}

/// Directives until a `}` or the end; includes are spliced in place.
fn parse(
    tokens: &mut std::iter::Peekable<std::vec::IntoIter<Token>>,
    conf_dir: &Path,
    depth: usize,
    warnings: &mut Vec<String>,
) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut words = Vec::new();
    while let Some(t) = tokens.next() {
        match t {
            Token::Word(w) => words.push(w),
            Token::End => {
                if words.is_empty() {
                    continue;
                }
                let name = words.remove(0);
                let args = std::mem::take(&mut words);
                if name == "include" {
                    for a in &args {
                        out.extend(include(conf_dir, a, depth, warnings));
                    }
                } else {
                    out.push(Directive {
                        name,
                        args,
                        block: None,
                    });
                }
            }
            Token::Open => {
                let block = parse(tokens, conf_dir, depth, warnings);
                if words.is_empty() {
                    continue;
                }
                let name = words.remove(0);
                out.push(Directive {
                    name,
                    args: std::mem::take(&mut words),
                    block: Some(block),
                });
            }
            Token::Close => break,
        }
    }
    out
}

fn include(
    conf_dir: &Path,
    pattern: &str,
    depth: usize,
    warnings: &mut Vec<String>,
) -> Vec<Directive> {
    if depth > 16 {
        warnings.push(format!("nginx: includes nested too deep at {pattern}"));
        return Vec::new();
    }
    let pattern = conf_dir.join(pattern);
    let mut out = Vec::new();
    for file in expand_glob(&pattern) {
        if file.is_file() {
            out.extend(parse_file(&file, conf_dir, depth + 1, warnings));
        }
    }
    out
}

fn parse_file(
    file: &Path,
    conf_dir: &Path,
    depth: usize,
    warnings: &mut Vec<String>,
) -> Vec<Directive> {
    match std::fs::read_to_string(file) {
        Ok(text) => parse(
            &mut tokenize(&text).into_iter().peekable(),
            conf_dir,
            depth,
            warnings,
        ),
        Err(e) => {
            warnings.push(format!("nginx: {}: {e}", file.display()));
            Vec::new()
        }
    }
}

fn first_arg<'a>(ds: &'a [Directive], name: &str) -> Option<&'a str> {
    ds.iter()
        .find(|d| d.name == name && d.block.is_none())
        .and_then(|d| d.args.first())
        .map(String::as_str)
}

/// Collects the server blocks under `ds`, with the `root` inherited from the
/// enclosing `http` block.
fn servers(ds: &[Directive], inherited_root: Option<&str>, source: &Path, out: &mut Vec<Vhost>) {
    let root_here = first_arg(ds, "root").or(inherited_root);
    for d in ds {
        let Some(block) = &d.block else { continue };
        match d.name.as_str() {
            "http" => servers(block, root_here, source, out),
            "server" => out.extend(server(block, root_here, source)),
            _ => {}
        }
    }
}

fn server(block: &[Directive], inherited_root: Option<&str>, source: &Path) -> Option<Vhost> {
    let names: Vec<String> = block
        .iter()
        .filter(|d| d.name == "server_name")
        .flat_map(|d| d.args.iter())
        .filter(|n| !n.is_empty() && *n != "_" && !n.starts_with('~') && !n.contains('$'))
        .map(|n| n.trim_start_matches('.').to_ascii_lowercase())
        .collect();
    // The server's own root, else that of `location /`, else the http block's.
    let location_root = block
        .iter()
        .filter(|d| d.name == "location" && d.args.last().map(String::as_str) == Some("/"))
        .find_map(|d| d.block.as_deref().and_then(|b| first_arg(b, "root")));
    let root = first_arg(block, "root")
        .or(location_root)
        .or(inherited_root)?;
    if root.contains('$') {
        return None;
    }
    let access_logs = block
        .iter()
        .filter(|d| d.name == "access_log")
        .filter_map(|d| d.args.first())
        .filter(|p| *p != "off" && !p.contains('$') && !p.starts_with("syslog:"))
        .map(PathBuf::from)
        .collect();
    Some(Vhost {
        names,
        root: PathBuf::from(root),
        access_logs,
        source: format!("nginx {}", source.display()),
    })
}

/// Every server block reachable from `main` (nginx.conf, or a lone vhost file).
pub fn vhosts(main: &Path, warnings: &mut Vec<String>) -> Vec<Vhost> {
    let conf_dir = main.parent().unwrap_or(Path::new("/"));
    let ds = parse_file(main, conf_dir, 0, warnings);
    let mut out = Vec::new();
    servers(&ds, None, main, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_names_roots_logs_and_includes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sites-enabled")).unwrap();
        std::fs::write(
            d.join("nginx.conf"),
            "user www-data;\nevents { worker_connections 768; }\nhttp {\n  root /srv/default; # inherited\n  include mime.types;\n  include sites-enabled/*;\n}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sites-enabled/shop.conf"),
            "server {\n  listen 443 ssl;\n  server_name shop.example www.shop.example;\n  root \"/var/www/shop\";\n  access_log /var/log/nginx/shop.access.log combined;\n  location ~ \\.php$ { fastcgi_pass unix:/run/php.sock; }\n}\nserver { listen 80; server_name _; return 301 https://$host$request_uri; }\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sites-enabled/blog"),
            "server { server_name blog.example; access_log off; location / { root /var/www/blog/public; } }\nserver { server_name ~^(?<sub>.+)\\.example$ ; root /var/www/$sub; }\n",
        )
        .unwrap();
        let mut warnings = Vec::new();
        let v = vhosts(&d.join("nginx.conf"), &mut warnings);
        // mime.types is missing: no warning, nginx would fail but we only read.
        let shop = v
            .iter()
            .find(|v| v.names.contains(&"shop.example".into()))
            .unwrap();
        assert_eq!(shop.names, ["shop.example", "www.shop.example"]);
        assert_eq!(shop.root, Path::new("/var/www/shop"));
        assert_eq!(
            shop.access_logs,
            [PathBuf::from("/var/log/nginx/shop.access.log")]
        );
        let blog = v.iter().find(|v| v.names == ["blog.example"]).unwrap();
        assert_eq!(blog.root, Path::new("/var/www/blog/public"));
        assert!(blog.access_logs.is_empty());
        // The redirect server inherits the http root and has no usable name;
        // the regex server's root has a variable and is skipped.
        assert!(v
            .iter()
            .any(|v| v.names.is_empty() && v.root == Path::new("/srv/default")));
        assert_eq!(v.len(), 3, "{v:?}");
    }
}
