//! Throwaway database servers from Debian's packages, one per test, in temp
//! dirs on free ports. PostgreSQL refuses to run as root, so as root it runs as
//! the `postgres` user (through `setpriv`, which execs, so signals reach it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{eventually, free_port, Daemon};

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Spawns a server logging to `log` and waits until `ready` answers. A
/// server that exits while starting fails the wait at once, with its log.
fn spawn_server(
    mut cmd: Command,
    log: PathBuf,
    what: &str,
    mut ready: impl FnMut() -> Option<String>,
) -> Result<Daemon> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut server = Daemon { child, log };
    let mut exited = None;
    let up = eventually(
        &format!("{what} to accept connections"),
        Duration::from_secs(60),
        || {
            if let Ok(Some(st)) = server.child.try_wait() {
                exited = Some(st);
                return Some(false);
            }
            ready().map(|_| true)
        },
    )?;
    if !up {
        let tail = fs::read_to_string(&server.log).unwrap_or_default();
        bail!("{what} exited while starting ({:?}):\n{tail}", exited);
    }
    Ok(server)
}

/// SIGKILL, no grace period.
fn kill_now(server: &mut Option<Daemon>) {
    if let Some(mut d) = server.take() {
        let _ = d.child.kill();
        let _ = d.child.wait();
    }
}

/// A MariaDB server; root logs in over the socket without a password.
pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub server: Option<Daemon>,
    /// With its binary log on (ROW format), for point-in-time restores.
    pub binlog: bool,
}

impl MariaDb {
    pub fn start() -> Result<MariaDb> {
        MariaDb::start_with(false)
    }

    /// A server writing a binary log (`binlog.NNNNNN`, ROW format).
    pub fn start_with_binlog() -> Result<MariaDb> {
        MariaDb::start_with(true)
    }

    fn start_with(binlog: bool) -> Result<MariaDb> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-mariadb-")
            .tempdir()?;
        let data = dir.path().join("data");
        // Each server its own temp dir: the bootstrap's temporary tables live
        // there, named by pid, and in the shared /tmp one vanished under a
        // parallel test's server once ("Could not remove temporary table
        // '/tmp/#sql-temptable-…', error: 2", then "Unknown table
        // 'mysql.tmp_user_sys'": mariadb-install-db failed).
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut install = Command::new("mariadb-install-db");
        install.args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            &format!("--tmpdir={}", tmp.display()),
        ]);
        if is_root() {
            install.arg("--user=root");
        }
        run(&mut install, "mariadb-install-db")?;
        let mut db = MariaDb {
            socket: dir.path().join("mysqld.sock"),
            dir,
            server: None,
            binlog,
        };
        db.restart()?;
        Ok(db)
    }

    /// Starts the server (again, after a kill) on the same data.
    pub fn restart(&mut self) -> Result<()> {
        let d = self.dir.path();
        let log = d.join("server.log");
        // Debian installs the server in /usr/sbin, which a user's PATH may lack.
        let bin = ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mariadbd");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--no-defaults".to_string(),
            format!("--datadir={}", d.join("data").display()),
            format!("--tmpdir={}", d.join("tmp").display()),
            format!("--socket={}", self.socket.display()),
            // The socket only. A TCP port picked by free_port() can be taken
            // by any connection the parallel tests open before mariadbd
            // binds it, and mariadbd then aborts ("Bind on TCP/IP port …
            // Address already in use"): the race found behind the
            // once-in-three failures of db::mariadb_round_trip_…_checksum.
            "--skip-networking".into(),
            format!("--pid-file={}", d.join("mysqld.pid").display()),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-log-file-size=64M".into(),
            "--max-allowed-packet=256M".into(),
        ]);
        if self.binlog {
            cmd.args([
                format!("--log-bin={}", d.join("data/binlog").display()),
                "--server-id=1".into(),
                "--binlog-format=ROW".into(),
            ]);
        } else {
            cmd.arg("--skip-log-bin");
        }
        if is_root() {
            cmd.arg("--user=root");
        }
        let server = spawn_server(
            cmd,
            log,
            "mariadbd (apt-get install mariadb-server)",
            || self.try_sql(None, "SELECT 1").ok(),
        )?;
        self.server = Some(server);
        Ok(())
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        kill_now(&mut self.server);
    }

    pub fn try_sql(&self, db: Option<&str>, sql: &str) -> Result<String> {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "--batch", "--skip-column-names", "-uroot"])
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--default-character-set=utf8mb4", "-e", sql]);
        if let Some(db) = db {
            cmd.arg(db);
        }
        run(&mut cmd, "mariadb")
    }

    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.try_sql(db, sql).unwrap()
    }

    /// `cairnctl` connection flags for root over the socket.
    pub fn conn_args(&self) -> Vec<String> {
        vec![
            "--db-socket".into(),
            self.socket.display().to_string(),
            "--db-user".into(),
            "root".into(),
        ]
    }

    /// `CHECKSUM TABLE` of every base table: the round-trip fingerprint.
    pub fn checksums(&self, db: &str) -> Vec<(String, String)> {
        let tables = self.sql(Some(db), "SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'");
        tables
            .lines()
            .map(|l| {
                let t = l.split('\t').next().unwrap().to_string();
                let quoted = t.replace('`', "``");
                let c = self.sql(Some(db), &format!("CHECKSUM TABLE `{quoted}` EXTENDED"));
                (t, c.split('\t').nth(1).unwrap_or("").trim().to_string())
            })
            .collect()
    }
}

fn pg_bin(tool: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    match versions.last() {
        Some(v) => v.join("bin").join(tool),
        None => PathBuf::from(tool),
    }
}

/// A PostgreSQL server with `trust` auth for the `postgres` superuser on
/// loopback, plus password auth for other roles.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub server: Option<Daemon>,
}

fn as_postgres(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl Postgres {
    pub fn start() -> Result<Postgres> {
        let dir = tempfile::Builder::new().prefix("cairn-pg-").tempdir()?;
        if is_root() {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path()),
                "chown",
            )?;
        }
        let data = dir.path().join("data");
        run(
            as_postgres(&pg_bin("initdb"))
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "-D",
                ])
                .arg(&data),
            "initdb (apt-get install postgresql)",
        )?;
        // Other roles log in with a password, so the password path is exercised.
        fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nhost all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        let mut pg = Postgres {
            port: free_port(),
            dir,
            server: None,
        };
        pg.restart()?;
        Ok(pg)
    }

    pub fn restart(&mut self) -> Result<()> {
        let d = self.dir.path();
        let log = d.join("server.log");
        let mut cmd = as_postgres(&pg_bin("postgres"));
        cmd.arg("-D")
            .arg(d.join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", d.display()))
            .args(["-c", "fsync=off"]);
        let server = spawn_server(cmd, log, "postgres (apt-get install postgresql)", || {
            self.try_sql("postgres", "SELECT 1").ok()
        })?;
        self.server = Some(server);
        Ok(())
    }

    pub fn kill(&mut self) {
        kill_now(&mut self.server);
    }

    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String> {
        run(
            Command::new("psql")
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]),
            "psql",
        )
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql).unwrap()
    }

    pub fn conn_args(&self) -> Vec<String> {
        vec![
            "--db-host".into(),
            "127.0.0.1".into(),
            "--db-port".into(),
            self.port.to_string(),
            "--db-user".into(),
            "postgres".into(),
        ]
    }

    /// Per table, the md5 of its rows in order: the round-trip fingerprint.
    pub fn row_hashes(&self, db: &str) -> Vec<(String, String)> {
        let tables = self.sql(
            db,
            "SELECT schemaname || '.' || tablename || E'\\t' || format('%I.%I', schemaname, tablename) \
             FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        tables
            .lines()
            .map(|line| {
                let (t, quoted) = line.split_once('\t').expect("name and quoted name");
                let h = self.sql(
                    db,
                    &format!("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {quoted} x"),
                );
                (t.to_string(), h.trim().to_string())
            })
            .collect()
    }
}
