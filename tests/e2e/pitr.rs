//! Point in time for databases (DB-4, RST-2, RST-1; issue 13): the agent
//! streams its MariaDB server's binary log, the controller ships it every
//! second, and `restore DOMAIN --at T` brings the site's files and database
//! back as they were at T: rows written a second before T are there, rows a
//! second after are not, and another site's database on the same server is
//! not touched. PostgreSQL the same way, from a base backup and the WAL.

use std::fs;
use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::dbserver::{MariaDb, Postgres};
use cairn_tests::*;

use crate::fleet_db::site;

/// The newest shipment of the binary log (or WAL) the controller holds that
/// began at or after `since`: it read the spool after then. A restore to a
/// moment takes the newest shipment, which must have begun after it.
fn shipped_since(c: &Cluster, since: i64) -> Option<i64> {
    let snaps = c.json(&["snapshots", "list"]);
    snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["content"] == "binlog")
        .filter_map(|s| s["time"].as_i64())
        .filter(|&t| t >= since)
        .max()
}

/// `domains show shop.test --json`, or why not (the agent's first
/// inventory may not have reached the controller yet).
fn show_shop(c: &Cluster) -> Result<serde_json::Value, String> {
    let out = c.ctl(&["domains", "show", "shop.test", "--json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Polls `f` until it gives a value; on timeout the last thing it said.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > Duration::from_secs(90) => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// What the newest database restore job of shop.test says it did.
fn last_database_restore_step(c: &Cluster) -> String {
    let jobs = c.json(&["jobs", "list", "--domain", "shop.test"]);
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .rfind(|j| j["kind"] == "restore" && j["content"] == "database")
        .cloned()
        .unwrap();
    job["step"].as_str().unwrap().to_string()
}

fn server_now(maria: &MariaDb) -> i64 {
    maria
        .sql(None, "SELECT UNIX_TIMESTAMP()")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_database_comes_back_to_the_second_asked_and_no_later() {
    let maria = MariaDb::start_with_binlog().unwrap();
    let c = Cluster::start(ClusterOptions {
        scheduler: Some("run_schedules = true\nbinlog_ship_every = \"1s\"".into()),
        ..Default::default()
    });
    let root = c.dir.join("shop");
    site(&root, &maria);
    // Another site's database on the same server.
    maria.sql(
        None,
        "CREATE DATABASE blog; CREATE TABLE blog.notes (id INT PRIMARY KEY AUTO_INCREMENT, body VARCHAR(40)); \
         INSERT INTO blog.notes (body) VALUES ('blog first');",
    );
    let toml = format!(
        "[discovery]\nenabled = false\n[[domain]]\nname = \"shop.test\"\npath = {:?}\n\
         [binlog]\nsocket = {:?}\nuser = \"root\"\n",
        root, maria.socket
    );
    let mut agent = c.add_agent_toml("web1", &toml);
    let show = wait_for("the binary log to be shipped", || {
        let d = show_shop(&c)?;
        let p = d["point_in_time"].as_str().unwrap();
        if p.starts_with("on: binary log shipped") {
            Ok(d)
        } else {
            Err(format!(
                "{p}\nagent log: {}",
                fs::read_to_string(agent.log()).unwrap_or_default()
            ))
        }
    });
    assert!(show["rpo_seconds"].as_i64().unwrap() >= 0, "{show}");

    let run = c.json(&["backup", "shop.test", "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let files = snapshot_tree(&root, &|_, _| true);
    let snaps = c.json(&["snapshots", "list", "--domain", "shop.test"]);
    let dumped = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["content"] == "database")
        .map(|s| s["time"].as_i64().unwrap())
        .max()
        .unwrap();

    // After the dump: the events carry chosen times, one second either
    // side of T, in the site's database and in the other one; in the
    // server's next log file, so the replay spans two.
    let t = dumped.max(server_now(&maria)) + 1;
    maria.sql(
        None,
        &format!(
            "FLUSH BINARY LOGS; SET timestamp = {before}; \
             INSERT INTO shop.wp_comments (comment_post_ID, comment_content) VALUES (1, 'one second before'); \
             INSERT INTO blog.notes (body) VALUES ('blog before'); \
             SET timestamp = {after}; \
             INSERT INTO shop.wp_comments (comment_post_ID, comment_content) VALUES (1, 'one second after'); \
             UPDATE shop.wp_posts SET post_title = 'too late' WHERE ID = 1; \
             INSERT INTO blog.notes (body) VALUES ('blog after');",
            before = t - 1,
            after = t + 1
        ),
    );
    // The stream has the writes before a shipment made after now can.
    let head = maria.sql(None, "SHOW MASTER STATUS");
    let mut f = head.split_whitespace();
    let (file, pos): (String, u64) = (f.next().unwrap().into(), f.next().unwrap().parse().unwrap());
    let streamed = agent.state().join("binlog").join(&file);
    wait_for("the stream to receive the writes", || {
        let len = fs::metadata(&streamed).map(|m| m.len()).unwrap_or(0);
        (len >= pos)
            .then_some(())
            .ok_or(format!("{len} of {pos} bytes of {file}"))
    });
    let written = server_now(&maria);
    let blog = maria.checksums("blog");
    // The site is broken after T: the restore must undo it.
    maria.sql(
        Some("shop"),
        "DELETE FROM wp_comments; DROP TABLE wp_posts;",
    );
    wait_for("a shipment made after the writes", || {
        shipped_since(&c, written + 1)
            .filter(|&s| s > t)
            .ok_or_else(|| c.ok(&["jobs", "list"]))
    });

    let target = c.dir.join("restored");
    let out = c.ok(&[
        "restore",
        "shop.test",
        "--at",
        &format!("@{t}"),
        "--target",
        target.to_str().unwrap(),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    let comments = maria.sql(
        Some("shop"),
        "SELECT comment_content FROM wp_comments ORDER BY comment_ID",
    );
    assert!(comments.contains("one second before"), "{comments}");
    assert!(!comments.contains("one second after"), "{comments}");
    assert!(comments.contains("first"), "the dump's rows: {comments}");
    let title = maria.sql(Some("shop"), "SELECT post_title FROM wp_posts WHERE ID = 1");
    assert_eq!(title.trim(), "Hello");
    // The other site's database: every row, before and after T, as it was.
    assert_eq!(
        maria.checksums("blog"),
        blog,
        "the other database was touched"
    );
    let notes = maria.sql(Some("blog"), "SELECT body FROM notes ORDER BY id");
    assert_eq!(
        notes.lines().collect::<Vec<_>>(),
        ["blog first", "blog before", "blog after"]
    );
    // The files of the same moment, in one run with the database.
    assert_eq!(snapshot_tree(&target, &|_, _| true), files);
    let step = last_database_restore_step(&c);
    assert!(step.contains("replayed the binary log to"), "{step}");

    // In place: the log is replayed into the staged copy, which is checked
    // and swapped in whole; the damage done meanwhile is gone.
    maria.sql(
        Some("shop"),
        "DELETE FROM wp_comments; CREATE TABLE wp_backdoor (k INT);",
    );
    let out = c.json(&[
        "restore",
        "shop.test",
        "--at",
        &format!("@{t}"),
        "--db-only",
        "--in-place",
        "--wait",
    ]);
    assert_eq!(out["state"], "succeeded", "{out}");
    let comments = maria.sql(
        Some("shop"),
        "SELECT comment_content FROM wp_comments ORDER BY comment_ID",
    );
    assert!(comments.contains("one second before"), "{comments}");
    assert!(!comments.contains("one second after"), "{comments}");
    let tables = maria.sql(Some("shop"), "SHOW TABLES");
    assert!(!tables.contains("wp_backdoor"), "{tables}");
    let step = last_database_restore_step(&c);
    assert!(
        step.contains("replayed the binary log to") && step.contains("swapped them in at once"),
        "{step}"
    );
    assert!(!maria.sql(None, "SHOW DATABASES").contains("cairn_verify"));

    // A moment still to come (a time zone slip): refused, nothing queued.
    let future = server_now(&maria) + 3600;
    let out = c.ctl(&[
        "restore",
        "shop.test",
        "--at",
        &format!("@{future}"),
        "--db-only",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in the future"), "{err}");
    // Before any copy: named.
    let out = c.ctl(&[
        "restore",
        "shop.test",
        "--at",
        "2001-01-01T00:00:00Z",
        "--db-only",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no database copy from 2001-01-01"), "{err}");

    // Shipments do not pile up: the newest few are kept, and their jobs.
    let logs = c.json(&["snapshots", "list"]);
    let shipped = logs
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["content"] == "binlog")
        .count();
    assert!((1..=4).contains(&shipped), "{shipped} shipments kept");

    // An agent killed outside systemd leaves its stream running; the next
    // one stops it before streaming again: one writer in the spool.
    let marker = format!("--result-file={}/", agent.state().join("binlog").display());
    let streams = || {
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).split('\0').any(|a| a == marker))
            .count()
    };
    assert_eq!(streams(), 1);
    agent.kill9();
    assert_eq!(streams(), 1, "the killed agent's stream outlives it");
    let before = server_now(&maria);
    agent.start();
    wait_for("a shipment by the restarted agent", || {
        shipped_since(&c, before + 1).ok_or("none yet".to_string())
    });
    assert_eq!(streams(), 1, "two streams write into one spool");
}

#[test]
fn without_a_binary_log_the_domain_says_so_and_restores_the_dump() {
    let maria = MariaDb::start().unwrap();
    let c = Cluster::start(ClusterOptions::default());
    let root = c.dir.join("shop");
    site(&root, &maria);
    let toml = format!(
        "[discovery]\nenabled = false\n[[domain]]\nname = \"shop.test\"\npath = {:?}\n\
         [binlog]\nsocket = {:?}\nuser = \"root\"\n",
        root, maria.socket
    );
    let _agent = c.add_agent_toml("web1", &toml);
    let d = wait_for("the agent's binary log state", || {
        let d = show_shop(&c)?;
        let p = d["point_in_time"].as_str().unwrap().to_string();
        if p.starts_with("off:") && p.contains("binary log is off") {
            Ok(p)
        } else {
            Err(p)
        }
    });
    assert!(d.contains("log_bin"), "says how to turn it on: {d}");
    let text = c.ok(&["domains", "show", "shop.test"]);
    assert!(text.contains("point in time off:"), "{text}");

    let run = c.json(&["backup", "shop.test", "--db-only", "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let sums = maria.checksums("shop");
    maria.sql(Some("shop"), "DELETE FROM wp_comments");
    let snaps = c.json(&["snapshots", "list", "--domain", "shop.test"]);
    let at = snaps[0]["time"].as_i64().unwrap();
    let out = c.ok(&["restore", "shop.test", "--at", &format!("@{at}"), "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(maria.checksums("shop"), sums);
}

fn pg_now(pg: &Postgres) -> f64 {
    pg.sql("postgres", "SELECT extract(epoch FROM clock_timestamp())")
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the agent's stream has received all WAL written so far (its
/// slot's position is what pg_receivewal reported flushed).
fn pg_wait_received(pg: &Postgres) {
    let lsn = pg.sql("postgres", "SELECT pg_current_wal_lsn()");
    let sql = format!(
        "SELECT restart_lsn >= '{}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'cairn'",
        lsn.trim()
    );
    wait_for("the stream to receive the WAL", || {
        let done = pg.sql("postgres", &sql);
        (done.trim() == "t").then_some(()).ok_or(done)
    });
}

/// Waits (on the server's clock, at most a few seconds) until it reads `t`.
fn pg_wait_until(pg: &Postgres, t: f64) {
    while pg_now(pg) < t {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_postgres_database_comes_back_to_the_second_asked_from_the_wal() {
    let pg = Postgres::start().unwrap();
    for db in ["shop", "blog"] {
        pg.sql("postgres", &format!("CREATE DATABASE {db}"));
        pg.sql(
            db,
            "CREATE TABLE notes (id serial PRIMARY KEY, body text); \
             INSERT INTO notes (body) VALUES ('first'), ('second');",
        );
    }
    let c = Cluster::start(ClusterOptions {
        scheduler: Some("run_schedules = true\nbinlog_ship_every = \"1s\"".into()),
        ..Default::default()
    });
    let root = c.dir.join("shop");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("artisan"), "#!/usr/bin/env php\n").unwrap();
    fs::write(
        root.join(".env"),
        format!(
            "DB_CONNECTION=pgsql\nDB_HOST=127.0.0.1\nDB_PORT={}\nDB_DATABASE=shop\nDB_USERNAME=postgres\n",
            pg.port
        ),
    )
    .unwrap();
    let toml = format!(
        "[discovery]\nenabled = false\n[[domain]]\nname = \"shop.test\"\npath = {root:?}\n\
         [wal]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\n",
        pg.port
    );
    let agent = c.add_agent_toml("web1", &toml);
    let bases = agent.state().join("binlog/postgres/base");
    wait_for("the WAL shipped and a base backup taken", || {
        let d = show_shop(&c)?;
        let p = d["point_in_time"].as_str().unwrap().to_string();
        let based = fs::read_dir(&bases).is_ok_and(|mut d| d.next().is_some());
        if p.starts_with("on: WAL shipped") && based {
            Ok(())
        } else {
            Err(format!(
                "{p}\nagent log: {}",
                fs::read_to_string(agent.log()).unwrap_or_default()
            ))
        }
    });
    let run = c.json(&["backup", "shop.test", "--db-only", "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");

    // Commit times are the server's own: T falls within a second after the
    // first writes, the later ones wait for T + 1 on its clock.
    pg.sql(
        "shop",
        "INSERT INTO notes (body) VALUES ('one second before')",
    );
    pg.sql("blog", "INSERT INTO notes (body) VALUES ('blog before')");
    let t = pg_now(&pg).floor() as i64 + 1;
    pg_wait_until(&pg, (t + 1) as f64);
    pg.sql("shop", "INSERT INTO notes (body) VALUES ('one second after'); UPDATE notes SET body = 'too late' WHERE id = 1");
    pg.sql("blog", "INSERT INTO notes (body) VALUES ('blog after')");
    // The site is broken after T: the restore must undo it.
    pg.sql("shop", "DELETE FROM notes");
    pg_wait_received(&pg);
    let written = pg_now(&pg).ceil() as i64;
    let blog = pg.row_hashes("blog");
    wait_for("a shipment made after the writes", || {
        shipped_since(&c, written + 1)
            .filter(|&s| s > t)
            .ok_or_else(|| c.ok(&["jobs", "list"]))
    });

    let out = c.json(&[
        "restore",
        "shop.test",
        "--at",
        &format!("@{t}"),
        "--db-only",
        "--in-place",
        "--wait",
    ]);
    assert_eq!(out["state"], "succeeded", "{out}");
    let rows = pg.sql("shop", "SELECT body FROM notes ORDER BY id");
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        ["first", "second", "one second before"],
        "the rows of T - 1 s, none of T + 1 s"
    );
    assert_eq!(
        pg.row_hashes("blog"),
        blog,
        "the other database was touched"
    );
    let step = last_database_restore_step(&c);
    assert!(
        step.contains("recovered") && step.contains("base backup"),
        "{step}"
    );
    let left: Vec<_> = fs::read_dir("/var/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("cairn-pitr-"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");

    // A moment after the last commit: the WAL runs out first, and all of it
    // is the moment (the stream was running then).
    pg_wait_received(&pg);
    let quiet = pg_now(&pg).ceil() as i64 + 1;
    pg_wait_until(&pg, quiet as f64);
    wait_for("a shipment made after the quiet moment", || {
        shipped_since(&c, quiet + 1)
            .filter(|&s| s > quiet)
            .ok_or_else(|| c.ok(&["jobs", "list"]))
    });
    pg.sql("shop", "INSERT INTO notes (body) VALUES ('much later')");
    let out = c.json(&[
        "restore",
        "shop.test",
        "--at",
        &format!("@{quiet}"),
        "--db-only",
        "--wait",
    ]);
    assert_eq!(out["state"], "succeeded", "{out}");
    let rows = pg.sql("shop", "SELECT body FROM notes ORDER BY id");
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        ["first", "second", "one second before"],
        "the moment after the restore above and before 'much later'"
    );
}
