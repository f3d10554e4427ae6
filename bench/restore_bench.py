"""Staged in-place restore vs a plain restore, and the dry run (issue 13).

One WordPress-shaped site of N files (default 100,000; sizes 0..8 KiB, half
random, half text, plus 16 files of 4 MiB) is backed up once with
`cairnctl repo backup`. Then, medians of R runs (default 3), each after `sync`
and with a warm page cache:
  - plain restore into an empty directory (today's path), and the same
    followed by `sync` (until the data is on disk, as the staged path waits);
  - in-place restore over a "hacked" live copy (1% of files rewritten, a web
    shell added): restore beside it, verify every byte, swap;
  - dry run over the same hacked copy (metadata compare only).
Prints the figures and the in-place/plain ratio.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

PASS = "bench-passphrase"


def make_site(root, n):
    os.makedirs(root)
    text = (b"<?php echo 'lorem ipsum dolor sit amet'; // " * 200)
    for i in range(n):
        d = os.path.join(root, "wp-content/uploads", f"d{i // 100:05d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        size = (i * 37) % 8192
        data = os.urandom(size) if i % 2 else (text * (size // len(text) + 1))[:size]
        with open(os.path.join(d, f"f{i}.php"), "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(root, "wp-content/big"))
    for i in range(16):
        with open(os.path.join(root, "wp-content/big", f"video{i}.mp4"), "wb") as f:
            f.write(os.urandom(4 << 20))


def hack(root, n):
    for i in range(0, n, 100):
        p = os.path.join(root, "wp-content/uploads", f"d{i // 100:05d}", f"f{i}.php")
        with open(p, "ab") as f:
            f.write(b"<?php eval($_POST['x']);")
    with open(os.path.join(root, "shell.php"), "w") as f:
        f.write("<?php system($_GET['c']);")


def timed(cmd, env, durable=False):
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    if durable:
        subprocess.run(["sync"], check=True)
    return time.perf_counter() - t


def main():
    ctl = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    work = tempfile.mkdtemp(prefix="cairn-restore-bench-")
    try:
        site, repo = os.path.join(work, "site"), os.path.join(work, "repo")
        env = dict(os.environ, CAIRN_PASSPHRASE=PASS, CAIRN_REPO=repo,
                   CAIRN_STATE_DIR=os.path.join(work, "state"))
        make_site(site, n)
        subprocess.run([ctl, "repo", "init"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([ctl, "repo", "backup", "--domain", "bench.test", "--kind", "full", site],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(site) for f in fs)
        www = os.path.join(work, "www")
        os.makedirs(www)
        live = os.path.join(www, "bench.test")
        plain, durable, staged, dry = [], [], [], []
        for r in range(runs):
            out = os.path.join(work, "out")
            for into, flush in ((plain, False), (durable, True)):
                shutil.rmtree(out, ignore_errors=True)
                subprocess.run(["sync"], check=True)
                into.append(timed([ctl, "repo", "restore", "latest", "--target", out], env, flush))
            shutil.rmtree(out)
            shutil.rmtree(live, ignore_errors=True)
            for name in os.listdir(www):
                shutil.rmtree(os.path.join(www, name))
            shutil.copytree(site, live, symlinks=True)
            hack(live, n)
            dry.append(timed([ctl, "repo", "restore", "latest", "--target", live, "--dry-run"], env))
            staged.append(timed([ctl, "repo", "restore", "latest", "--target", live, "--in-place"], env))
        p, u, s, d = (statistics.median(x) for x in (plain, durable, staged, dry))
        print(f"site: {n} files + 16 x 4 MiB, {size / 1e6:.0f} MB; {runs} runs, {os.cpu_count()} cores; medians")
        print(f"{'plain restore into an empty dir':<44} {p:8.2f} s  {size / p / 1e6:7.1f} MB/s")
        print(f"{'plain restore, then sync (on disk)':<44} {u:8.2f} s  {size / u / 1e6:7.1f} MB/s")
        print(f"{'in-place: stage + verify + syncfs + swap':<44} {s:8.2f} s  {size / s / 1e6:7.1f} MB/s  "
              f"({s / p:.2f}x plain, {s / u:.2f}x plain on disk)")
        print(f"{'dry run over the hacked live copy':<44} {d:8.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
