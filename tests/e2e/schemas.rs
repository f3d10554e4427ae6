//! Schemas as real applications make them, not as the generator does (DB-1,
//! DB-5, RST-3): quoted and non-ASCII identifiers, composite and non-integer
//! keys, generated and dropped columns, partitions, enums, arrays, spatial
//! and bit values, every byte value, a row larger than a chunk group, large
//! objects and sequences. Each database is backed up, restored into a new
//! one, and compared table by table; one awkward table is restored alone.

use cairn_tests::dbserver::{MariaDb, Postgres};
use cairn_tests::Ctl;

fn repo() -> (tempfile::TempDir, Ctl) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Ctl::new(dir.path().join("repo").to_str().unwrap(), "schema-pass");
    ctl.ok(&["init"]);
    (dir, ctl)
}

fn with_conn<'a>(base: &[&'a str], conn: &'a [String]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend(conn.iter().map(String::as_str));
    v
}

/// `backup-db` of database `app` as domain `app.test`; returns the manifest
/// section of `table`.
fn backup_app(ctl: &Ctl, engine: &str, conn: &[String], table: &str) -> serde_json::Value {
    let snap = ctl.json(&with_conn(
        &[
            "backup-db",
            "--domain",
            "app.test",
            "--engine",
            engine,
            "--database",
            "app",
        ],
        conn,
    ));
    let sections = snap["manifest"]["sections"].as_array().unwrap();
    sections
        .iter()
        .find(|s| s["name"] == table)
        .unwrap_or_else(|| panic!("no section for {table:?}: {sections:?}"))
        .clone()
}

/// `restore-db latest` of `app.test` into `database`, or only `table` of it.
fn restore_app<'a>(database: &'a str, table: Option<&'a str>) -> Vec<&'a str> {
    let mut a = vec![
        "restore-db",
        "latest",
        "--domain",
        "app.test",
        "--database",
        database,
    ];
    a.extend(table.map(|t| ["--table", t]).into_iter().flatten());
    a
}

const MARIADB_AWKWARD: &str = r#"
SET NAMES utf8mb4;
CREATE TABLE `we``ird tàble;` (
  `k ey` VARCHAR(60) NOT NULL, n INT NOT NULL, payload JSON, flags BIT(10),
  e ENUM('a','b','c'), s SET('x','y','z'), yr YEAR, t TIME(3), d DECIMAL(65,30),
  f FLOAT, dbl DOUBLE, g GEOMETRY, bin VARBINARY(255),
  label VARCHAR(80) AS (CONCAT(`k ey`, '#', n)) VIRTUAL,
  klen INT AS (CHAR_LENGTH(`k ey`)) PERSISTENT,
  PRIMARY KEY (`k ey`, n), FULLTEXT KEY ft (`k ey`)
) ENGINE=InnoDB;
CREATE TABLE all_bytes (id INT PRIMARY KEY, b LONGBLOB);
CREATE TABLE dups (a INT, b TEXT);
CREATE TABLE parent (id INT PRIMARY KEY, child_id INT NULL);
CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL, FOREIGN KEY (parent_id) REFERENCES parent(id));
ALTER TABLE parent ADD FOREIGN KEY (child_id) REFERENCES child(id);
CREATE TABLE `façade launches` (id BIGINT UNSIGNED PRIMARY KEY, at DATETIME(6), note MEDIUMTEXT) DEFAULT CHARSET=utf8mb4;
CREATE SEQUENCE invoice_no START WITH 1000 INCREMENT BY 1 NOCACHE;
CREATE VIEW `v;iew` AS SELECT `k ey`, n FROM `we``ird tàble;` WHERE n > 0;
DELIMITER ;;
CREATE TRIGGER launches_bi BEFORE INSERT ON `façade launches` FOR EACH ROW
BEGIN
  -- a comment with a ; and a quote ' in it
  IF NEW.note IS NULL THEN SET NEW.note = 'END; -- not the end'; END IF;
END;;
DELIMITER ;
INSERT INTO `we``ird tàble;` (`k ey`, n, payload, flags, e, s, yr, t, d, f, dbl, g, bin) VALUES
  ('tab\there', -2147483648, '{"a": [1, "two", null, {"b": "\\u00e9"}]}', b'1010101010', 'a', 'x,z', 1901, '-838:59:59.000', '-12345678901234567890.123456789012345678901234567890', 1.5e-38, -0, ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), X'00'),
  ('new\nline', 0, NULL, b'0', NULL, '', 2155, '00:00:00.001', 0, NULL, 1.7976931348623157e308, ST_GeomFromText('POINT(1 2)'), ''),
  ('back\\slash', 7, '[]', NULL, 'c', 'x,y,z', NULL, NULL, NULL, 3.25, NULL, NULL, NULL),
  ('quote''s),(; /*!50001 x */', 2147483647, '"s"', b'1111111111', 'b', NULL, 2000, '838:59:59.999', 1, -1, 2, NULL, X'5C27220A0D1A00'),
  ('Zoë 🚀 Ünïcødé', 1, '{}', b'1', 'a', 'y', 1999, '12:00:00', 0.5, 0, 0, NULL, X'F09F9A80'),
  ('', 3, 'null', b'0', 'a', 'x', 2024, '01:02:03', 2, 2, 2, NULL, X'');
INSERT INTO all_bytes VALUES (1, UNHEX(CONCAT(
  '000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F',
  '202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F',
  '404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F',
  '606162636465666768696A6B6C6D6E6F707172737475767778797A7B7C7D7E7F',
  '808182838485868788898A8B8C8D8E8F909192939495969798999A9B9C9D9E9F',
  'A0A1A2A3A4A5A6A7A8A9AAABACADAEAFB0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF',
  'C0C1C2C3C4C5C6C7C8C9CACBCCCDCECFD0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF',
  'E0E1E2E3E4E5E6E7E8E9EAEBECEDEEEFF0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF')));
INSERT INTO dups VALUES (1, 'same'), (1, 'same'), (NULL, NULL), (NULL, NULL), (2, '');
INSERT INTO parent VALUES (1, NULL), (2, NULL);
INSERT INTO child VALUES (10, 1), (20, 2);
UPDATE parent SET child_id = 20 WHERE id = 1;
INSERT INTO `façade launches` VALUES (18446744073709551615, '2038-01-19 03:14:08.999999', 'max'), (0, '1000-01-01 00:00:00', NULL);
SELECT NEXTVAL(invoice_no), NEXTVAL(invoice_no), NEXTVAL(invoice_no);
"#;

/// A MariaDB database of awkward but ordinary things round-trips: every base
/// table's CHECKSUM TABLE, the view, trigger and sequence, and a single-table
/// restore of the table with the worst name.
#[test]
fn mariadb_awkward_schema_round_trips() {
    let db = MariaDb::start().unwrap();
    db.sql(None, "CREATE DATABASE app CHARACTER SET utf8mb4");
    db.sql(Some("app"), MARIADB_AWKWARD);
    // Many rows with text keys (sorted by collation, not bytes), and a row of
    // 10 MiB: larger than a chunk group and than a sorting batch's share.
    db.sql(
        Some("app"),
        "INSERT INTO `we``ird tàble;` (`k ey`, n, payload, bin) \
         SELECT CONCAT('k', seq % 97, CHAR(9), REPEAT('é', seq % 5)), seq, \
                JSON_OBJECT('seq', seq, 'txt', REPEAT('\\\\\"', seq % 7)), RANDOM_BYTES(1 + seq % 200) \
         FROM seq_1_to_30000",
    );
    db.sql(
        Some("app"),
        "INSERT INTO all_bytes SELECT 2, REPEAT(SHA2('big', 512), 81920)",
    );
    let conn = db.conn_args();
    let (_d, ctl) = repo();
    let weird = backup_app(&ctl, "mariadb", &conn, "we`ird tàble;");
    assert_eq!(weird["rows"], 30_006);

    ctl.ok(&with_conn(&restore_app("copy", None), &conn));
    let (a, b) = (db.checksums("app"), db.checksums("copy"));
    assert_eq!(a.len(), 6, "{a:?}");
    assert!(a.iter().all(|(_, c)| !c.is_empty()), "{a:?}");
    assert_eq!(a, b, "CHECKSUM TABLE differs after the round trip");
    // Generated columns were computed again, not lost.
    let label = db.sql(
        Some("copy"),
        "SELECT label, klen FROM `we``ird tàble;` WHERE n = 7 AND `k ey` LIKE 'back%'",
    );
    assert_eq!(label.trim(), "back\\\\slash#7\t10", "{label}");
    // The trigger came back with its body whole.
    db.sql(
        Some("copy"),
        "INSERT INTO `façade launches` (id) VALUES (5)",
    );
    let note = db.sql(
        Some("copy"),
        "SELECT note FROM `façade launches` WHERE id = 5",
    );
    assert_eq!(note.trim(), "END; -- not the end");
    // The sequence continues where it stood.
    let next = db.sql(Some("copy"), "SELECT NEXTVAL(invoice_no)");
    assert_eq!(next.trim(), "1003");
    let view = db.sql(Some("copy"), "SELECT COUNT(*) FROM `v;iew`");
    assert_eq!(view.trim(), "30004");

    // The worst-named table alone.
    ctl.ok(&with_conn(
        &restore_app("one", Some("we`ird tàble;")),
        &conn,
    ));
    let one = db.checksums("one");
    assert_eq!(
        one,
        a.iter()
            .filter(|(t, _)| t == "we`ird tàble;")
            .cloned()
            .collect::<Vec<_>>()
    );
}

const PG_AWKWARD: &str = r#"
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE SCHEMA "Weird Schema";
CREATE TABLE "Weird Schema"."Order Items" (
  "Item Key" text, n int, qty posint, mood mood, tags text[], attrs jsonb, ip inet,
  span interval, flags bit varying(16), doc tsvector, x xml, ts timestamptz, r int4range,
  f float8, email citext DEFAULT 'A@Example.test', PRIMARY KEY ("Item Key", n));
CREATE TABLE ledger (note text, amount numeric(30,10), id bigint PRIMARY KEY,
  doubled numeric GENERATED ALWAYS AS (amount * 2) STORED);
CREATE TABLE uuids (id uuid PRIMARY KEY, v text);
CREATE TABLE dec_keys (id numeric PRIMARY KEY, v text);
CREATE TABLE dropped (id int PRIMARY KEY, gone text, kept text);
ALTER TABLE dropped DROP COLUMN gone;
CREATE TABLE dups (a int, b text);
CREATE TABLE measurements (id int, at date, v float8, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE UNLOGGED TABLE sessions (id text PRIMARY KEY, data bytea);
CREATE SEQUENCE invoice_no START 1000;
SELECT nextval('invoice_no'), nextval('invoice_no'), nextval('invoice_no');
COMMENT ON TABLE ledger IS 'money; with "quotes" and a \ backslash';
INSERT INTO "Weird Schema"."Order Items" VALUES
  (E'tab\there', -2147483648, 1, 'sad', ARRAY['a,b', 'c"d', NULL, E'e\\f'], '{"a": [1, "two", null]}', '10.0.0.1/8',
   '-1 day 02:03:04.5', B'1010', 'fat & rat', '<a b="c">d</a>', '2024-02-29 23:59:59.999999+05', '[1,10)', 'NaN'),
  (E'new\nline', 0, 2, 'happy', '{}', 'null', '::1', '0', B'', '', NULL, '-infinity', 'empty', 'Infinity'),
  (E'back\\slash', 7, 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'infinity', NULL, '-0'),
  ('Zoë 🚀 Ünïcødé', 1, 4, 'ok', ARRAY['🚀'], '{"é": "\u00e9"}', '192.168.1.1', '1 mon', B'1', 'a', '<x/>', now(), '(,)', -1.5e-300),
  ('', 3, 5, 'ok', ARRAY[''], '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0);
INSERT INTO "Weird Schema"."Order Items" ("Item Key", n, qty, mood, attrs)
  SELECT 'k' || (g % 97) || E'\t' || repeat('é', g % 5), g, 1 + g % 9, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood,
         jsonb_build_object('g', g, 'txt', repeat(E'\\"', g % 7))
  FROM generate_series(1, 30000) g;
INSERT INTO ledger (note, amount, id) VALUES ('min', -1.5, -9223372036854775808), ('max', 1e19, 9223372036854775807),
  ('zero', 0, 0), (NULL, NULL, -1), ('ten', 10, 10), ('nine', 9, 9);
INSERT INTO uuids SELECT md5(g::text)::uuid, g::text FROM generate_series(1, 500) g;
INSERT INTO dec_keys VALUES (1.5, 'a'), (-2, 'b'), (10, 'c'), (1.50001, 'd'), ('NaN', 'e');
INSERT INTO dropped VALUES (1, 'one'), (2, NULL);
INSERT INTO dups VALUES (1, 'same'), (1, 'same'), (NULL, NULL), (NULL, NULL), (2, '');
INSERT INTO measurements SELECT g, date '2024-01-01' + g, g / 3.0 FROM generate_series(1, 600) g;
INSERT INTO sessions VALUES ('small', '\x00ff'), ('big', decode(repeat(md5('x'), 655360), 'hex'));
SELECT lo_from_bytea(424242, decode(repeat('00ff10', 100000), 'hex'));
CREATE MATERIALIZED VIEW mood_counts AS SELECT mood, count(*) AS n FROM "Weird Schema"."Order Items" GROUP BY mood;
"#;

/// A PostgreSQL database of awkward but ordinary things round-trips: every
/// table's ordered row hash, generated columns, the materialized view, the
/// large object and the sequence, and a single-table restore of the table
/// with the worst name.
#[test]
fn postgres_awkward_schema_round_trips() {
    let pg = Postgres::start().unwrap();
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql("app", PG_AWKWARD);
    let conn = pg.conn_args();
    let (_d, ctl) = repo();
    let weird = backup_app(&ctl, "postgres", &conn, "Order Items");
    assert_eq!(weird["schema"], "Weird Schema");
    assert_eq!(weird["rows"], 30_005);

    ctl.ok(&with_conn(&restore_app("copy", None), &conn));
    let (a, b) = (pg.row_hashes("app"), pg.row_hashes("copy"));
    assert_eq!(a.len(), 10, "{a:?}");
    assert_eq!(a, b, "row hashes differ after the round trip");
    let one = |db: &str, sql: &str| pg.sql(db, sql).trim().to_string();
    assert_eq!(
        one("copy", "SELECT doubled FROM ledger WHERE id = 10"),
        "20.0000000000"
    );
    assert_eq!(
        one("copy", "SELECT md5(lo_get(424242))"),
        one("app", "SELECT md5(lo_get(424242))")
    );
    assert_eq!(one("copy", "SELECT sum(n) FROM mood_counts"), "30005");
    assert_eq!(one("copy", "SELECT nextval('invoice_no')"), "1003");
    assert_eq!(
        one("copy", "SELECT obj_description('ledger'::regclass)"),
        "money; with \"quotes\" and a \\ backslash"
    );

    ctl.ok(&with_conn(&restore_app("one", Some("Order Items")), &conn));
    let b = pg.row_hashes("one");
    assert_eq!(
        b,
        a.iter()
            .filter(|(t, _)| t == "Weird Schema.Order Items")
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        one(
            "one",
            "SELECT count(*) FROM pg_type WHERE typname IN ('mood', 'posint', 'citext')"
        ),
        "3"
    );

    // Into a database that has the table and a view on it: PostgreSQL will
    // not drop the table, and the refusal names the view and changes nothing
    // (not even the indexes dropped before the table).
    pg.sql(
        "copy",
        r#"DELETE FROM "Weird Schema"."Order Items" WHERE n > 100"#,
    );
    let trimmed = pg.row_hashes("copy");
    let restore_into_copy = restore_app("copy", Some("Order Items"));
    let out = ctl.run(&with_conn(&restore_into_copy, &conn));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mood_counts depends on"), "{err}");
    assert_eq!(pg.row_hashes("copy"), trimmed);
    let indexes = r#"SELECT count(*) FROM pg_indexes WHERE tablename = 'Order Items'"#;
    assert_eq!(one("copy", indexes), "1");
    // Without the view: nothing it has (schema, types) is created twice, and
    // the table is replaced.
    pg.sql("copy", "DROP MATERIALIZED VIEW mood_counts");
    ctl.ok(&with_conn(&restore_into_copy, &conn));
    assert_eq!(pg.row_hashes("copy"), a);
    assert_eq!(one("copy", indexes), "1");

    // The whole database over one that has it: `pg_restore --clean` cannot
    // drop a partition's inherited key, and its refusal changes nothing.
    pg.sql("copy", "DELETE FROM ledger WHERE id > 0");
    let before = pg.row_hashes("copy");
    let out = ctl.run(&with_conn(&restore_app("copy", None), &conn));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("inherited constraint"), "{err}");
    assert_eq!(pg.row_hashes("copy"), before);
    assert_eq!(one("copy", indexes), "1");
}
