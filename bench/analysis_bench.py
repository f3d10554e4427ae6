"""Times `cairn-agent analyze` on synthetic WordPress-shaped sites.

Each site has N files in directories of 100 (a tenth under excluded paths),
1% modified within the last 24 hours, a wp-config.php and an access log of
200,000 lines. Prints medians of 5 warm runs: the agent's own measured
analysis time, the whole process, and `find -mtime -1 | wc -l`.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

def make_site(root, n):
    now = time.time()
    os.makedirs(root)
    with open(os.path.join(root, "wp-config.php"), "w") as f:
        f.write("<?php\ndefine('DB_NAME', 'bench');\ndefine('DB_PASSWORD', 'x');\n")
    for i in range(n):
        d = os.path.join(root, "wp-content/cache" if i % 10 == 9 else "wp-content/uploads", f"d{i // 100:05d}")
        if i % 100 == 0 or i % 10 == 9:
            os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i}.php")
        with open(p, "wb") as f:
            f.write(b"x" * (i % 4096))
        t = now - 3600 if i % 100 == 0 else now - 30 * 86400
        os.utime(p, (t, t))
    os.makedirs(os.path.join(root, "logs"))
    line = '203.0.113.1 - - [{}] "GET / HTTP/1.1" 200 512 "-" "bench"\n'
    with open(os.path.join(root, "logs/access.log"), "w") as f:
        for i in range(200_000):
            f.write(line.format(time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now - i * 0.8))))

def median_of(k, fn):
    return statistics.median(fn() for _ in range(k))

def main():
    agent, sizes = sys.argv[1], [int(x) for x in " ".join(sys.argv[2:]).split()]
    work = tempfile.mkdtemp(prefix="cairn-analysis-")
    try:
        print(f"{'files':>8} {'analysis (agent) s':>19} {'process s':>10} {'find -mtime s':>14}  changes  requests  target")
        for n in sizes:
            root = os.path.join(work, f"site{n}")
            make_site(root, n)
            cfg = os.path.join(work, f"agent{n}.toml")
            with open(cfg, "w") as f:
                f.write(f'state_dir = "{work}/state"\n[discovery]\nenabled = false\n'
                        f'[[domain]]\nname = "site{n}.example"\npath = "{root}"\n')
            run = lambda: subprocess.run([agent, "-c", cfg, "analyze", "--json"], check=True,
                                         capture_output=True).stdout
            run()  # warm the cache
            reports, walls = [], []
            for _ in range(5):
                t = time.perf_counter()
                reports.append(json.loads(run())[0])
                walls.append(time.perf_counter() - t)
            agent_s = statistics.median(r["duration_ms"] for r in reports) / 1000
            def find():
                t = time.perf_counter()
                subprocess.run(f"find {root} -type f -mtime -1 | wc -l", shell=True, check=True, capture_output=True)
                return time.perf_counter() - t
            find_s = median_of(5, find)
            r = reports[-1]
            target = 1.0 if n <= 10_000 else 3.0
            print(f"{n:>8} {agent_s:>19.3f} {statistics.median(walls):>10.3f} {find_s:>14.3f}  "
                  f"{r['changes_24h']:>7} {r['requests_24h']:>9}  < {target:.0f} s {'ok' if agent_s < target else 'MISSED'}")
    finally:
        shutil.rmtree(work)

main()
