#!/usr/bin/env python3
"""Cairn vs tar|zstd, restic and borg on one generated fleet (medians of N runs).

Every tool gets the same input (gen_fleet.py's www/ and db/, minus its
EXCLUDE_NAMES), a warm page cache, and a `sync` before each timed command. Prints a table of medians and Cairn's
ratios against each tool; never fails on a figure.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.environ.get("CAIRN_GEN_FLEET", os.path.join(HERE, "..", "..", "shared", "bench", "gen_fleet.py"))
EXCLUDES = ["wp-content/cache", "logs", "*.log", "node_modules",
            "storage/framework/cache", "storage/framework/sessions", "storage/framework/views"]
PASS = "bench-passphrase"


def run(cmd, cwd=None, env=None, stdout=subprocess.DEVNULL):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS KiB)."""
    full = ["/usr/bin/time", "-f", "%e %M", "-o", "/tmp/cairn-bench-time"] + cmd
    e = dict(os.environ)
    e.update(env or {})
    # Flush earlier writes first, so no tool pays for another's writeback.
    os.sync()
    t0 = time.monotonic()
    p = subprocess.run(full, cwd=cwd, env=e, stdout=stdout, stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode()[-2000:]}")
    rss = int(open("/tmp/cairn-bench-time").read().split()[-1])
    return wall, rss


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


class Tool:
    name = ""

    def __init__(self, work, fleet):
        self.work, self.fleet = work, fleet
        self.repo = os.path.join(work, self.name + "-repo")

    def size(self):
        return du(self.repo)


class Tar(Tool):
    name = "tar|zstd"

    def init(self):
        os.makedirs(self.repo)

    def _tar(self, level):
        ex = sum([["--exclude", e] for e in EXCLUDES], [])
        snar = os.path.join(self.repo, "state.snar")
        out = os.path.join(self.repo, f"level{level}.tar.zst")
        return run(["tar", "-I", "zstd -3 -T2", "--listed-incremental", snar, *ex, "-cf", out, "www", "db"], cwd=self.fleet)

    def full(self):
        return self._tar(0)

    def incremental(self):
        return self._tar(1)

    def restore_all(self, target):
        os.makedirs(target)
        r = run(["tar", "-I", "zstd -T2", "--listed-incremental=/dev/null", "-xf", os.path.join(self.repo, "level0.tar.zst")], cwd=target)
        r2 = run(["tar", "-I", "zstd -T2", "--listed-incremental=/dev/null", "-xf", os.path.join(self.repo, "level1.tar.zst")], cwd=target)
        return r[0] + r2[0], max(r[1], r2[1])

    def restore_one(self, target, rel):
        os.makedirs(target)
        return run(["tar", "-I", "zstd -T2", "-xf", os.path.join(self.repo, "level0.tar.zst"), rel], cwd=target)


class Restic(Tool):
    name = "restic"
    env = {"RESTIC_PASSWORD": PASS, "RESTIC_CACHE_DIR": "/tmp/cairn-bench-restic-cache"}

    def init(self):
        shutil.rmtree(self.env["RESTIC_CACHE_DIR"], ignore_errors=True)
        run(["restic", "-r", self.repo, "init"], env=self.env)

    def _backup(self):
        ex = sum([["--exclude", e] for e in EXCLUDES], [])
        return run(["restic", "-r", self.repo, "backup", "-q", *ex, "www", "db"], cwd=self.fleet, env=self.env)

    full = incremental = _backup

    def restore_all(self, target):
        return run(["restic", "-r", self.repo, "restore", "latest", "--target", target], env=self.env)

    def restore_one(self, target, rel):
        return run(["restic", "-r", self.repo, "restore", "latest", "--target", target, "--include", os.path.join(self.fleet, rel)], env=self.env)


class Borg(Tool):
    name = "borg"
    env = {"BORG_PASSPHRASE": PASS, "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
           "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "BORG_BASE_DIR": "/tmp/cairn-bench-borg"}
    n = 0

    def init(self):
        shutil.rmtree(self.env["BORG_BASE_DIR"], ignore_errors=True)
        run(["borg", "init", "-e", "repokey", self.repo], env=self.env)

    def _backup(self):
        self.n += 1
        ex = sum([["--exclude", f"sh:**/{e}"] for e in EXCLUDES], [])
        return run(["borg", "create", "--compression", "zstd,3", *ex, f"{self.repo}::a{self.n}", "www", "db"], cwd=self.fleet, env=self.env)

    full = incremental = _backup

    def restore_all(self, target):
        os.makedirs(target)
        return run(["borg", "extract", f"{self.repo}::a{self.n}"], cwd=target, env=self.env)

    def restore_one(self, target, rel):
        os.makedirs(target)
        return run(["borg", "extract", f"{self.repo}::a{self.n}", rel], cwd=target, env=self.env)


class Cairn(Tool):
    name = "cairn"
    ctl = "cairnctl"

    @property
    def env(self):
        return {"CAIRN_PASSPHRASE": PASS, "CAIRN_REPO": self.repo}

    def init(self):
        run([self.ctl, "repo", "init"], env=self.env)

    def _backup(self, kind):
        ex = sum([["--exclude", e] for e in EXCLUDES], [])
        # The whole fleet as one snapshot: the same single command the others run.
        return run([self.ctl, "repo", "backup", "--domain", "fleet", "--kind", kind, "--no-default-excludes", *ex, "."], cwd=self.fleet, env=self.env)

    def full(self):
        return self._backup("full")

    def incremental(self):
        return self._backup("incremental")

    def restore_all(self, target):
        return run([self.ctl, "repo", "restore", "latest", "--target", target], env=self.env)

    def restore_one(self, target, rel):
        return run([self.ctl, "repo", "restore", "latest", "--target", target, "--path", rel], env=self.env)


def arg_parser():
    """The flags every benchmark takes (also read from BENCH_* variables)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnctl", required=True)
    ap.add_argument("--sites", type=int, default=int(os.environ.get("BENCH_SITES", 8)))
    ap.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", 0.5)))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK"))
    ap.add_argument("--json", help="also write the raw figures here")
    return ap


def main():
    a = arg_parser().parse_args()
    Cairn.ctl = os.path.abspath(a.cairnctl)
    work = a.work or tempfile.mkdtemp(prefix="cairn-bench-")
    pristine = os.path.join(work, "pristine")
    if not os.path.exists(os.path.join(pristine, ".genstate.json")):
        subprocess.run([sys.executable, GEN, "gen", "--out", pristine, "--sites", str(a.sites), "--scale", str(a.scale)], check=True, stdout=subprocess.DEVNULL)
    stats = json.loads(subprocess.run([sys.executable, GEN, "stats", "--out", pristine], check=True, capture_output=True).stdout)
    print(f"fleet: {a.sites} sites, scale {a.scale}: {stats['inc_files']} files, {stats['inc_bytes']/1e6:.0f} MB backed up "
          f"({stats['exc_bytes']/1e6:.0f} MB excluded); {a.runs} runs, {os.cpu_count()} cores; medians below", flush=True)
    one_file = None
    for root, _, files in os.walk(os.path.join(pristine, "www")):
        for f in files:
            if f == "wp-config.php" or f == ".env":
                one_file = os.path.relpath(os.path.join(root, f), pristine)
                break
        if one_file:
            break
    figures = {}
    tools = [Tar, Restic, Borg, Cairn]
    for r in range(a.runs):
        for T in tools:
            run_dir = os.path.join(work, f"run{r}-{T.name.replace('|', '-')}")
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(run_dir)
            fleet = os.path.join(run_dir, "fleet")
            subprocess.run(["cp", "-a", pristine, fleet], check=True)
            t = T(run_dir, fleet)
            t.init()
            f = figures.setdefault(T.name, {})
            w, rss = t.full()
            f.setdefault("full_s", []).append(w)
            f.setdefault("full_rss", []).append(rss)
            f.setdefault("size", []).append(t.size())
            subprocess.run([sys.executable, GEN, "mutate", "--out", fleet, "--day", "1"], check=True, stdout=subprocess.DEVNULL)
            before = t.size()
            w, rss = t.incremental()
            f.setdefault("incr_s", []).append(w)
            f.setdefault("incr_rss", []).append(rss)
            f.setdefault("added", []).append(t.size() - before)
            w, rss = t.restore_all(os.path.join(run_dir, "restore"))
            f.setdefault("restore_s", []).append(w)
            f.setdefault("restore_rss", []).append(rss)
            w, _ = t.restore_one(os.path.join(run_dir, "one"), one_file)
            f.setdefault("one_s", []).append(w)
            shutil.rmtree(run_dir)
            print(f"  run {r + 1}: {T.name} done", file=sys.stderr, flush=True)
    med = {t: {k: statistics.median(v) for k, v in f.items()} for t, f in figures.items()}
    for t in med:
        med[t]["peak_rss"] = max(med[t]["full_rss"], med[t]["incr_rss"], med[t]["restore_rss"])
    rows = [("full backup (s)", "full_s", "{:.2f}"), ("incremental after mutate --day 1 (s)", "incr_s", "{:.2f}"),
            ("bytes added by incremental (MB)", "added", "{:.1f}"), ("repository size after full (MB)", "size", "{:.1f}"),
            ("whole-fleet restore (s)", "restore_s", "{:.2f}"), ("single-file restore (s)", "one_s", "{:.3f}"),
            ("peak RSS (MB)", "peak_rss", "{:.0f}")]
    names = [T.name for T in tools]
    print()
    print(f"{'':40}" + "".join(f"{n:>12}" for n in names) + "   cairn/tar  cairn/restic  cairn/borg")
    for label, key, fmt in rows:
        scale = 1e6 if key in ("added", "size") else (1024 if key == "peak_rss" else 1)
        vals = [med[n][key] / scale for n in names]
        ratios = []
        for other in ("tar|zstd", "restic", "borg"):
            o = med[other][key]
            ratios.append(f"{med['cairn'][key] / o:.2f}" if o else "-")
        print(f"{label:40}" + "".join(f"{fmt.format(v):>12}" for v in vals) + f"   {ratios[0]:>9}  {ratios[1]:>12}  {ratios[2]:>10}")
    if a.json:
        json.dump({"fleet": stats, "runs": a.runs, "raw": figures, "median": med}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
