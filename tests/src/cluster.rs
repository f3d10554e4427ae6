//! A real fleet on loopback: one `cairn-controller` process and any number
//! of `cairn-agent` processes, each with its own state dir and certificate,
//! driven through `cairnctl`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{cairnctl_bin, eventually, free_port, scaled, unsafe_kill, Daemon};

pub const PASSPHRASE: &str = "fleet repo passphrase 7f3a";

pub fn bin(name: &str) -> PathBuf {
    cairnctl_bin().with_file_name(name)
}

pub struct Cluster {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub port: u16,
    controller: Option<Daemon>,
    /// Extra environment for the controller (S3 credentials in tests).
    env: Vec<(String, String)>,
    clock_file: Option<PathBuf>,
}

pub struct ClusterOptions<'a> {
    pub repo: Option<String>,
    pub data_path: &'a str,
    /// Storage credentials, written to an env file (0600) for the controller.
    pub storage_env: Vec<(String, String)>,
    /// Agents' heartbeat interval; short in tests so offline shows quickly.
    pub heartbeat_seconds: u32,
    /// The controller's job_timeout (its default when None).
    pub job_timeout: Option<&'a str>,
    /// How long presigned PUTs live (direct mode on S3); commits wait for it.
    pub presign_seconds: u32,
    /// A simulated clock: the controller reads unix seconds from this file.
    pub clock_file: Option<PathBuf>,
    /// The body of `[scheduler]` in controller.toml. None: schedules off, so
    /// a test sees only the jobs it starts.
    pub scheduler: Option<String>,
    /// The body of `[alerts]`. The default gives the repository a capacity
    /// no test reaches, so the test machine's own disk never decides which
    /// alerts fire.
    pub alerts: String,
    /// More of controller.toml, after `[scheduler]` (`[[notify]]` tables).
    pub extra_toml: String,
}

impl Default for ClusterOptions<'_> {
    fn default() -> Self {
        ClusterOptions {
            repo: None,
            data_path: "via-controller",
            storage_env: Vec::new(),
            heartbeat_seconds: 1,
            job_timeout: None,
            presign_seconds: 2,
            clock_file: None,
            scheduler: None,
            alerts: "storage_limit = \"1 PB\"".into(),
            extra_toml: String::new(),
        }
    }
}

fn write_private(path: &Path, data: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

impl Cluster {
    pub fn start(o: ClusterOptions) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let state = dir.join("controller");
        let port = free_port();
        write_private(&dir.join("passphrase"), PASSPHRASE);
        let repo = o
            .repo
            .unwrap_or_else(|| dir.join("repo").display().to_string());
        let mut cmd = Command::new(bin("cairn-controller"));
        cmd.args(["init", "--state-dir"])
            .arg(&state)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--web-listen", "127.0.0.1:0"])
            .args(["--public-url", &format!("https://127.0.0.1:{port}")])
            .args(["--repo", &repo, "--data-path", o.data_path])
            .arg("--passphrase-file")
            .arg(dir.join("passphrase"));
        if !o.storage_env.is_empty() {
            let text: String = o
                .storage_env
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect();
            write_private(&dir.join("storage.env"), &text);
            cmd.arg("--env-file").arg(dir.join("storage.env"));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "controller init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = state.join("controller.toml");
        let mut text = fs::read_to_string(&cfg).unwrap().replace(
            "heartbeat_seconds = 15",
            &format!("heartbeat_seconds = {}", o.heartbeat_seconds),
        );
        text = text.replace(
            "presign_seconds = 60",
            &format!("presign_seconds = {}", o.presign_seconds),
        );
        if let Some(t) = o.job_timeout {
            text = text.replace("job_timeout = \"12h\"", &format!("job_timeout = {t:?}"));
        }
        let scheduler = o.scheduler.as_deref().unwrap_or("run_schedules = false");
        // init writes [scheduler] and [alerts] last: the test's settings
        // replace both.
        let at = text.find("[scheduler]").expect("init writes [scheduler]");
        assert!(
            !text[..at].contains("[alerts]"),
            "init writes [alerts] after [scheduler]"
        );
        text = format!(
            "{}[scheduler]\n{scheduler}\n[alerts]\n{}\n{}\n",
            &text[..at],
            o.alerts,
            o.extra_toml
        );
        fs::write(&cfg, text).unwrap();
        let mut c = Cluster {
            dir,
            _tmp: tmp,
            state,
            port,
            controller: None,
            env: o.storage_env,
            clock_file: o.clock_file,
        };
        c.start_controller();
        c
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn controller_log(&self) -> PathBuf {
        self.dir.join("controller.log")
    }

    pub fn start_controller(&mut self) {
        // A previous run's addresses must not be read as this one's.
        let _ = fs::remove_file(self.state.join("grpc.addr"));
        let _ = fs::remove_file(self.state.join("web.addr"));
        let log = self.controller_log();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(bin("cairn-controller"));
        if let Some(f) = &self.clock_file {
            cmd.env("CAIRN_CLOCK_FILE", f);
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(self.state.join("controller.toml"))
            .env(
                "CAIRN_LOG",
                "debug,h2=info,hyper=info,tower=info,sled=info,rustls=info,opendal=info",
            )
            .env_remove("CAIRN_PASSPHRASE")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        self.controller = Some(Daemon { child, log });
        let addr = self.state.join("grpc.addr");
        eventually(
            "controller listening",
            scaled(Duration::from_secs(30)),
            || (addr.exists() && self.state.join("web.addr").exists()).then_some(()),
        )
        .unwrap();
    }

    pub fn controller_pid(&self) -> u32 {
        self.controller.as_ref().unwrap().child.id()
    }

    /// kill -9 of the controller.
    pub fn kill_controller(&mut self) {
        if let Some(mut d) = self.controller.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }

    /// SIGTERM; returns the exit status once it stopped.
    pub fn stop_controller(&mut self) -> std::process::ExitStatus {
        let mut d = self.controller.take().unwrap();
        unsafe_kill(d.child.id(), libc::SIGTERM);
        eventually("controller exits", scaled(Duration::from_secs(30)), || {
            d.child.try_wait().ok().flatten()
        })
        .unwrap()
    }

    pub fn web_url(&self) -> String {
        format!(
            "http://{}",
            fs::read_to_string(self.state.join("web.addr"))
                .unwrap()
                .trim()
        )
    }

    /// `cairnctl repo` on the fleet's (local) repository, with its passphrase.
    pub fn repo_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cairnctl_bin());
        c.args(["repo", "--repo"])
            .arg(self.dir.join("repo"))
            .arg("--passphrase-file")
            .arg(self.dir.join("passphrase"))
            .args(args);
        c
    }

    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cairnctl_bin());
        c.args(args)
            .env("CAIRN_CONFIG", self.state.join("cairnctl.toml"))
            .env("CAIRN_CONTROLLER", self.url())
            .env_remove("CAIRN_LOG");
        c
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "cairnctl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn token(&self, ttl: &str) -> (String, String) {
        let t = self.json(&["token", "create", "--ttl", ttl]);
        (
            t["token"].as_str().unwrap().to_string(),
            t["ca_sha256"].as_str().unwrap().to_string(),
        )
    }

    /// Writes an agent's config (these domains only, no discovery), enrolls
    /// it with a fresh token and starts it.
    pub fn add_agent(&self, name: &str, domains: &[(&str, &Path)]) -> Agent {
        let mut cfg = "[discovery]\nenabled = false\n".to_string();
        for (d, p) in domains {
            cfg.push_str(&format!("[[domain]]\nname = {d:?}\npath = {:?}\n", p));
        }
        self.add_agent_toml(name, &cfg)
    }

    /// Like [`Cluster::add_agent`], with `toml` after the agent's state_dir and name.
    pub fn add_agent_toml(&self, name: &str, toml: &str) -> Agent {
        let dir = self.dir.join(format!("agent-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let cfg = format!(
            "state_dir = {:?}\nname = {name:?}\n{toml}",
            dir.join("state")
        );
        fs::write(dir.join("agent.toml"), cfg).unwrap();
        let mut agent = Agent {
            name: name.into(),
            dir,
            daemon: None,
        };
        let (token, ca) = self.token("10m");
        let out = agent.enroll(&self.url(), &token, &ca);
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        agent.start();
        self.wait_online(name, true);
        agent
    }

    /// Enrolls an agent without starting its daemon: the test speaks for it
    /// with the returned certificate (`state()/agent.pem`, `agent.key`).
    pub fn enroll_only(&self, name: &str) -> Agent {
        let dir = self.dir.join(format!("agent-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let cfg = format!("state_dir = {:?}\nname = {name:?}\n", dir.join("state"));
        fs::write(dir.join("agent.toml"), cfg).unwrap();
        let agent = Agent {
            name: name.into(),
            dir,
            daemon: None,
        };
        let (token, ca) = self.token("10m");
        let out = agent.enroll(&self.url(), &token, &ca);
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        agent
    }

    pub fn wait_online(&self, agent: &str, online: bool) {
        eventually(
            &format!("agent {agent} online={online}"),
            scaled(Duration::from_secs(30)),
            || {
                let v = self.json(&["agents", "list"]);
                v.as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["id"] == agent && a["online"] == online)
                    .then_some(())
            },
        )
        .unwrap();
    }

    /// Starts a backup and waits for it; returns the job.
    /// Backs up a domain's files (generated sites name databases that do
    /// not exist on this machine; the database tests ask for theirs).
    pub fn backup(&self, domain: &str) -> serde_json::Value {
        self.json(&["backup", domain, "--files-only", "--wait"])
    }

    /// Restores a snapshot into `target` through its agent and waits; the
    /// job must succeed.
    pub fn restore(&self, snapshot: &str, target: &Path) -> serde_json::Value {
        let j = self.json(&[
            "restore",
            snapshot,
            "--target",
            target.to_str().unwrap(),
            "--wait",
        ]);
        assert_eq!(j["state"], "succeeded", "{j}");
        j
    }

    pub fn job(&self, id: &str) -> serde_json::Value {
        self.json(&["jobs", "show", id])
    }

    pub fn wait_job_end(&self, id: &str) -> serde_json::Value {
        eventually(
            &format!("job {id} ends"),
            scaled(Duration::from_secs(60)),
            || {
                let j = self.job(id);
                (!matches!(j["state"].as_str(), Some("queued" | "running"))).then_some(j)
            },
        )
        .unwrap()
    }

    /// One value of /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics(&[name])[0]
    }

    /// Several metrics from one scrape, so they describe one instant.
    pub fn metrics(&self, names: &[&str]) -> Vec<f64> {
        let body = http_get(&format!("{}/metrics", self.web_url()));
        names
            .iter()
            .map(|name| {
                body.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                    .unwrap_or_else(|| panic!("metric {name} not in:\n{body}"))
            })
            .collect()
    }

    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }
}

pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Agent {
    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Runs `cairn-agent enroll` with the token in its environment.
    pub fn enroll(&self, url: &str, token: &str, ca: &str) -> Output {
        Command::new(bin("cairn-agent"))
            .arg("-c")
            .arg(self.config())
            .args(["enroll", "--controller", url, "--ca-sha256", ca])
            .env("CAIRN_TOKEN", token)
            .output()
            .unwrap()
    }

    pub fn start(&mut self) {
        let log = self.log();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(bin("cairn-agent"))
            .arg("-c")
            .arg(self.config())
            .arg("run")
            .env(
                "CAIRN_LOG",
                "debug,h2=info,hyper=info,tower=info,rustls=info,opendal=info",
            )
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        self.daemon = Some(Daemon { child, log });
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().unwrap().child.id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }
}

/// A plain HTTP/1.0 GET on loopback (the status page); returns the body.
pub fn http_get(url: &str) -> String {
    let (status, body) = http_get_status(url);
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// GET over HTTP/1.0: the status code and the body.
pub fn http_get_status(url: &str) -> (u16, String) {
    let (status, _, body) = http_get_with(url, &[]);
    (status, body)
}

/// GET over HTTP/1.0 with request headers: the status code, the response
/// head and the body.
pub fn http_get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{extra}\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Every process argument of `pid`, joined by spaces.
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}
