//! A site's files and database through the fleet, as one run (DB-1..3,
//! RST-1, RST-3, RST-7): `cairnctl backup D` takes both, `cairnctl restore
//! RUN` brings both back, a database alone, one table, into another
//! database, or as a test restore; credentials never leave the agent.

use std::fs;
use std::path::Path;

use cairn_tests::cluster::{Cluster, ClusterOptions, PASSPHRASE};
use cairn_tests::dbserver::MariaDb;
use cairn_tests::*;

pub(crate) const PASSWORD: &str = "s3cret-Site-Pass";

/// A WordPress-shaped site whose wp-config.php names a database on `maria`
/// (user with rights on it, on `copy_%` and on the scratch databases of test
/// restores, `cairn_verify_%`, only).
pub(crate) fn site(dir: &Path, maria: &MariaDb) {
    fs::create_dir_all(dir.join("wp-content/uploads")).unwrap();
    fs::write(
        dir.join("wp-config.php"),
        format!(
            "<?php\ndefine('DB_NAME', 'shop');\ndefine('DB_USER', 'shop_user');\n\
             define('DB_PASSWORD', '{PASSWORD}');\ndefine('DB_HOST', 'localhost:{}');\n\
             $table_prefix = 'wp_';\n",
            maria.socket.display()
        ),
    )
    .unwrap();
    fs::write(dir.join("index.php"), "<?php // the shop").unwrap();
    fs::write(dir.join("wp-content/uploads/logo.png"), vec![7u8; 50_000]).unwrap();
    maria.sql(
        None,
        &format!(
            "CREATE DATABASE shop; CREATE USER 'shop_user'@'localhost' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON shop.* TO 'shop_user'@'localhost'; \
             GRANT ALL ON `copy\\_%`.* TO 'shop_user'@'localhost'; \
             GRANT ALL ON `cairn\\_verify\\_%`.* TO 'shop_user'@'localhost';"
        ),
    );
    maria.sql(
        Some("shop"),
        "CREATE TABLE wp_posts (ID INT PRIMARY KEY AUTO_INCREMENT, post_title VARCHAR(200), post_content MEDIUMTEXT);\
         CREATE TABLE wp_comments (comment_ID INT PRIMARY KEY AUTO_INCREMENT, comment_post_ID INT, comment_content TEXT);\
         INSERT INTO wp_posts (post_title, post_content) VALUES ('Hello', REPEAT('lorem ipsum ', 400)), ('Prices', 'a, b, c');\
         INSERT INTO wp_comments (comment_post_ID, comment_content) VALUES (1, 'first'), (1, 'second'), (2, 'third');",
    );
}

#[test]
fn a_site_backs_up_and_restores_as_one_run() {
    let maria = MariaDb::start().unwrap();
    let c = Cluster::start(ClusterOptions::default());
    let root = c.dir.join("shop");
    site(&root, &maria);
    let agent = c.add_agent("web1", &[("shop.test", &root)]);
    let pristine = snapshot_tree(&root, &|_, _| true);
    let sums = maria.checksums("shop");

    // One command, the whole site: files and database in one run.
    let run = c.json(&["backup", "shop.test", "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let jobs = run["jobs"].as_array().unwrap();
    let contents: Vec<&str> = jobs
        .iter()
        .map(|j| j["content"].as_str().unwrap_or("files"))
        .collect();
    assert_eq!(contents, ["files", "database"], "{run}");
    let run_id = run["run"].as_str().unwrap().to_string();
    assert!(jobs.iter().all(|j| j["run"] == run_id.as_str()));
    let snaps = c.json(&["snapshots", "list"]);
    let of_run: Vec<&serde_json::Value> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["run"] == run_id.as_str())
        .collect();
    assert_eq!(of_run.len(), 2, "both snapshots carry the run: {snaps}");
    for content in ["files", "database"] {
        let at = c.metric(&format!(
            "cairn_domain_last_success_timestamp_seconds{{agent=\"web1\",domain=\"shop.test\",content=\"{content}\"}}"
        ));
        assert!(at > 0.0, "{content}: {at}");
    }
    assert_eq!(c.metric("cairn_agent_online{agent=\"web1\"}"), 1.0);

    // The dump's small chunks are stored in groups; the next dump of the
    // same site finds them through the controller and sends none again.
    let known = c.metric("cairn_blobs_known_total");
    let again = c.json(&["backup", "shop.test", "--wait"]);
    assert_eq!(again["state"], "succeeded", "{again}");
    let db_snap = |run: &serde_json::Value| {
        let jobs = run["jobs"].as_array().unwrap();
        let job = jobs.iter().find(|j| j["content"] == "database").unwrap();
        job["snapshot"].as_str().unwrap().to_string()
    };
    let repo = Ctl::new(c.dir.join("repo").to_str().unwrap(), PASSPHRASE);
    let stats = |snap: &str| {
        let all = repo.json(&["snapshots"]);
        let s = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == snap)
            .cloned();
        s.expect("the dump's snapshot")["stats"].clone()
    };
    let (first_db, second_db) = (stats(&db_snap(&run)), stats(&db_snap(&again)));
    assert!(
        c.metric("cairn_blobs_known_total") > known,
        "the second dump found nothing stored"
    );
    assert!(
        second_db["blobs_new"].as_u64().unwrap() < first_db["blobs_new"].as_u64().unwrap(),
        "first {first_db}, second {second_db}"
    );
    // Its blob list is stored as edits of the first dump's; the restores
    // below are of this second run, so they read through that edit.
    let store = cairn_repo::Repository::open(
        std::sync::Arc::new(cairn_repo::storage::LocalStorage::new(c.dir.join("repo"))),
        PASSPHRASE.as_bytes(),
    )
    .unwrap();
    store.load_index().unwrap();
    let db_tree = |snap: &str| {
        let (_, s) = store
            .find_snapshot_of(snap, None, cairn_repo::snapshot::Content::Database)
            .unwrap();
        store.load_tree(&s.tree).unwrap().nodes[0].subtree.unwrap()
    };
    let dump = store.load_tree(&db_tree(&db_snap(&again))).unwrap();
    let edited = dump
        .nodes
        .iter()
        .find(|n| n.name.ends_with(".sql"))
        .unwrap();
    assert_eq!(edited.bases, [db_tree(&db_snap(&run))], "{edited:?}");
    let run_id = again["run"].as_str().unwrap().to_string();

    // The site is defaced and its database vandalised.
    fs::write(root.join("index.php"), "<?php // hacked").unwrap();
    fs::write(
        root.join("wp-content/uploads/shell.php"),
        "<?php eval($_GET[1]);",
    )
    .unwrap();
    maria.sql(
        Some("shop"),
        "DELETE FROM wp_comments WHERE comment_ID > 1; UPDATE wp_posts SET post_title = 'pwned';",
    );
    assert_ne!(maria.checksums("shop"), sums);

    // Bad requests name their cause and start nothing.
    let before = c.json(&["jobs", "list"]).as_array().unwrap().len();
    let out = c.ctl(&["restore", &run_id]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --target"),
        "{out:?}"
    );
    let out = c.ctl(&[
        "restore",
        &run_id,
        "--db-only",
        "--into-database",
        "x; DROP DATABASE shop",
    ]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("database name"));
    assert_eq!(c.json(&["jobs", "list"]).as_array().unwrap().len(), before);

    // A test restore checks the dump in a scratch database and drops it.
    let test = c.json(&["restore", &run_id, "--db-only", "--test", "--wait"]);
    assert_eq!(test["state"], "succeeded", "{test}");
    assert!(
        test["step"]
            .as_str()
            .unwrap()
            .contains("verified 2 tables, 5 rows"),
        "{test}"
    );
    let dbs = maria.sql(None, "SHOW DATABASES");
    assert!(
        !dbs.contains("cairn_verify"),
        "scratch database left: {dbs}"
    );

    // One table back into the live database: only that table changes.
    let one = c.json(&[
        "restore",
        &run_id,
        "--db-only",
        "--table",
        "wp_posts",
        "--wait",
    ]);
    assert_eq!(one["state"], "succeeded", "{one}");
    let now = maria.checksums("shop");
    assert_eq!(now[1], sums[1], "wp_posts is back");
    assert_ne!(now[0], sums[0], "wp_comments was not asked for");

    // The whole run elsewhere: files into a directory, the database into a copy.
    let elsewhere = c.dir.join("restored");
    let both = c.json(&[
        "restore",
        &run_id,
        "--target",
        elsewhere.to_str().unwrap(),
        "--into-database",
        "copy_shop",
        "--wait",
    ]);
    assert_eq!(both["state"], "succeeded", "{both}");
    assert_eq!(both["jobs"].as_array().unwrap().len(), 2, "{both}");
    assert_eq!(snapshot_tree(&elsewhere, &|_, _| true), pristine);
    assert_eq!(maria.checksums("copy_shop"), sums);

    // And the live database whole.
    let db = c.json(&["restore", &run_id, "--db-only", "--wait"]);
    assert_eq!(db["state"], "succeeded", "{db}");
    assert_eq!(maria.checksums("shop"), sums);

    // The site's password never reached the controller, its logs or jobs,
    // nor the agent's log.
    let listed = c.ctl(&["jobs", "list", "--json"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(PASSWORD));
    let mut files = files_below(&c.state);
    files.push(c.controller_log());
    files.push(agent.log());
    for f in files {
        let bytes = fs::read(&f).unwrap_or_default();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the site's database password is in {}",
            f.display()
        );
    }
}

#[test]
fn a_failed_dump_fails_its_job_and_leaves_no_snapshot() {
    let mut maria = MariaDb::start().unwrap();
    let c = Cluster::start(ClusterOptions::default());
    let root = c.dir.join("shop");
    site(&root, &maria);
    let _agent = c.add_agent("web1", &[("shop.test", &root)]);
    maria.kill();
    let out = c.ctl(&["backup", "shop.test", "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "failed", "{run}");
    let jobs = run["jobs"].as_array().unwrap();
    assert_eq!(
        jobs[0]["state"], "succeeded",
        "the files still back up: {run}"
    );
    assert_eq!(jobs[1]["state"], "failed", "{run}");
    let err = jobs[1]["error"].as_str().unwrap();
    assert!(
        err.contains("mariadb") && err.contains("shop"),
        "the error names the tool and the database: {err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    let snaps = c.json(&["snapshots", "list"]);
    let dumps = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["content"] == "database")
        .count();
    assert_eq!(dumps, 0, "a failed dump commits nothing: {snaps}");
}

/// A restore through the fleet into another database that has tables: a
/// dump this server refuses (a 2 MB row over a 1 MiB max_allowed_packet)
/// fails in a scratch database, and the target keeps every table and row.
#[test]
fn a_restore_the_server_refuses_leaves_the_target_database_as_it_was() {
    let maria = MariaDb::start().unwrap();
    let c = Cluster::start(ClusterOptions::default());
    let root = c.dir.join("shop");
    site(&root, &maria);
    maria.sql(
        Some("shop"),
        "CREATE TABLE wp_media (id INT PRIMARY KEY, data LONGBLOB); \
         INSERT INTO wp_media VALUES (1, REPEAT('x', 2000000));",
    );
    let _agent = c.add_agent("web1", &[("shop.test", &root)]);
    let run = c.json(&["backup", "shop.test", "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let run_id = run["run"].as_str().unwrap().to_string();
    let into_copy = [
        "restore",
        &run_id,
        "--db-only",
        "--into-database",
        "copy_shop",
        "--wait",
    ];
    let first = c.json(&into_copy);
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(maria.checksums("copy_shop"), maria.checksums("shop"));
    maria.sql(
        Some("copy_shop"),
        "UPDATE wp_posts SET post_title = 'kept'; DELETE FROM wp_media;",
    );
    let kept = maria.checksums("copy_shop");

    maria.sql(None, "SET GLOBAL max_allowed_packet = 1048576");
    let mut refuse = into_copy.to_vec();
    refuse.push("--json");
    let out = c.ctl(&refuse);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let refused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["state"], "failed", "{refused}");
    let text = refused.to_string();
    assert!(text.contains("copy_shop was not touched"), "{text}");
    assert!(text.contains("max_allowed_packet"), "{text}");
    assert_eq!(maria.checksums("copy_shop"), kept, "the target changed");
    let dbs = maria.sql(None, "SHOW DATABASES");
    assert!(!dbs.contains("cairn_verify"), "scratch left behind: {dbs}");

    maria.sql(None, "SET GLOBAL max_allowed_packet = 67108864");
    let again = c.json(&into_copy);
    assert_eq!(again["state"], "succeeded", "{again}");
    assert!(
        again
            .to_string()
            .contains("first loaded into a scratch database"),
        "{again}"
    );
    assert_eq!(maria.checksums("copy_shop"), maria.checksums("shop"));
}
