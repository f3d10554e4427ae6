//! Real notification receivers on loopback (tests/sinks/sink.py): an SMTP
//! server (Debian's python3-aiosmtpd) and an HTTP server, each keeping every
//! message it accepted as a JSON file for the test to read.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

pub struct Sink {
    pub dir: PathBuf,
    pub port: u16,
    child: Child,
}

/// A Python 3 that has aiosmtpd: Debian's, also when another python3
/// (pyenv, say) comes first on PATH.
fn python() -> &'static str {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p;
        }
    }
    panic!("no python3 with aiosmtpd (apt-get install python3-aiosmtpd)")
}

impl Sink {
    /// An SMTP server on a free port.
    pub fn smtp(dir: &Path) -> Sink {
        Sink::start("smtp", 0, dir)
    }

    /// An HTTP server on `port` (0: a free one).
    pub fn http(port: u16, dir: &Path) -> Sink {
        Sink::start("http", port, dir)
    }

    fn start(kind: &str, port: u16, dir: &Path) -> Sink {
        fs::create_dir_all(dir).unwrap();
        let _ = fs::remove_file(dir.join("port"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sinks/sink.py");
        let child = Command::new(python())
            .arg(script)
            .args([kind, &port.to_string()])
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let port = eventually(
            &format!("{kind} sink listening"),
            Duration::from_secs(20),
            || {
                fs::read_to_string(dir.join("port"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            },
        )
        .unwrap();
        Sink {
            dir: dir.to_path_buf(),
            port,
            child,
        }
    }

    /// Every message accepted so far, in arrival order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        received(&self.dir)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages a sink kept in `dir` (also after it stopped).
pub fn received(dir: &Path) -> Vec<serde_json::Value> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "json"));
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}
