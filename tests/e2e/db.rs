//! Databases against real MariaDB and PostgreSQL servers (DB-1..3, DB-5,
//! RST-3, RST-7, VER-3).

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use cairn_tests::dbserver::{MariaDb, Postgres};
use cairn_tests::{eventually, Ctl};

fn repo() -> (tempfile::TempDir, Ctl) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Ctl::new(dir.path().join("repo").to_str().unwrap(), "db-test-pass");
    ctl.ok(&["init"]);
    (dir, ctl)
}

/// `backup-db` of one database; returns the snapshot JSON (with its manifest).
fn backup_db(
    ctl: &Ctl,
    domain: &str,
    engine: &str,
    database: &str,
    extra: &[&str],
    conn: &[String],
) -> serde_json::Value {
    let mut a = vec![
        "backup-db",
        "--domain",
        domain,
        "--engine",
        engine,
        "--database",
        database,
    ];
    a.extend_from_slice(extra);
    ctl.json(&args(&a, conn))
}

/// `restore-db latest` of a domain into `target`.
fn restore_db(ctl: &Ctl, domain: &str, target: &str, conn: &[String]) {
    let a = [
        "restore-db",
        "latest",
        "--domain",
        domain,
        "--database",
        target,
    ];
    ctl.ok(&args(&a, conn));
}

/// The manifest section of `name` in a `backup-db --json` result.
fn section(snap: &serde_json::Value, name: &str) -> serde_json::Value {
    let sections = snap["manifest"]["sections"].as_array().unwrap();
    sections.iter().find(|s| s["name"] == name).unwrap().clone()
}

fn args<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend(extra.iter().map(String::as_str));
    v
}

const MARIADB_SCHEMA: &str = r#"
SET NAMES utf8mb4;
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, note TEXT NULL, created DATETIME(6));
CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, total DECIMAL(10,2), data LONGBLOB,
  FOREIGN KEY (customer_id) REFERENCES customers(id));
CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, msg VARCHAR(200));
CREATE TABLE nokey (a INT, b VARCHAR(20));
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
DELIMITER ;;
CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW BEGIN INSERT INTO audit(msg) VALUES (CONCAT('order ', NEW.id)); END;;
CREATE PROCEDURE add_customer(IN n VARCHAR(100)) BEGIN INSERT INTO customers(name) VALUES (n); END;;
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x*2;;
DELIMITER ;
CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit WHERE id < 0;
INSERT INTO customers(name, note, created) VALUES ('Zoë 🚀 Ünïcødé', 'multi\nline\ttab', '2024-01-02 03:04:05.123456'),
  ('O''Brien', NULL, NULL), ('back\\slash "quoted"', '', NOW(6)), ('semi;colon),(paren', 'x', NULL);
INSERT INTO orders(customer_id, total, data) VALUES (1, 150.5, X'00FF0A0D27225C2829'), (2, 10, NULL), (3, 99.99, '');
INSERT INTO nokey VALUES (1, 'a'), (1, 'a'), (NULL, NULL);
"#;

fn load_mariadb_schema(db: &MariaDb, name: &str) {
    db.sql(
        None,
        &format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
    );
    db.sql(Some(name), MARIADB_SCHEMA);
    // Many rows, and rows larger than a chunk (the 256 KiB cut inside a row).
    db.sql(
        Some(name),
        "INSERT INTO orders(customer_id, total, data) \
         SELECT 1 + seq % 4, seq / 7, RANDOM_BYTES(1 + seq % 900) FROM seq_1_to_20000",
    );
    db.sql(
        Some(name),
        "INSERT INTO orders(customer_id, total, data) \
         SELECT 2, 1, REPEAT(SHA2(seq, 512), 9000) FROM seq_1_to_3",
    );
}

fn show_create(db: &MariaDb, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, obj) in [
        ("VIEW", "big_orders"),
        ("TRIGGER", "orders_ai"),
        ("PROCEDURE", "add_customer"),
        ("FUNCTION", "twice"),
        ("EVENT", "purge_audit"),
    ] {
        let s = db.sql(Some(name), &format!("SHOW CREATE {kind} {obj}"));
        // The definition without the database-specific or time-varying parts.
        let def = s
            .split('\t')
            .find(|f| f.contains("CREATE"))
            .unwrap_or("")
            .replace(&format!("`{name}`."), "");
        let def = def.split(" STARTS ").next().unwrap().to_string();
        out.push(format!("{kind} {obj}: {def}"));
    }
    out
}

/// DB-1, RST-1: views, triggers, routines, events, foreign keys, utf8mb4,
/// BLOBs, NULLs and rows larger than a chunk survive a round trip with
/// identical CHECKSUM TABLE results.
#[test]
fn mariadb_round_trip_keeps_every_checksum() {
    let db = MariaDb::start().unwrap();
    let conn = db.conn_args();
    load_mariadb_schema(&db, "shop");
    let (_d, ctl) = repo();
    let snap = backup_db(&ctl, "shop.test", "mariadb", "shop", &[], &conn);
    let m = &snap["manifest"];
    assert_eq!(m["engine"], "mariadb");
    let tables: Vec<&str> = m["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "table")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["audit", "customers", "nokey", "orders"]);
    assert_eq!(section(&snap, "orders")["rows"], 20_006);

    restore_db(&ctl, "shop.test", "shop_copy", &conn);
    let (a, b) = (db.checksums("shop"), db.checksums("shop_copy"));
    assert_eq!(a.len(), 4);
    assert!(a.iter().all(|(_, c)| !c.is_empty() && c != "NULL"), "{a:?}");
    assert_eq!(a, b, "table checksums differ after the round trip");
    assert_eq!(show_create(&db, "shop"), show_create(&db, "shop_copy"));

    // RST-7/VER-3: the test restore passes and leaves no scratch database.
    let out = ctl.ok(&args(
        &["restore-db", "latest", "--domain", "shop.test", "--test"],
        &conn,
    ));
    assert!(out.contains("passed"), "{out}");
    let dbs = db.sql(None, "SHOW DATABASES");
    assert!(
        !dbs.contains("cairn_verify"),
        "scratch database left behind: {dbs}"
    );
    assert_eq!(
        db.checksums("shop"),
        a,
        "the test restore touched the source"
    );
}

const PG_SCHEMA: &str = r#"
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text, created timestamptz);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), total numeric(10,2), data bytea);
CREATE TABLE audit (id serial PRIMARY KEY, msg text);
CREATE SCHEMA app;
CREATE TABLE app.settings (key text PRIMARY KEY, value jsonb);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE FUNCTION audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit(msg) VALUES ('order ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION audit_order();
INSERT INTO customers(name, note, created) VALUES ('Zoë 🚀 Ünïcødé', E'multi\nline\ttab', '2024-01-02 03:04:05.123456+00'),
  ('O''Brien', NULL, NULL), (E'back\\slash "quoted"', '', now()), ('semi;colon),(paren', 'x', NULL);
INSERT INTO orders(customer_id, total, data)
  SELECT 1 + g % 4, g / 7.0, decode(md5(g::text) || repeat('ab', g % 500), 'hex') FROM generate_series(1, 20000) g;
INSERT INTO orders(customer_id, total, data) SELECT 2, 1, decode(repeat(md5(g::text), 20000), 'hex') FROM generate_series(1, 3) g;
INSERT INTO orders(customer_id, total, data) VALUES (3, NULL, NULL);
INSERT INTO app.settings VALUES ('a', '{"x": [1, 2, null]}'), ('b', NULL);
"#;

/// A PostgreSQL server with database `shop` holding `PG_SCHEMA`, and the
/// `cairnctl` flags that reach it.
fn pg_with_shop() -> (Postgres, Vec<String>) {
    let pg = Postgres::start().unwrap();
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql("shop", PG_SCHEMA);
    let conn = pg.conn_args();
    (pg, conn)
}

/// DB-1: PostgreSQL through pg_dump's custom format: every table's ordered
/// row hash is identical after restore, and views and triggers work.
#[test]
fn postgres_round_trip_keeps_every_row_hash() {
    let (pg, conn) = pg_with_shop();
    let (_d, ctl) = repo();
    let snap = backup_db(&ctl, "shop.test", "postgres", "shop", &[], &conn);
    let orders = section(&snap, "orders");
    assert_eq!(orders["rows"], 20_004);
    assert_eq!(orders["schema"], "public");

    restore_db(&ctl, "shop.test", "shop_copy", &conn);
    let (a, b) = (pg.row_hashes("shop"), pg.row_hashes("shop_copy"));
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a, b, "row hashes differ after the round trip");
    // The trigger and view came back and work.
    let audit = || {
        let n = pg.sql("shop_copy", "SELECT count(*) FROM audit");
        n.trim().parse::<u64>().unwrap()
    };
    let before = audit();
    pg.sql(
        "shop_copy",
        "INSERT INTO orders(customer_id, total) VALUES (1, 500)",
    );
    assert_eq!(audit(), before + 1);
    // The view sees the new row: 500 > 100 and nothing else is 5000.
    pg.sql(
        "shop_copy",
        "UPDATE orders SET total = 5000 WHERE total = 500 AND data IS NULL",
    );
    let big = pg.sql(
        "shop_copy",
        "SELECT count(*) FROM big_orders WHERE total = 5000",
    );
    assert_eq!(big.trim(), "1");

    let out = ctl.ok(&args(
        &["restore-db", "latest", "--domain", "shop.test", "--test"],
        &conn,
    ));
    assert!(out.contains("passed"), "{out}");
    let dbs = pg.sql("postgres", "SELECT datname FROM pg_database");
    assert!(
        !dbs.contains("cairn_verify"),
        "scratch database left behind: {dbs}"
    );
}

/// DB-1/DB-5: PostgreSQL writes an updated row wherever its heap has room,
/// so `pg_dump` lists rows in an order that moves every day; the stored dump
/// lists each keyed table's rows in primary-key order (integers as numbers,
/// other keys as text), so unchanged rows keep their chunks.
#[test]
fn postgres_rows_are_stored_in_key_order_after_updates_move_them() {
    let (pg, conn) = pg_with_shop();
    pg.sql(
        "shop",
        "UPDATE orders SET total = total + 1 WHERE id % 97 = 0; \
         INSERT INTO app.settings VALUES ('0', NULL); UPDATE app.settings SET value = '1' WHERE key = 'a'",
    );
    let heap: Vec<u64> = pg
        .sql("shop", "SELECT id FROM orders")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(
        heap.windows(2).any(|w| w[0] > w[1]),
        "the updates moved rows in the heap"
    );
    let (dir, ctl) = repo();
    let snap = backup_db(&ctl, "shop.test", "postgres", "shop", &[], &conn);
    let target = dir.path().join("files");
    let id = snap["id"].as_str().expect("snapshot id");
    ctl.ok(&["restore", id, "--target", target.to_str().unwrap()]);
    let archive = cairn_tests::files_below(&target)
        .into_iter()
        .find(|p| std::fs::read(p).unwrap().starts_with(b"PGDMP"))
        .expect("the dump among the restored files");
    let rows = |table: &str| -> Vec<String> {
        let out = std::process::Command::new("pg_restore")
            .args(["--data-only", "--table", table, "-f", "-"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let copy = text.split_once(" FROM stdin;\n").unwrap().1;
        let data = copy.split_once("\\.\n").unwrap().0;
        data.lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    let ids: Vec<u64> = rows("orders").iter().map(|i| i.parse().unwrap()).collect();
    assert_eq!(ids.len(), heap.len());
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(rows("settings"), ["0", "a", "b"]);
    restore_db(&ctl, "shop.test", "shop_copy", &conn);
    assert_eq!(pg.row_hashes("shop"), pg.row_hashes("shop_copy"));
}

/// RST-3: one table restores from its own byte range; the bytes read are shown.
#[test]
fn single_table_restore_reads_only_its_range() {
    let db = MariaDb::start().unwrap();
    let conn = db.conn_args();
    db.sql(None, "CREATE DATABASE big");
    for t in ["alpha", "beta", "gamma"] {
        db.sql(
            Some("big"),
            &format!("CREATE TABLE {t} (id INT PRIMARY KEY, v TEXT)"),
        );
        db.sql(
            Some("big"),
            &format!("INSERT INTO {t} SELECT seq, CONCAT('{t}-', SHA2(seq, 512), REPEAT('x', seq % 300)) FROM seq_1_to_30000"),
        );
    }
    let (_d, ctl) = repo();
    let snap = backup_db(&ctl, "big.test", "mariadb", "big", &[], &conn);
    let size = snap["manifest"]["size"].as_u64().unwrap();
    let stored = snap["stats"]["stored_bytes"].as_u64().unwrap();
    let beta = section(&snap, "beta");
    let out = ctl.json(&args(
        &[
            "restore-db",
            "latest",
            "--domain",
            "big.test",
            "--database",
            "only_beta",
            "--table",
            "beta",
        ],
        &conn,
    ));
    let r = &out["restore"];
    let dump_bytes = r["dump_bytes"].as_u64().unwrap();
    let read = r["stored_bytes_read"].as_u64().unwrap();
    eprintln!(
        "single-table restore: dump {size} B (stored {stored} B); table beta {} B; read {dump_bytes} B of dump, {read} B from storage",
        beta["length"]
    );
    // The prelude and epilogue are a few KiB; everything else is beta's range.
    assert!(dump_bytes >= beta["length"].as_u64().unwrap());
    assert!(
        dump_bytes < beta["length"].as_u64().unwrap() + 8192,
        "{dump_bytes}"
    );
    assert!(read < stored / 2, "read {read} of {stored} stored bytes");
    let tables = db.sql(Some("only_beta"), "SHOW TABLES");
    assert_eq!(tables.trim(), "beta");
    assert_eq!(db.checksums("only_beta")[0], db.checksums("big")[1]);
    // Unknown tables are refused before anything is touched.
    let bad = ctl.run(&args(
        &[
            "restore-db",
            "latest",
            "--domain",
            "big.test",
            "--database",
            "x",
            "--table",
            "nope",
        ],
        &conn,
    ));
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not in the dump"));
    assert!(!db.sql(None, "SHOW DATABASES").lines().any(|l| l == "x"));
}

/// RST-3 on PostgreSQL: one table with its indexes and sequence, nothing else.
#[test]
fn postgres_single_table_restore() {
    let (pg, conn) = pg_with_shop();
    let (_d, ctl) = repo();
    let snap = backup_db(&ctl, "s", "postgres", "shop", &[], &conn);
    let stored = snap["stats"]["stored_bytes"].as_u64().unwrap();
    let out = ctl.json(&args(
        &[
            "restore-db",
            "latest",
            "--domain",
            "s",
            "--database",
            "one",
            "--table",
            "customers",
        ],
        &conn,
    ));
    let read = out["restore"]["stored_bytes_read"].as_u64().unwrap();
    assert!(read < stored / 4, "read {read} of {stored}");
    let tables = pg.sql(
        "one",
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables.trim(), "customers");
    let a = pg.row_hashes("shop");
    let b = pg.row_hashes("one");
    assert_eq!(
        b,
        a.iter()
            .filter(|(t, _)| t == "public.customers")
            .cloned()
            .collect::<Vec<_>>()
    );
    // The serial sequence came along: a new row gets the next id.
    let id = pg.sql(
        "one",
        "INSERT INTO customers(name) VALUES ('new') RETURNING id",
    );
    assert_eq!(id.trim(), "5");

    // A table with a trigger brings the trigger's function, which the new
    // database lacks; the foreign key to a table left behind stays out.
    ctl.ok(&args(
        &[
            "restore-db",
            "latest",
            "--domain",
            "s",
            "--database",
            "two",
            "--table",
            "orders",
        ],
        &conn,
    ));
    let triggers = pg.sql(
        "two",
        "SELECT tgname || ' ' || tgfoid::regproc FROM pg_trigger WHERE NOT tgisinternal",
    );
    assert_eq!(triggers.trim(), "orders_ai audit_order");
    let orders = |db: &str| {
        pg.row_hashes(db)
            .into_iter()
            .find(|(t, _)| t == "public.orders")
    };
    assert_eq!(orders("two"), orders("shop"));
}

/// RST-1: a restore over an existing database is all or nothing. A view
/// made since the backup stops `pg_restore --clean` from dropping its table;
/// the refusal names it and the database is as it was, indexes included.
#[test]
fn postgres_restore_over_a_database_is_all_or_nothing() {
    let (pg, conn) = pg_with_shop();
    let (_d, ctl) = repo();
    backup_db(&ctl, "s", "postgres", "shop", &[], &conn);
    let backed_up = pg.row_hashes("shop");
    pg.sql("shop", "DELETE FROM orders WHERE id > 100");
    pg.sql("shop", "CREATE VIEW report AS SELECT id FROM orders");
    let changed = pg.row_hashes("shop");
    let indexes = || {
        pg.sql(
            "shop",
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'",
        )
    };
    let index_count = indexes();
    let restore = [
        "restore-db",
        "latest",
        "--domain",
        "s",
        "--database",
        "shop",
    ];
    let out = ctl.run(&args(&restore, &conn));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("report depends on"), "{err}");
    assert_eq!(pg.row_hashes("shop"), changed);
    assert_eq!(indexes(), index_count);

    pg.sql("shop", "DROP VIEW report");
    ctl.ok(&args(&restore, &conn));
    assert_eq!(pg.row_hashes("shop"), backed_up);
    assert_eq!(indexes(), index_count);
}

/// RST-6, DB-1: a MariaDB restore over a database that has tables loads the
/// dump into a scratch database first. When this server refuses it (here a
/// row larger than its `max_allowed_packet`, as on a server a site moved
/// to), the error says so and the live database is as it was. Without the
/// rehearsal the refused table had been dropped and made again empty, its
/// rows lost, and the tables before it replaced.
#[test]
fn mariadb_restore_the_server_refuses_changes_nothing() {
    let db = MariaDb::start().unwrap();
    let conn = db.conn_args();
    db.sql(None, "CREATE DATABASE site CHARACTER SET utf8mb4");
    db.sql(
        Some("site"),
        "CREATE TABLE a_posts (id INT PRIMARY KEY, title TEXT); \
         CREATE TABLE b_media (id INT PRIMARY KEY, data LONGBLOB); \
         CREATE TABLE c_users (id INT PRIMARY KEY, name TEXT); \
         INSERT INTO a_posts SELECT seq, CONCAT('post ', seq) FROM seq_1_to_500; \
         INSERT INTO b_media SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_50; \
         INSERT INTO b_media VALUES (51, REPEAT('x', 2000000)); \
         INSERT INTO c_users SELECT seq, CONCAT('user ', seq) FROM seq_1_to_20;",
    );
    let (_d, ctl) = repo();
    backup_db(&ctl, "site.test", "mariadb", "site", &[], &conn);
    let backed_up = db.checksums("site");
    db.sql(
        Some("site"),
        "DELETE FROM b_media WHERE id = 51; \
         INSERT INTO b_media SELECT 100 + seq, RANDOM_BYTES(500) FROM seq_1_to_30; \
         UPDATE a_posts SET title = 'edited' WHERE id < 10; \
         INSERT INTO c_users VALUES (21, 'new user');",
    );
    let live = db.checksums("site");
    assert_ne!(live, backed_up);
    // The dump's 2 MB row is one INSERT of 4 MB (hex): over a 1 MiB limit.
    db.sql(None, "SET GLOBAL max_allowed_packet = 1048576");

    let restore = ["restore-db", "latest", "--domain", "site.test"];
    let out = ctl.run(&args(&restore, &conn));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("site was not touched"), "{err}");
    assert!(
        err.contains("max_allowed_packet"),
        "names the server's refusal: {err}"
    );
    assert_eq!(db.checksums("site"), live, "the live database changed");
    let dbs = db.sql(None, "SHOW DATABASES");
    assert!(!dbs.contains("cairn_verify"), "scratch left behind: {dbs}");

    // With the limit raised the same restore goes through, rehearsal first.
    db.sql(None, "SET GLOBAL max_allowed_packet = 67108864");
    let out = ctl.run(&args(&restore, &conn));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the dump loads on this server: 3 tables"),
        "{err}"
    );
    assert_eq!(db.checksums("site"), backed_up);

    // A data-only dump makes no table, so it is not rehearsed: it loads
    // into a database whose tables exist and are empty.
    let data = backup_db(
        &ctl,
        "data.test",
        "mariadb",
        "site",
        &["--data-only"],
        &conn,
    );
    db.sql(None, "CREATE DATABASE emptied CHARACTER SET utf8mb4");
    for t in ["a_posts", "b_media", "c_users"] {
        db.sql(Some("emptied"), &format!("CREATE TABLE {t} LIKE site.{t}"));
    }
    let data_restore = [
        "restore-db",
        data["id"].as_str().unwrap(),
        "--database",
        "emptied",
    ];
    ctl.ok(&args(&data_restore, &conn));
    assert_eq!(db.checksums("emptied"), backed_up);
}

const WORDPRESS: &str = r#"
CREATE TABLE wp_options (option_id bigint unsigned NOT NULL AUTO_INCREMENT, option_name varchar(191) NOT NULL DEFAULT '',
  option_value longtext NOT NULL, autoload varchar(20) NOT NULL DEFAULT 'yes', PRIMARY KEY (option_id), UNIQUE KEY option_name (option_name));
CREATE TABLE wp_posts (ID bigint unsigned NOT NULL AUTO_INCREMENT, post_title text NOT NULL, post_content longtext NOT NULL, PRIMARY KEY (ID));
CREATE TABLE wp_litespeed_cache (id int PRIMARY KEY, payload text);
INSERT INTO wp_options (option_name, option_value, autoload) VALUES
  ('siteurl', 'https://example.test', 'yes'), ('_transient_doing_cron', '1700000000', 'no'),
  ('_transient_timeout_feed_abc', '1700000000', 'no'), ('blogname', 'It''s a (test), site', 'yes'),
  ('_site_transient_update_core', 'a:1:{s:7:"updates";a:0:{}}', 'no'), ('my_transient_setting', 'keep me', 'yes'),
  ('active_plugins', 'a:1:{i:0;s:19:"akismet/akismet.php";}', 'yes');
INSERT INTO wp_posts (post_title, post_content) VALUES ('Hello', 'World'), ('Second', 'Post');
INSERT INTO wp_litespeed_cache VALUES (1, 'cached page'), (2, 'another');
"#;

const LARAVEL: &str = r#"
CREATE TABLE users (id bigint PRIMARY KEY, email varchar(255));
CREATE TABLE sessions (id varchar(255) PRIMARY KEY, payload longtext, last_activity int);
CREATE TABLE cache (`key` varchar(255) PRIMARY KEY, value mediumtext, expiration int);
CREATE TABLE cache_locks (`key` varchar(255) PRIMARY KEY, owner varchar(255), expiration int);
CREATE TABLE jobs (id bigint PRIMARY KEY, payload longtext);
CREATE TABLE failed_jobs (id bigint PRIMARY KEY, payload longtext);
CREATE TABLE orders (id bigint PRIMARY KEY, total int);
INSERT INTO users VALUES (1, 'a@example.test'), (2, 'b@example.test');
INSERT INTO sessions VALUES ('s1', 'x', 1), ('s2', 'y', 2);
INSERT INTO cache VALUES ('k', 'v', 1);
INSERT INTO cache_locks VALUES ('k', 'o', 1);
INSERT INTO jobs VALUES (1, 'job');
INSERT INTO failed_jobs VALUES (1, 'failed');
INSERT INTO orders VALUES (1, 10), (2, 20);
"#;

/// DB-2: the WordPress and Laravel profiles leave out what the application
/// regenerates, and keep everything else (structure included).
#[test]
fn cms_profiles_skip_regenerable_rows() {
    let db = MariaDb::start().unwrap();
    let conn = db.conn_args();
    db.sql(None, "CREATE DATABASE wp");
    db.sql(Some("wp"), WORDPRESS);
    db.sql(None, "CREATE DATABASE app");
    db.sql(Some("app"), LARAVEL);
    let (_d, ctl) = repo();
    let snap = backup_db(
        &ctl,
        "wp.test",
        "mariadb",
        "wp",
        &["--profile", "wordpress"],
        &conn,
    );
    assert_eq!(
        snap["manifest"]["rows_skipped"],
        serde_json::json!([["wp_options", 3]])
    );
    restore_db(&ctl, "wp.test", "wp2", &conn);
    let names = db.sql(
        Some("wp2"),
        "SELECT option_name FROM wp_options ORDER BY option_id",
    );
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "siteurl",
            "blogname",
            "my_transient_setting",
            "active_plugins"
        ]
    );
    let blogname = db.sql(
        Some("wp2"),
        "SELECT option_value FROM wp_options WHERE option_name = 'blogname'",
    );
    assert_eq!(blogname.trim(), "It's a (test), site");
    assert_eq!(
        db.sql(Some("wp2"), "SELECT COUNT(*) FROM wp_posts").trim(),
        "2"
    );
    assert_eq!(
        db.sql(Some("wp2"), "SELECT COUNT(*) FROM wp_litespeed_cache")
            .trim(),
        "0"
    );
    // The test restore compares against the counts after skipping.
    ctl.ok(&args(
        &["restore-db", "latest", "--domain", "wp.test", "--test"],
        &conn,
    ));

    backup_db(
        &ctl,
        "app.test",
        "mariadb",
        "app",
        &["--profile", "laravel"],
        &conn,
    );
    restore_db(&ctl, "app.test", "app2", &conn);
    for (t, n) in [
        ("users", 2),
        ("orders", 2),
        ("sessions", 0),
        ("cache", 0),
        ("cache_locks", 0),
        ("jobs", 0),
        ("failed_jobs", 0),
    ] {
        let c = db.sql(Some("app2"), &format!("SELECT COUNT(*) FROM `{t}`"));
        assert_eq!(c.trim(), n.to_string(), "rows of {t}");
    }

    // DB-3: structure only, data only, chosen tables.
    let s = backup_db(
        &ctl,
        "app.test",
        "mariadb",
        "app",
        &["--structure-only"],
        &conn,
    );
    assert_eq!(s["manifest"]["options"]["mode"], "structure-only");
    restore_db(&ctl, "app.test", "app3", &conn);
    assert_eq!(
        db.sql(Some("app3"), "SELECT COUNT(*) FROM users").trim(),
        "0"
    );
    backup_db(
        &ctl,
        "app.test",
        "mariadb",
        "app",
        &["--table", "orders"],
        &conn,
    );
    restore_db(&ctl, "app.test", "app4", &conn);
    assert_eq!(db.sql(Some("app4"), "SHOW TABLES").trim(), "orders");
    db.sql(Some("app3"), "DELETE FROM orders");
    backup_db(
        &ctl,
        "app.test",
        "mariadb",
        "app",
        &["--data-only", "--table", "orders"],
        &conn,
    );
    restore_db(&ctl, "app.test", "app3", &conn);
    assert_eq!(
        db.sql(Some("app3"), "SELECT SUM(total) FROM orders").trim(),
        "30"
    );
}

fn snapshot_count(ctl: &Ctl) -> usize {
    ctl.json(&["snapshots"]).as_array().unwrap().len()
}

/// Runs a backup and, once its child `tool` runs, calls `interrupt` with the
/// tool's pid. The backup must fail with exit 1; returns its stderr.
fn interrupted_backup(ctl: &Ctl, a: &[&str], tool: &str, interrupt: impl FnOnce(u32)) -> String {
    let child = ctl
        .command(a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = eventually(&format!("{tool} to start"), Duration::from_secs(30), || {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &child.id().to_string(), tool])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
    })
    .unwrap();
    // Let it get into the data.
    std::thread::sleep(Duration::from_millis(150));
    interrupt(pid);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

/// A directory with a `mariadb-dump` that runs the real one but stops after
/// `bytes` bytes and exits 0: the restic #4251 failure mode.
fn truncating_dump_tool(dir: &std::path::Path, bytes: usize) -> String {
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v mariadb-dump"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let shim = dir.join("mariadb-dump");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n{} \"$@\" | head -c {bytes}\nexit 0\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// DB-1, restic #4251: a dump cut short (exit 0), a killed dump tool and a
/// killed server each fail the backup, commit no snapshot, and leave the
/// earlier snapshot restorable.
#[test]
fn failed_dumps_commit_nothing() {
    let mut db = MariaDb::start().unwrap();
    let conn = db.conn_args();
    load_mariadb_schema(&db, "shop");
    db.sql(
        Some("shop"),
        "CREATE TABLE filler (id INT PRIMARY KEY, v LONGTEXT)",
    );
    db.sql(
        Some("shop"),
        "INSERT INTO filler SELECT seq, REPEAT(SHA2(seq, 256), 200) FROM seq_1_to_30000",
    );
    let (dir, ctl) = repo();
    let base = [
        "backup-db",
        "--domain",
        "shop.test",
        "--engine",
        "mariadb",
        "--database",
        "shop",
    ];
    ctl.ok(&args(&base, &conn));
    assert_eq!(snapshot_count(&ctl), 1);

    // Cut short, exit status 0.
    let shim_dir = dir.path().join("shim");
    std::fs::create_dir(&shim_dir).unwrap();
    let path = truncating_dump_tool(&shim_dir, 300_000);
    let out = ctl.clone().with_env("PATH", &path).run(&args(&base, &conn));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"shop\"") && err.contains("ended early"),
        "{err}"
    );
    assert_eq!(snapshot_count(&ctl), 1);

    // The dump tool killed mid-dump.
    let err = interrupted_backup(&ctl, &args(&base, &conn), "mariadb-dump", |pid| {
        cairn_tests::unsafe_kill(pid, libc::SIGKILL)
    });
    assert!(
        err.contains("killed by a signal") || err.contains("ended early"),
        "{err}"
    );
    assert_eq!(snapshot_count(&ctl), 1);

    // The server killed mid-dump.
    let err = interrupted_backup(&ctl, &args(&base, &conn), "mariadb-dump", |_| db.kill());
    assert!(
        err.contains("dump of mariadb database \"shop\" failed"),
        "{err}"
    );
    assert_eq!(snapshot_count(&ctl), 1);

    // The earlier snapshot restores and checks out; the repository is clean.
    db.restart().unwrap();
    let out = ctl.ok(&args(
        &["restore-db", "latest", "--domain", "shop.test", "--test"],
        &conn,
    ));
    assert!(out.contains("passed"), "{out}");
    ctl.ok(&["check", "--read-data"]);
}

/// DB-1 on PostgreSQL: a killed pg_dump commits nothing.
#[test]
fn killed_pg_dump_commits_nothing() {
    let (pg, conn) = pg_with_shop();
    pg.sql("shop", "CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 200) AS v FROM generate_series(1, 40000) g");
    let (_d, ctl) = repo();
    let base = [
        "backup-db",
        "--domain",
        "shop.test",
        "--engine",
        "postgres",
        "--database",
        "shop",
    ];
    ctl.ok(&args(&base, &conn));
    let err = interrupted_backup(&ctl, &args(&base, &conn), "pg_dump", |pid| {
        cairn_tests::unsafe_kill(pid, libc::SIGKILL)
    });
    assert!(
        err.contains("dump of postgres database \"shop\" failed"),
        "{err}"
    );
    assert_eq!(snapshot_count(&ctl), 1);
    ctl.ok(&args(
        &["restore-db", "latest", "--domain", "shop.test", "--test"],
        &conn,
    ));
}

/// SEC: the database password reaches the dump tool through a 0600 file that
/// is gone afterwards; never argv, output, or the repository.
#[test]
fn database_password_stays_out_of_argv_and_output() {
    let db = MariaDb::start().unwrap();
    let pg = Postgres::start().unwrap();
    let secret = "S3cr3t-Pw\"with'quotes\\and:colon";
    db.sql(None, "CREATE DATABASE site");
    db.sql(
        Some("site"),
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)",
    );
    db.sql(
        None,
        &format!(
            "CREATE USER 'site'@'localhost' IDENTIFIED BY '{}'",
            secret.replace('\\', "\\\\").replace('\'', "\\'")
        ),
    );
    db.sql(None, "GRANT ALL ON site.* TO 'site'@'localhost'");
    // What an operator grants the backup login for test restores.
    db.sql(
        None,
        "GRANT ALL ON `cairn\\_verify\\_%`.* TO 'site'@'localhost'",
    );
    pg.sql(
        "postgres",
        &format!(
            "CREATE ROLE site LOGIN CREATEDB PASSWORD '{}'",
            secret.replace('\'', "''")
        ),
    );
    pg.sql("postgres", "CREATE DATABASE site OWNER site");

    let (dir, ctl) = repo();
    // Shims record each tool's argv, then run the real tool.
    let shim_dir = dir.path().join("shim");
    std::fs::create_dir(&shim_dir).unwrap();
    let log = dir.path().join("argv.log");
    for tool in ["mariadb-dump", "mariadb", "pg_dump", "pg_restore", "psql"] {
        let real = String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let shim = shim_dir.join(tool);
        std::fs::write(
            &shim,
            format!("#!/bin/sh\necho \"{tool} $*\" >> {}\nfor f in \"$@\"; do case \"$f\" in --defaults-file=*) stat -c '%a' \"${{f#--defaults-file=}}\" >> {};; esac; done\nexec {} \"$@\"\n", log.display(), log.display(), real.trim()),
        )
        .unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap());
    // Its own temp dir: other tests' processes (an agent streaming a binary
    // log holds its defaults file while it runs) share the machine's.
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ctl
        .with_env("TMPDIR", tmp.path().to_str().unwrap())
        .with_env("PATH", &path)
        .with_env("CAIRN_DB_PASSWORD", secret)
        .with_env("CAIRN_LOG", "debug");
    let my = [
        "--db-socket",
        db.socket.to_str().unwrap(),
        "--db-user",
        "site",
    ];
    let port = pg.port.to_string();
    let pgc = [
        "--db-host",
        "127.0.0.1",
        "--db-port",
        &port,
        "--db-user",
        "site",
    ];
    let mut outputs = Vec::new();
    for (engine, c) in [("mariadb", &my[..]), ("postgres", &pgc[..])] {
        let mut a = vec![
            "backup-db",
            "--domain",
            "site.test",
            "--engine",
            engine,
            "--database",
            "site",
        ];
        a.extend_from_slice(c);
        let out = ctl.run(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(out);
        let mut a = vec!["restore-db", "latest", "--domain", "site.test", "--test"];
        a.extend_from_slice(c);
        let out = ctl.run(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(out);
    }
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(argv.contains("mariadb-dump --defaults-file="), "{argv}");
    assert!(
        argv.lines().any(|l| l == "600"),
        "defaults file not 0600: {argv}"
    );
    assert!(argv.contains("pg_dump "), "{argv}");
    // Pieces of the secret no random temp path holds ("Pw" alone once
    // matched a temp dir's random name, /tmp/.tmpvyPwll).
    for needle in ["S3cr3t", "with'quotes", "and:colon"] {
        assert!(!argv.contains(needle), "password in argv: {argv}");
        for o in &outputs {
            assert!(!String::from_utf8_lossy(&o.stdout).contains(needle));
            assert!(!String::from_utf8_lossy(&o.stderr).contains(needle));
        }
    }
    // The defaults and password files are gone.
    for l in argv.lines().filter(|l| l.contains("--defaults-file=")) {
        let f = l
            .split("--defaults-file=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(!std::path::Path::new(f).exists(), "{f} left behind");
    }
    let tmp: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("cairn-db-"))
        .collect();
    assert!(
        tmp.is_empty(),
        "credential directories left in the temp dir: {tmp:?}"
    );
}

/// DB-1: SQLite through the backup API while another connection writes.
#[test]
fn sqlite_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.sqlite");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, body BLOB);
         CREATE INDEX posts_title ON posts(title);",
    )
    .unwrap();
    for i in 0..5000 {
        db.execute(
            "INSERT INTO posts (title, body) VALUES (?1, ?2)",
            rusqlite::params![format!("post {i} ✓"), vec![i as u8; 100 + i % 700]],
        )
        .unwrap();
    }
    let (_d, ctl) = repo();
    let p = path.to_str().unwrap();
    let snap = ctl.json(&[
        "backup-db",
        "--domain",
        "s.test",
        "--engine",
        "sqlite",
        "--database",
        p,
    ]);
    let posts = section(&snap, "posts");
    assert_eq!(posts["rows"], 5000);
    db.execute("DELETE FROM posts WHERE id > 10", []).unwrap();
    let target = dir.path().join("restored.sqlite");
    ctl.ok(&[
        "restore-db",
        "latest",
        "--domain",
        "s.test",
        "--database",
        target.to_str().unwrap(),
    ]);
    let r = rusqlite::Connection::open(&target).unwrap();
    let n: i64 = r
        .query_row("SELECT count(*) FROM posts", [], |x| x.get(0))
        .unwrap();
    assert_eq!(n, 5000);
    let body: Vec<u8> = r
        .query_row("SELECT body FROM posts WHERE id = 4000", [], |x| x.get(0))
        .unwrap();
    assert_eq!(body, vec![(3999 % 256) as u8; 100 + 3999 % 700]);
    ctl.ok(&["restore-db", "latest", "--domain", "s.test", "--test"]);
}

/// DB-5 and dedup-friendly dumps: a mysqldump file stored with `--from-file`
/// restores byte for byte, and the next day's dump (about 2% of rows changed
/// anywhere) adds well under half of what the first one stored.
#[test]
fn stored_dump_is_exact_and_the_next_day_dedups() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    cairn_tests::gen_fleet(&fleet, 2, 0.3);
    let dumps: Vec<std::path::PathBuf> = std::fs::read_dir(fleet.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let (_d, ctl) = repo();
    let store = |path: &std::path::Path| {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        ctl.json(&[
            "backup-db",
            "--domain",
            &name,
            "--engine",
            "mariadb",
            "--database",
            &name,
            "--from-file",
            path.to_str().unwrap(),
        ])
    };
    let day0: u64 = dumps
        .iter()
        .map(|p| store(p)["stats"]["stored_bytes"].as_u64().unwrap())
        .sum();
    cairn_tests::mutate_fleet(&fleet, 1);
    let day1: u64 = dumps
        .iter()
        .map(|p| store(p)["stats"]["stored_bytes"].as_u64().unwrap())
        .sum();
    eprintln!("dumps stored: day 0 {day0} B, day 1 added {day1} B");
    assert!(day1 * 2 < day0, "day 1 added {day1} of {day0} bytes");
    // The latest snapshot of each domain holds the day-1 dump, byte for byte.
    for p in &dumps {
        let name = p.file_stem().unwrap().to_str().unwrap();
        let target = dir.path().join("restored").join(name);
        let snap = ctl.json(&["snapshots", "--domain", name]);
        let id = snap.as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        ctl.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
        let restored = std::fs::read(target.join("db").join(format!("{name}.sql"))).unwrap();
        assert!(
            restored == std::fs::read(p).unwrap(),
            "{name}: restored dump differs"
        );
    }
}

/// STO-1 with databases: a dump stored in S3 (Garage) restores byte for byte
/// and reads back clean.
#[test]
fn dump_on_garage_restores() {
    let g = cairn_tests::Garage::start().expect("start garage");
    let ctl = g.apply_env(Ctl::new("s3://cairn/db-repo", "garage pass"));
    ctl.ok(&["init"]);
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("shop.sql");
    let mut sql = String::from("-- MySQL dump 10.13\n\n/*!40101 SET NAMES utf8mb4 */;\n\n");
    for t in ["a", "b"] {
        sql += &format!("--\n-- Table structure for table `{t}`\n--\n\nCREATE TABLE `{t}` (\n  `id` int NOT NULL\n);\n");
        sql += &format!("INSERT INTO `{t}` VALUES ");
        let rows: Vec<String> = (0..20_000).map(|i| format!("({i},'{t}{i:08}')")).collect();
        sql += &rows.join(",");
        sql += ";\n";
    }
    sql +=
        "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on 2026-11-22 10:00:00\n";
    std::fs::write(&dump, &sql).unwrap();
    let snap = ctl.json(&[
        "backup-db",
        "--domain",
        "shop.test",
        "--engine",
        "mariadb",
        "--database",
        "shop",
        "--from-file",
        dump.to_str().unwrap(),
    ]);
    let b = section(&snap, "b");
    assert_eq!(b["rows"], 20_000);
    let target = dir.path().join("restored");
    // `latest` means the latest files snapshot: there is none; the id works.
    let out = ctl.run(&[
        "restore",
        "latest",
        "--domain",
        "shop.test",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapshot matches"));

    let id = snap["id"].as_str().unwrap();
    ctl.ok(&["restore", id, "--target", target.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(target.join("db/shop.sql")).unwrap(),
        sql
    );
    ctl.ok(&["check", "--read-data"]);
}
