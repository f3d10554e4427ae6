//! Test harness shared by the end-to-end tests: the real `cairnctl` binary, a
//! generated fleet (`../shared/bench/gen_fleet.py`), a real Garage S3 server on
//! loopback, and tree comparison that checks bytes, modes, mtimes and links.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_repo::storage::Storage;

pub mod cluster;
pub mod dbserver;
pub mod sim;
pub mod sinks;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `n` bytes that neither compress nor deduplicate (xorshift64 from `seed`).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Scales every wait for slow CI machines (`CAIRN_TEST_TIME_SCALE=3`).
pub fn scaled(d: Duration) -> Duration {
    let k: f64 = std::env::var("CAIRN_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    d.mul_f64(k)
}

/// Polls `f` until it returns `Some`, or fails after `timeout` (scaled).
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `cairnctl` binary of this build profile, built once if missing.
pub fn cairnctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // Tests run from target/<profile>/deps/, tools from target/<profile>/.
        let mut profile_dir = exe.parent().unwrap().to_path_buf();
        if profile_dir.file_name() == Some(OsStr::new("deps")) {
            profile_dir.pop();
        }
        let release = profile_dir.file_name() == Some(OsStr::new("release"));
        let cargo = Path::new(env!("CARGO"));
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "--workspace", "--bins", "--tests"])
            .current_dir(workspace_root());
        // Run outside cargo (a benchmark binary), rustup would pick each
        // crate's toolchain from its own rust-toolchain.toml (dashmap ships
        // one); pin the toolchain these binaries were built with.
        if std::env::var_os("RUSTUP_TOOLCHAIN").is_none() {
            let toolchain = cargo.parent().and_then(Path::parent);
            if let Some(name) = toolchain.and_then(Path::file_name) {
                if toolchain.and_then(Path::parent).and_then(Path::file_name)
                    == Some(OsStr::new("toolchains"))
                {
                    cmd.env("RUSTUP_TOOLCHAIN", name);
                }
            }
        }
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build for cairnctl");
        assert!(st.success(), "building cairnctl failed");
        profile_dir.join("cairnctl")
    })
}

/// Runs `cairnctl repo …` against one repository.
#[derive(Clone)]
pub struct Ctl {
    pub repo: String,
    pub env: Vec<(String, String)>,
}

impl Ctl {
    pub fn new(repo: impl Into<String>, passphrase: &str) -> Ctl {
        Ctl {
            repo: repo.into(),
            env: vec![("CAIRN_PASSPHRASE".into(), passphrase.into())],
        }
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Ctl {
        self.env.retain(|(ek, _)| ek != k);
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cairnctl_bin());
        c.arg("repo")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CAIRN_REPO", &self.repo);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn cairnctl")
    }

    /// Runs and insists on exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairnctl repo {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    /// Backs up `dir` as `domain`; returns the snapshot JSON (with `id`).
    pub fn backup(&self, domain: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
        let d = dir.to_str().unwrap();
        let mut a = vec!["backup", "--domain", domain];
        a.extend_from_slice(extra);
        a.push(d);
        self.json(&a)
    }
}

/// Path of the fleet generator in shared/.
pub fn gen_fleet_script() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_GEN_FLEET") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join("../shared/bench/gen_fleet.py");
    assert!(
        p.exists(),
        "fleet generator not found at {} (set CAIRN_GEN_FLEET)",
        p.display()
    );
    p
}

/// Generates a small deterministic fleet under `out`; returns the site dirs.
pub fn gen_fleet(out: &Path, sites: u32, scale: f64) -> Vec<PathBuf> {
    let st = Command::new("python3")
        .arg(gen_fleet_script())
        .args(["gen", "--out"])
        .arg(out)
        .args(["--sites", &sites.to_string(), "--scale", &scale.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("python3");
    assert!(st.success(), "gen_fleet.py failed");
    let mut dirs: Vec<PathBuf> = fs::read_dir(out.join("www"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

pub fn mutate_fleet(out: &Path, day: u32) {
    let st = Command::new("python3")
        .arg(gen_fleet_script())
        .args(["mutate", "--out"])
        .arg(out)
        .args(["--day", &day.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("python3");
    assert!(st.success(), "gen_fleet.py mutate failed");
}

/// What a tree holds, for comparison: relative path → description.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        mode: u32,
        mtime: (i64, i64),
        hash: blake3::Hash,
        len: u64,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Walks `root`, skipping what `keep` rejects (relative path, is_dir).
/// Every file below `dir` (not directories), sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn snapshot_tree(root: &Path, keep: &dyn Fn(&str, bool) -> bool) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if !keep(&rel, m.is_dir()) {
                continue;
            }
            let entry = if m.file_type().is_symlink() {
                Entry::Symlink {
                    target: fs::read_link(&p).unwrap(),
                }
            } else if m.is_dir() {
                stack.push(p.clone());
                Entry::Dir {
                    mode: m.permissions().mode() & 0o7777,
                }
            } else {
                let data = fs::read(&p).unwrap();
                Entry::File {
                    mode: m.permissions().mode() & 0o7777,
                    mtime: (m.mtime(), m.mtime_nsec()),
                    hash: blake3::hash(&data),
                    len: data.len() as u64,
                }
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// Asserts that `restored` holds exactly what `source` holds, minus excludes.
pub fn assert_same_tree(source: &Path, restored: &Path, excludes: &cairn_repo::exclude::Excludes) {
    let want = snapshot_tree(source, &|rel, dir| !excludes.is_excluded(rel, dir));
    let got = snapshot_tree(restored, &|_, _| true);
    assert!(
        !want.is_empty(),
        "nothing to compare in {}",
        source.display()
    );
    for (k, v) in &want {
        match got.get(k) {
            None => panic!("{k} missing from the restore of {}", source.display()),
            Some(g) => assert_eq!(g, v, "{k} differs after restore"),
        }
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "restore has entries the source (minus excludes) lacks: {extra:?}"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Total bytes of every file below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                n += m.len();
            }
        }
    }
    n
}

/// A child process killed on drop (SIGTERM, then SIGKILL after a grace period).
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe_kill(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with the `kill` tool (this crate denies `unsafe`).
pub fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A single-node Garage server in a temp dir with one bucket and one key.
pub struct Garage {
    _daemon: Daemon,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
}

pub fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_GARAGE") {
        return PathBuf::from(p);
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    for cand in [
        home.join(".cargo/bin/garage"),
        PathBuf::from("/usr/local/bin/garage"),
        PathBuf::from("/usr/bin/garage"),
    ] {
        if cand.exists() {
            return cand;
        }
    }
    panic!(
        "garage not found: the README's test command installs it (cargo install garage --locked)"
    );
}

impl Garage {
    pub fn start() -> Result<Garage> {
        let dir = tempfile::tempdir()?;
        let (rpc, s3) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let cfg = dir.path().join("garage.toml");
        fs::write(
            &cfg,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
                d = dir.path().display()
            ),
        )?;
        let log = dir.path().join("garage.log");
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&cfg)
            .arg("server")
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(dir.path().join("garage.err"))?)
            .spawn()
            .context("start garage")?;
        let daemon = Daemon { child, log };
        let cli = |args: &[&str]| -> Result<String> {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(&cfg)
                .args(args)
                .output()?;
            if !out.status.success() {
                bail!("garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        // `node id` reads the key from disk; `status` needs the RPC server up.
        eventually("garage RPC", Duration::from_secs(30), || {
            cli(&["status"]).ok()
        })?;
        let node = eventually("garage node id", Duration::from_secs(30), || {
            cli(&["node", "id", "-q"])
                .ok()
                .and_then(|s| s.trim().split('@').next().map(str::to_string))
                .filter(|s| !s.is_empty())
        })?;
        eventually("garage layout assign", Duration::from_secs(30), || {
            cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]).ok()
        })?;
        cli(&["layout", "apply", "--version", "1"])?;
        let key = cli(&["key", "create", "cairn-test"])?;
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .with_context(|| format!("{name} in {key}"))
        };
        let (key_id, secret_key) = (field("Key ID:")?, field("Secret key:")?);
        cli(&["bucket", "create", "cairn"])?;
        cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "cairn",
            "--key",
            "cairn-test",
        ])?;
        let g = Garage {
            _daemon: daemon,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id,
            secret: secret_key,
            bucket: "cairn".into(),
        };
        // Ready when a write goes through.
        eventually("garage S3 API", Duration::from_secs(30), || {
            g.storage("probe")
                .ok()
                .and_then(|s| s.put("probe", b"x").ok())
        })?;
        Ok(g)
    }

    pub fn apply_env(&self, ctl: Ctl) -> Ctl {
        ctl.with_env("AWS_ACCESS_KEY_ID", &self.key_id)
            .with_env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .with_env("AWS_ENDPOINT_URL", &self.endpoint)
            .with_env("AWS_REGION", "garage")
    }

    pub fn storage(&self, prefix: &str) -> Result<cairn_repo::storage::S3Storage> {
        Ok(cairn_repo::storage::S3Storage::new(
            cairn_repo::storage::S3Config {
                bucket: self.bucket.clone(),
                prefix: prefix.into(),
                endpoint: Some(self.endpoint.clone()),
                region: Some("garage".into()),
                access_key_id: Some(self.key_id.clone()),
                secret_access_key: Some(self.secret.clone()),
            },
        )?)
    }
}
