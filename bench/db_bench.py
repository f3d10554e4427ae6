#!/usr/bin/env python3
"""Database benchmark (issue: databases). Prints figures; never fails on a time.

1. Dedup of dumps: gen_fleet's mysqldump files are stored by Cairn
   (`backup-db --from-file`, the same parser and chunker as live dumps) and by
   restic; after `mutate --day 1` (about 2% of rows changed) both store the new
   dumps again. Bytes added = repository growth. Run for --db-churn uniform
   (changed rows anywhere: the worst case) and hot (80% among the newest rows).
2. A narrow-row shop (bench/shop.py: ~130k rentals of ~88 bytes, payments,
   customers, films, a trigger and a view): one dump a day for --days days
   (2% of rentals updated anywhere, 5% of customers touched, 1,000 new
   rentals and payments), stored by Cairn, by restic and as daily `zstd -3`
   files: first copy, days 1-7, mean daily growth and the total.
3. Throughput: the largest dump is loaded into a throwaway MariaDB server, then
   `mariadb-dump … | zstd -3 > /dev/null` is timed against
   `cairnctl repo backup-db` of the same database (first and second run).

4. One PostgreSQL table larger than Cairn sorts in memory (~175 MB of SQL):
   2% of its rows updated and 1,000 added a day, for up to 5 days.

`--only fleet|shop|pgshop|pgbig|throughput` runs one part.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import GEN, arg_parser, du


def run(cmd, env=None, **kw):
    kw.setdefault("stderr", subprocess.DEVNULL)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, **kw)


def gen_fleet_script():
    if not os.path.exists(GEN):
        sys.exit(f"gen_fleet.py not found at {GEN}; set CAIRN_GEN_FLEET")
    return GEN


def dedup(args, work, churn):
    fleet = os.path.join(work, f"fleet-{churn}")
    run([sys.executable, gen_fleet_script(), "gen", "--out", fleet, "--sites", str(args.sites),
         "--scale", str(args.scale), "--db-churn", churn])
    env = dict(os.environ, CAIRN_PASSPHRASE="bench", RESTIC_PASSWORD="bench",
               CAIRN_REPO=os.path.join(work, f"cairn-{churn}"),
               RESTIC_REPOSITORY=os.path.join(work, f"restic-{churn}"))
    run([args.cairnctl, "repo", "init"], env)
    run(["restic", "init"], env)
    db = os.path.join(fleet, "db")

    def store():
        for f in sorted(os.listdir(db)):
            name = f[: -len(".sql")]
            run([args.cairnctl, "repo", "backup-db", "--domain", name, "--engine", "mariadb",
                 "--database", name, "--from-file", os.path.join(db, f)], env)
        run(["restic", "backup", "--compression", "auto", db], env)

    def zstd_size():
        return sum(len(subprocess.run(["zstd", "-3", "-c", os.path.join(db, f)], check=True,
                                      capture_output=True).stdout) for f in os.listdir(db))

    store()
    day0 = {"dumps": du(db), "zstd": zstd_size(), "cairn": du(env["CAIRN_REPO"]),
            "restic": du(env["RESTIC_REPOSITORY"])}
    run([sys.executable, gen_fleet_script(), "mutate", "--out", fleet, "--day", "1"])
    store()
    day1 = {"dumps": du(db), "zstd": zstd_size(), "cairn": du(env["CAIRN_REPO"]),
            "restic": du(env["RESTIC_REPOSITORY"])}
    shutil.rmtree(fleet)
    return day0, day1


def empty_repos(args, work, name):
    """An empty Cairn and restic repository (their environment) and where
    the day's dump file goes."""
    env = dict(os.environ, CAIRN_PASSPHRASE="bench", RESTIC_PASSWORD="bench",
               CAIRN_REPO=os.path.join(work, f"cairn-{name}"),
               RESTIC_REPOSITORY=os.path.join(work, f"restic-{name}"))
    run([args.cairnctl, "repo", "init"], env)
    run(["restic", "init"], env)
    dump = os.path.join(work, name, "dump.sql")
    os.makedirs(os.path.dirname(dump))
    return env, dump


def store_day(env, dump, days):
    """The day's dump file into restic and as one more zstd -3 file; appends
    every repository's size after the day to `days`."""
    run(["restic", "backup", "--compression", "auto", dump], env)
    zstd = len(subprocess.run(["zstd", "-3", "-c", dump], check=True, capture_output=True).stdout)
    days.append({"dump": os.path.getsize(dump), "zstd": zstd + (days[-1]["zstd"] if days else 0),
                 "cairn": du(env["CAIRN_REPO"]), "restic": du(env["RESTIC_REPOSITORY"])})


def shop_workload(args, work):
    """The narrow-row shop (bench/shop.py): one dump a day for args.days days,
    stored by Cairn (`backup-db --from-file`), by restic, and as daily
    `zstd -3` files. Returns each day's repository sizes."""
    import shop
    env, dump = empty_repos(args, work, "shop")
    s = shop.Shop()
    days = []
    for day in range(args.days):
        if day:
            s.mutate()
        s.write(dump)
        run([args.cairnctl, "repo", "backup-db", "--domain", "shop.example", "--engine", "mariadb",
             "--database", "shop", "--from-file", dump], env)
        store_day(env, dump, days)
    return days, restore_times(args, env, work, dump)


def restore_times(args, env, work, dump):
    """Restores the newest shop dump (its list edited from earlier days', its
    chunks in groups of every day) into a live MariaDB: whole, and its
    largest table alone, against feeding the same dump from a `zstd -3` file
    to the client. Medians of args.runs."""
    snap = json.loads(subprocess.run([args.cairnctl, "repo", "snapshots", "--json"], env=env, check=True,
                                     capture_output=True).stdout)[-1]["id"]
    packed = dump + ".zst"
    run(["zstd", "-3", "-q", "-f", dump, "-o", packed])
    srv = MariaDb(os.path.join(work, "restore-srv"))
    conn = ["--db-socket", srv.sock, "--db-user", "root"]
    times = {"zstd_client_s": [], "restore_db_s": [], "restore_table_s": []}

    def timed(key, cmd, **kw):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, **kw)
        times[key].append(time.perf_counter() - t)
    try:
        for i in range(args.runs):
            run(srv.client(["-e", f"CREATE DATABASE plain{i}"]))
            timed("zstd_client_s", f"zstd -dc {packed} | {' '.join(srv.client([f'plain{i}']))}", shell=True)
            timed("restore_db_s", [args.cairnctl, "repo", "restore-db", snap, "--database", f"whole{i}"] + conn,
                  env=env)
            timed("restore_table_s", [args.cairnctl, "repo", "restore-db", snap, "--table", "rental",
                                      "--database", f"table{i}"] + conn, env=env)
    finally:
        srv.stop()
    return times


class Postgres:
    """A throwaway PostgreSQL server on loopback (as the postgres user when root)."""

    def __init__(self, work):
        import glob
        import socket
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        # Its own temp dir: the postgres user cannot enter the 0700 work dir.
        self.dir = tempfile.mkdtemp(prefix="cairn-bench-pg-")
        self.as_pg = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        run(self.as_pg + [f"{self.bin}/initdb", "-U", "postgres", "-A", "trust", "-E", "UTF8",
                          "--locale=C.UTF-8", "-D", f"{self.dir}/data"])
        self.proc = subprocess.Popen(
            self.as_pg + [f"{self.bin}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port),
                          "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "pg.log"), "w"))
        for _ in range(600):
            if subprocess.run(self.psql(["-c", "SELECT 1"]), capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        sys.exit("postgres did not start")

    def psql(self, extra, db="postgres"):
        return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres", db] + extra

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir)


def postgres_and_repos(args, work, name):
    """A PostgreSQL server, an empty Cairn and restic repository, and where
    the day's plain dump goes."""
    srv = Postgres(work)
    try:
        env, dump = empty_repos(args, work, name)
    except BaseException:
        srv.stop()
        raise
    return srv, env, dump


def shop_postgres(args, work):
    """The shop on a live PostgreSQL server: loaded once, then each day's
    changes applied as SQL (updated rows move in the heap, as they do on a
    real server). Cairn stores `backup-db` (pg_dump -Fc -Z0); restic and
    zstd -3 store the day's plain `pg_dump` file."""
    import shop
    srv, env, dump = postgres_and_repos(args, work, "pgshop")
    days = []
    try:
        s = shop.Shop()
        load = os.path.join(work, "pgshop-load.sql")
        s.write_pg(load)
        run(srv.psql(["-c", "CREATE DATABASE shop"]))
        run(srv.psql(["-f", load], db="shop"))
        os.remove(load)
        for day in range(args.days):
            if day:
                subprocess.run(srv.psql([], db="shop"), input=s.mutate().encode(), check=True,
                               stdout=subprocess.DEVNULL)
            with open(dump, "wb") as f:
                subprocess.run(["pg_dump", "-h", "127.0.0.1", "-p", str(srv.port), "-U", "postgres", "shop"],
                               stdout=f, check=True)
            run([args.cairnctl, "repo", "backup-db", "--domain", "shop.example", "--engine", "postgres",
                 "--database", "shop", "--db-host", "127.0.0.1", "--db-port", str(srv.port),
                 "--db-user", "postgres"], env)
            store_day(env, dump, days)
    finally:
        srv.stop()
    return days


def shop_mariadb_live(args, work):
    """The shop on a live MariaDB server, as a user would back it up: loaded
    once from day 0's dump, then each day's changes applied as SQL. Cairn runs
    `backup-db` against the server (its own mariadb-dump); restic and zstd -3
    store the day's plain `mariadb-dump` file."""
    import re
    import shop
    env, dump = empty_repos(args, work, "liveshop")
    srv = MariaDb(work, "mariadb-liveshop")
    days = []
    try:
        s = shop.Shop()
        s.write(dump)
        run(srv.client(["-e", "CREATE DATABASE shop"]))
        with open(dump, "rb") as f:
            run(srv.client(["shop"]), stdin=f)
        conn = ["--db-socket", srv.sock, "--db-user", "root"]
        # The shop's trigger sets a rental's date to NOW(): each insert runs
        # at its own generated time, or a day's 1,000 rentals would share one
        # second (and now and then collide on the unique key).
        at = re.compile(r"^INSERT INTO rental VALUES \(\d+,('[^']*')")
        for day in range(args.days):
            if day:
                sql = "\n".join(f"SET TIMESTAMP = UNIX_TIMESTAMP({m.group(1)}); {line}"
                                if (m := at.match(line)) else line
                                for line in s.mutate().splitlines())
                subprocess.run(srv.client(["shop"]), input=sql.encode(), check=True)
            with open(dump, "wb") as f:
                subprocess.run(["mariadb-dump", "--no-defaults", "-uroot", f"--socket={srv.sock}",
                                "--single-transaction", "--quick", "--routines", "--triggers", "--events",
                                "shop"], stdout=f, check=True)
            run([args.cairnctl, "repo", "backup-db", "--domain", "shop.example", "--engine", "mariadb",
                 "--database", "shop"] + conn, env)
            store_day(env, dump, days)
    finally:
        srv.stop()
    return days


def big_postgres_table(args, work, rows=1_600_000):
    """One PostgreSQL table several times larger than what Cairn sorts in
    memory (64 MiB of rows): ~175 MB of COPY text. Each day updates 2% of
    its rows, spread over the table, and appends 1,000. Cairn stores
    `backup-db` (rows in key order through sorted runs compressed in
    memory); restic stores the day's plain `pg_dump` file."""
    srv, env, dump = postgres_and_repos(args, work, "pgbig")
    days = []
    try:
        run(srv.psql(["-c", "CREATE DATABASE big"]))
        run(srv.psql(["-c", f"""
            CREATE TABLE ledger (id bigserial PRIMARY KEY, account int NOT NULL,
                amount numeric(10,2) NOT NULL, note text NOT NULL, booked timestamptz NOT NULL);
            INSERT INTO ledger (account, amount, note, booked)
                SELECT i % 9973, (i % 100000) / 100.0, 'order ' || md5(i::text) || ' settled',
                       timestamptz '2026-01-01' + i * interval '7 seconds'
                FROM generate_series(1, {rows}) i;"""], db="big"))
        for day in range(min(args.days, args.big_days)):
            if day:
                run(srv.psql(["-c", f"""
                    UPDATE ledger SET amount = amount + 1, note = note || '.'
                        WHERE (id * 7919 + {day} * 104729) % 50 = 0;
                    INSERT INTO ledger (account, amount, note, booked)
                        SELECT i % 9973, 1, 'order ' || md5((i + {day})::text) || ' new', now()
                        FROM generate_series(1, 1000) i;"""], db="big"))
            with open(dump, "wb") as f:
                subprocess.run(["pg_dump", "-h", "127.0.0.1", "-p", str(srv.port), "-U", "postgres", "big"],
                               stdout=f, check=True)
            t = time.monotonic()
            out = subprocess.run(["/usr/bin/time", "-f", "%M", args.cairnctl, "repo", "backup-db",
                                  "--domain", "big.example", "--engine", "postgres", "--database", "big",
                                  "--db-host", "127.0.0.1", "--db-port", str(srv.port), "--db-user", "postgres"],
                                 env=env, check=True, capture_output=True, text=True)
            cairn_s = time.monotonic() - t
            rss_mb = int(out.stderr.strip().splitlines()[-1]) / 1024
            run(["restic", "backup", "--compression", "auto", dump], env)
            days.append({"dump": os.path.getsize(dump), "cairn_s": cairn_s, "cairn_rss_mb": rss_mb,
                         "cairn": du(env["CAIRN_REPO"]), "restic": du(env["RESTIC_REPOSITORY"])})
    finally:
        srv.stop()
    return days


def print_big(days):
    mb = 1e6
    print(f"one PostgreSQL table of {days[0]['dump'] / mb:.0f} MB of SQL, 2% of rows updated and 1,000 added a day")
    print(f"{'':22} {'cairn MB':>9} {'restic MB':>10} {'cairn/restic':>13} {'backup-db s':>12} {'peak RSS MB':>12}")
    print(f"{'first copy':22} {days[0]['cairn'] / mb:9.2f} {days[0]['restic'] / mb:10.2f}"
          f" {days[0]['cairn'] / days[0]['restic']:13.3f} {days[0]['cairn_s']:12.1f} {days[0]['cairn_rss_mb']:12.0f}")
    for i in range(1, len(days)):
        a, b = days[i - 1], days[i]
        c, r = b["cairn"] - a["cairn"], b["restic"] - a["restic"]
        print(f"{f'day {i} growth':22} {c / mb:9.2f} {r / mb:10.2f} {c / r:13.3f} {b['cairn_s']:12.1f} {b['cairn_rss_mb']:12.0f}")


def print_shop(days, engine="MariaDB, mariadb-dump format"):
    mb = 1e6
    print(f"narrow-row shop (bench/shop.py), {engine}: {days[0]['dump'] / mb:.1f} MB of SQL, 2% of rentals updated a day")
    print(f"{'':22} {'cairn MB':>9} {'restic MB':>10} {'zstd files MB':>14} {'cairn/restic':>13} {'cairn/zstd':>11}")

    def line(name, c, r, z):
        print(f"{name:22} {c / mb:9.2f} {r / mb:10.2f} {z / mb:14.2f} {c / r:13.3f} {c / z:11.3f}")

    d0 = days[0]
    line("first copy", d0["cairn"], d0["restic"], d0["zstd"])
    for i in range(1, min(8, len(days))):
        a, b = days[i - 1], days[i]
        line(f"day {i} growth", b["cairn"] - a["cairn"], b["restic"] - a["restic"], b["zstd"] - a["zstd"])
    last = days[-1]
    growth = lambda k: (last[k] - d0[k]) / max(1, len(days) - 1)
    line("mean daily growth", growth("cairn"), growth("restic"), growth("zstd"))
    line(f"{len(days)}-day total", last["cairn"], last["restic"], last["zstd"])


class MariaDb:
    def __init__(self, work, name="mariadb"):
        self.dir = os.path.join(work, name)
        self.sock = os.path.join(self.dir, "sock")
        os.makedirs(self.dir)
        user = ["--user=root"] if os.geteuid() == 0 else []
        run(["mariadb-install-db", "--no-defaults", f"--datadir={self.dir}/data",
             "--auth-root-authentication-method=normal", "--skip-test-db"] + user)
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.dir}/data", f"--socket={self.sock}",
             "--skip-networking", "--innodb-buffer-pool-size=512M", "--skip-log-bin",
             f"--pid-file={self.dir}/pid"] + user,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        for _ in range(600):
            if subprocess.run(self.client(["-e", "SELECT 1"]), capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        sys.exit("mariadb did not start")

    def client(self, extra):
        return ["mariadb", "--no-defaults", "-uroot", f"--socket={self.sock}"] + extra

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def throughput(args, work):
    fleet = os.path.join(work, "fleet-tp")
    run([sys.executable, gen_fleet_script(), "gen", "--out", fleet, "--sites", str(args.sites),
         "--scale", str(args.scale)])
    db = os.path.join(fleet, "db")
    biggest = max(os.listdir(db), key=lambda f: os.path.getsize(os.path.join(db, f)))
    srv = MariaDb(work)
    try:
        run(srv.client(["-e", "CREATE DATABASE site"]))
        with open(os.path.join(db, biggest), "rb") as f:
            run(srv.client(["site"]), stdin=f)
        conn = ["--db-socket", srv.sock, "--db-user", "root"]
        dump = ["mariadb-dump", "--no-defaults", "-uroot", f"--socket={srv.sock}", "--single-transaction",
                "--quick", "--routines", "--triggers", "--events", "site"]
        size = len(subprocess.run(dump, check=True, capture_output=True).stdout)
        t_zstd, t_first, t_second, rss = [], [], [], []
        for i in range(args.runs):
            subprocess.run(["sync"])
            t = time.perf_counter()
            subprocess.run(" ".join(dump) + " | zstd -3 -q > /dev/null", shell=True, check=True)
            t_zstd.append(time.perf_counter() - t)
            env = dict(os.environ, CAIRN_PASSPHRASE="bench", CAIRN_REPO=os.path.join(work, f"tp-{i}"))
            run([args.cairnctl, "repo", "init"], env)
            for times in (t_first, t_second):
                subprocess.run(["sync"])
                t = time.perf_counter()
                out = subprocess.run(["/usr/bin/time", "-f", "%M", args.cairnctl, "repo", "backup-db",
                                      "--domain", "site", "--engine", "mariadb", "--database", "site"] + conn,
                                     env=env, check=True, capture_output=True, text=True)
                times.append(time.perf_counter() - t)
                rss.append(int(out.stderr.strip().splitlines()[-1]) / 1024)
    finally:
        srv.stop()
    shutil.rmtree(fleet)
    return {"dump_bytes": size, "zstd_s": t_zstd, "cairn_first_s": t_first,
            "cairn_second_s": t_second, "cairn_rss_mb": rss}


def main():
    ap = arg_parser()
    ap.add_argument("--days", type=int, default=int(os.environ.get("BENCH_DAYS", 30)),
                    help="days of the shop workload (first copy included)")
    ap.add_argument("--big-days", type=int, default=5,
                    help="days of the large PostgreSQL table (first copy included)")
    ap.add_argument("--only", choices=["fleet", "shop", "myshop", "pgshop", "pgbig", "throughput"], help="run one part")
    args = ap.parse_args()
    args.cairnctl = os.path.abspath(args.cairnctl)
    work = args.work or tempfile.mkdtemp(prefix="cairn-dbbench-")
    os.makedirs(work, exist_ok=True)
    raw = {"sites": args.sites, "scale": args.scale}
    mb = 1e6
    print(f"fleet: {args.sites} sites, scale {args.scale}; restic {subprocess.run(['restic', 'version'], capture_output=True, text=True).stdout.split()[1]}")
    print()
    print(f"{'dumps after mutate --day 1':34} {'dumps MB':>9} {'zstd MB':>8} {'restic +MB':>11} {'cairn +MB':>10} {'cairn/restic':>13}"
          f" {'full: restic MB':>16} {'cairn MB':>9}")
    for churn in ("uniform", "hot") if args.only in (None, "fleet") else ():
        d0, d1 = dedup(args, work, churn)
        raw[churn] = {"day0": d0, "day1": d1}
        r_add, c_add = d1["restic"] - d0["restic"], d1["cairn"] - d0["cairn"]
        print(f"{'churn ' + churn:34} {d1['dumps'] / mb:9.1f} {d1['zstd'] / mb:8.1f} {r_add / mb:11.2f} {c_add / mb:10.2f}"
              f" {c_add / r_add:13.3f} {d0['restic'] / mb:16.1f} {d0['cairn'] / mb:9.1f}")
    print()
    if args.only in (None, "shop"):
        raw["shop"], raw["shop_restore"] = shop_workload(args, work)
        print_shop(raw["shop"])
        rt, med = raw["shop_restore"], statistics.median
        print(f"restore of the newest day into MariaDB, medians of {args.runs}:")
        print(f"  zstd -dc dump.zst | mariadb              {med(rt['zstd_client_s']):6.2f} s")
        print(f"  cairnctl repo restore-db                 {med(rt['restore_db_s']):6.2f} s"
              f"  ({med(rt['zstd_client_s']) / med(rt['restore_db_s']):.2f}x its speed)")
        print(f"  cairnctl repo restore-db --table rental  {med(rt['restore_table_s']):6.2f} s")
        print()
    if args.only in (None, "myshop"):
        raw["shop_mariadb_live"] = shop_mariadb_live(args, work)
        print_shop(raw["shop_mariadb_live"], "MariaDB, live server")
        print()
    if args.only in (None, "pgshop"):
        raw["shop_postgres"] = shop_postgres(args, work)
        print_shop(raw["shop_postgres"], "PostgreSQL, live server")
        print()
    if args.only in (None, "pgbig"):
        raw["big_postgres"] = big_postgres_table(args, work)
        print_big(raw["big_postgres"])
        print()
    if args.only not in (None, "throughput"):
        return finish(args, raw, work)
    tp = throughput(args, work)
    raw["throughput"] = tp
    med = statistics.median
    size = tp["dump_bytes"] / mb
    print(f"dump + store of one database ({size:.1f} MB of SQL), medians of {args.runs}:")
    print(f"  mariadb-dump | zstd -3 > /dev/null    {med(tp['zstd_s']):6.2f} s  {size / med(tp['zstd_s']):6.1f} MB/s")
    print(f"  cairnctl repo backup-db (first)       {med(tp['cairn_first_s']):6.2f} s  {size / med(tp['cairn_first_s']):6.1f} MB/s"
          f"  ({med(tp['zstd_s']) / med(tp['cairn_first_s']):.2f}x the pipe's speed)")
    print(f"  cairnctl repo backup-db (unchanged)   {med(tp['cairn_second_s']):6.2f} s  {size / med(tp['cairn_second_s']):6.1f} MB/s")
    print(f"  cairnctl peak RSS                     {max(tp['cairn_rss_mb']):6.0f} MB")
    finish(args, raw, work)


def finish(args, raw, work):
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
