"""Soak test (issue 8): the live daemon for a long time under random traffic and scripts.

    python tests/soak.py [--minutes 30] [--devices 50] [--interval 0.1] [--runner posix_spawn]

Runs `tunmon.py --trace 1` against a fake /proc/net/dev that a writer thread rewrites every
interval with random traffic: devices flow, fall silent for a random while (long enough for
actions, retries and restores), vanish, come back, and have their counters reset.  The ladder
runs real scripts: cheap ones, ones that fail, ones that sleep past the timeout.

Every minute it samples the daemon's RSS, open file descriptors, children and zombies, and
from the trace the lateness of every tick (arrival of its `trace: after` line minus its slot
start + k x interval).  At the end it prints a table and a summary, and exits 1 if RSS or the
fd count grew, ticks were lost, or the daemon died.  Not part of `make test`; `make soak`
runs it (30 minutes) after the model and fuzz tests with TUNMON_SOAK=1.
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TUNMON = os.path.join(ROOT, "tunmon.py")
FIELDS = " ".join(["0"] * 14)


def write_atomically(path, text):
    temp = path + ".new"
    with open(temp, "w") as f:
        f.write(text)
    os.rename(temp, path)


class Traffic:
    """Random counters for `count` devices; `step()` advances one interval."""

    def __init__(self, names, rng, interval):
        self.names = names
        self.rng = rng
        self.interval = interval
        self.counters = {name: [rng.randint(0, 10 ** 9), rng.randint(0, 10 ** 6)]
                         for name in names}
        self.mode = {name: "flow" for name in names}
        self.until = {name: 0.0 for name in names}
        self.resets = 0

    def step(self, now):
        rng = self.rng
        for name in self.names:
            if now >= self.until[name]:
                roll = rng.random()
                if roll < 0.45:
                    mode, dwell = "flow", rng.uniform(0.2, 6.0)
                elif roll < 0.9:
                    mode, dwell = "silent", rng.uniform(0.1, 8.0)
                elif roll < 0.97:
                    mode, dwell = "absent", rng.uniform(0.1, 3.0)
                else:
                    mode, dwell = "reset", 0.0
                self.mode[name] = mode
                self.until[name] = now + dwell
            mode = self.mode[name]
            c = self.counters[name]
            if mode == "flow":
                c[0] += rng.randint(60, 150000)
                c[1] += rng.randint(1, 100)
            elif mode == "reset":
                c[0], c[1] = rng.choice([(0, 0), (1500, 3)])
                self.resets += 1
                self.mode[name] = "flow"
        lines = ["Inter-|   Receive                                                |  Transmit",
                 " face |bytes    packets errs drop fifo frame compressed multicast|"
                 "bytes    packets errs drop fifo colls carrier compressed",
                 "    lo: %d %d %s" % (int(now * 1000), int(now * 10), FIELDS)]
        order = list(self.names)
        rng.shuffle(order)
        for name in order:
            if self.mode[name] != "absent":
                c = self.counters[name]
                lines.append("%6s: %d %d %s" % (name, c[0], c[1], FIELDS))
        return "\n".join(lines) + "\n"


def make_config(folder, names, interval, pidfile, status):
    def script(name, body):
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(path, 0o755)
        return path

    ok = "/bin/true"
    flaky = script("flaky.sh", 'case $(( $$ % 4 )) in 0) exit 3;; 1) sleep 0.2;; esac\nexit 0')
    slow = script("slow.sh", "sleep 3")            # past the 1 s timeout: SIGTERM
    noisy = script("noisy.sh", "echo \"$TUNMON_EVENT $*\"")
    dev = "".join("<net_device>%s</net_device>" % name for name in names)
    return """<tun_mon>
  <net_devices>%s</net_devices>
  <interval>%s</interval>
  <pidfile>%s</pidfile>
  <status_file>%s</status_file>
  <status_interval>1</status_interval>
  <script_timeout>1</script_timeout>
  <max_scripts>16</max_scripts>
  <actions>
    <action><time>0.3</time><script>%s ping</script></action>
    <action><time>0.3</time><script>%s</script></action>
    <action><time>1.5</time><script>%s rebuild</script></action>
    <action><time>4</time><script>%s</script></action>
  </actions>
  <retry_actions><retry><interval>2</interval><script>%s retry</script></retry></retry_actions>
  <restore_dev><script>%s restored</script><script>%s</script></restore_dev>
  <post_restore_any><script>%s post</script></post_restore_any>
</tun_mon>
""" % (dev, interval, pidfile, status, ok, flaky, noisy, slow, ok, ok, noisy, ok)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    """States of the daemon's children, with zombies counted only if they stay zombies for
    three ticks (a child is briefly a zombie between its exit and tunmon's next reap)."""
    first = _children(pid)
    time.sleep(0.3)
    second = _children(pid)
    lasting = set(c for c, state in first if state == "Z") & \
        set(c for c, state in second if state == "Z")
    return [state for c, state in second if state != "Z"] + ["Z"] * len(lasting)


def _children(pid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2:].split()
        if int(rest[1]) == pid:
            out.append((int(name), rest[0].decode()))
    return out


class TraceReader(threading.Thread):
    """Reads the daemon's stderr: tick lateness per minute and counts of what happened."""

    def __init__(self, stream, interval):
        threading.Thread.__init__(self, daemon=True)
        self.stream = stream
        self.interval = interval
        self.lock = threading.Lock()
        self.first = None
        self.k = 0
        self.late = []            # lateness of the ticks since the last take()
        self.skipped = 0          # ticks judged more than one interval after the previous one
        self.ticks = 0
        self.counts = {"run": 0, "exit_nonzero": 0, "signal": 0, "timeout": 0, "cannot": 0,
                       "error": 0, "action": 0, "retry": 0, "restore": 0, "post": 0}
        self.errors = []

    def run(self):
        for raw in self.stream:
            now = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.note(now, line)

    def note(self, now, line):
        c = self.counts
        if line.startswith("trace: after "):
            elapsed = int(round(float(line.split()[2].rstrip("s,")) / self.interval))
            if self.first is None:
                self.first = now
            else:
                self.k += elapsed
                self.late.append(now - (self.first + self.k * self.interval))
                if elapsed > 1:
                    self.skipped += elapsed - 1
            self.ticks += 1
        elif line.startswith("trace: run "):
            c["run"] += 1
        elif line.startswith("trace: action "):
            c["action"] += 1
        elif line.startswith("trace: retry "):
            c["retry"] += 1
        elif line.startswith("trace: restore "):
            c["restore"] += 1
        elif line.startswith("trace: post_restore_any"):
            c["post"] += 1
        elif " -> signal " in line:
            c["signal"] += 1
        elif line.startswith("warning: ") and " -> " in line:
            c["exit_nonzero"] += 1
        elif "sending SIGTERM" in line:
            c["timeout"] += 1
        elif line.startswith("error: cannot run"):
            c["cannot"] += 1
        elif line.startswith("error: "):
            c["error"] += 1
            if len(self.errors) < 20:
                self.errors.append(line)

    def take(self):
        with self.lock:
            late, self.late = self.late, []
            return late, dict(self.counts), self.ticks, self.skipped


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--runner", choices=["posix_spawn", "system", "ffi"], default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    rng = random.Random(seed)
    folder = tempfile.mkdtemp(prefix="tunmon-soak-")
    names = ["s%d" % i for i in range(args.devices)]
    cfg = os.path.join(folder, "tunmon.xml")
    proc = os.path.join(folder, "net_dev")
    with open(cfg, "w") as f:
        f.write(make_config(folder, names, args.interval, os.path.join(folder, "tunmon.pid"),
                            os.path.join(folder, "status.json")))
    traffic = Traffic(names, rng, args.interval)
    write_atomically(proc, traffic.step(0.0))

    env = dict(os.environ)
    env.pop("TUNMON_RUNNER", None)
    if args.runner:
        env["TUNMON_RUNNER"] = args.runner
    if args.runner == "ffi":
        env["PYTHONPATH"] = os.path.join(HERE, "ffi_shim")
    out = open(os.path.join(folder, "scripts.out"), "wb")
    daemon = subprocess.Popen([args.python, "-u", TUNMON, "-c", cfg, "--proc", proc,
                               "--trace", "1"], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.PIPE, start_new_session=True, env=env,
                              cwd=folder)
    trace = TraceReader(daemon.stderr, args.interval)
    trace.start()
    stop = threading.Event()

    def writer():
        start = time.monotonic()
        k = 0
        while not stop.is_set():
            k += 1
            # Half an interval off the daemon's ticks, so a reading never races a rename.
            due = start + (k + 0.5) * args.interval
            stop.wait(max(0.0, due - time.monotonic()))
            write_atomically(proc, traffic.step(time.monotonic() - start))

    writing = threading.Thread(target=writer, daemon=True)
    writing.start()
    print("tunmon soak: %d devices, interval %ss, %s minutes, seed %d, dir %s"
          % (args.devices, args.interval, args.minutes, seed, folder), flush=True)
    print("%6s %7s %9s %9s %9s %8s %4s %5s %5s %7s %6s" % (
        "minute", "ticks", "late p50", "late p99", "late max", "rss kB", "fds", "kids",
        "zomb", "scripts", "errors"), flush=True)

    rows = []
    started = time.monotonic()
    end = started + args.minutes * 60.0
    died = None
    last_runs = 0
    try:
        # Sample once right after start-up, then every --sample seconds.
        time.sleep(min(5.0, args.sample))
        next_sample = time.monotonic()
        while True:
            if daemon.poll() is not None:
                died = daemon.returncode
                break
            now = time.monotonic()
            if now >= next_sample or now >= end:
                late, counts, ticks, skipped = trace.take()
                kids = children(daemon.pid)
                row = {"minute": (now - started) / 60.0, "ticks": ticks,
                       "p50": percentile(late, 0.5), "p99": percentile(late, 0.99),
                       "max": max(late) if late else 0.0, "rss": rss_kb(daemon.pid),
                       "fds": len(os.listdir("/proc/%d/fd" % daemon.pid)),
                       "kids": len(kids), "zombies": kids.count("Z"),
                       "runs": counts["run"] - last_runs, "errors": counts["error"]}
                last_runs = counts["run"]
                rows.append(row)
                print("%6.1f %7d %8.1fms %8.1fms %8.1fms %8d %4d %5d %5d %7d %6d" % (
                    row["minute"], row["ticks"], row["p50"] * 1000, row["p99"] * 1000,
                    row["max"] * 1000, row["rss"], row["fds"], row["kids"], row["zombies"],
                    row["runs"], row["errors"]), flush=True)
                next_sample += args.sample
                if now >= end:
                    break
            time.sleep(min(1.0, max(0.0, min(next_sample, end) - time.monotonic())))
    finally:
        stop.set()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        trace.join(5)
        out.close()

    late, counts, ticks, skipped = trace.take()
    duration = time.monotonic() - started
    expected = int(duration / args.interval)
    steady = rows[1:] if len(rows) > 2 else rows
    rss_growth = steady[-1]["rss"] - steady[0]["rss"] if steady else 0
    fd_growth = steady[-1]["fds"] - steady[0]["fds"] if steady else 0
    max_late = max([r["max"] for r in rows] + [0.0])
    print()
    print("summary: %.1f min, %d ticks traced (about %d due), %d skipped, max lateness %.1f ms, "
          "p99 of minute p99s %.1f ms" % (duration / 60, ticks, expected, skipped,
                                           max_late * 1000,
                                           percentile([r["p99"] for r in rows], 0.99) * 1000))
    print("  rss %s kB -> %s kB (%+d kB after the first sample); fds %s -> %s; max zombies %d"
          % (rows[0]["rss"] if rows else "?", rows[-1]["rss"] if rows else "?", rss_growth,
             rows[0]["fds"] if rows else "?", rows[-1]["fds"] if rows else "?",
             max([r["zombies"] for r in rows] + [0])))
    print("  scripts started %d; events: %d actions, %d retries, %d restores, %d post; "
          "%d non-zero exits, %d killed by signal, %d timeouts, %d spawn errors, %d resets"
          % (counts["run"], counts["action"], counts["retry"], counts["restore"], counts["post"],
             counts["exit_nonzero"], counts["signal"], counts["timeout"], counts["cannot"],
             traffic.resets))
    print("  daemon exit: %s" % ("died with %s" % died if died is not None else daemon.returncode))
    for line in trace.errors:
        print("  " + line)

    problems = []
    if died is not None:
        problems.append("the daemon died (exit %s)" % died)
    if daemon.returncode not in (0, None) and died is None:
        problems.append("unclean stop (exit %s)" % daemon.returncode)
    if fd_growth > 0:
        problems.append("fd count grew by %d" % fd_growth)
    if rss_growth > 2048:
        problems.append("RSS grew by %d kB" % rss_growth)
    if ticks < expected * 0.97:
        problems.append("ticks lost: %d of about %d" % (ticks, expected))
    if counts["error"]:
        problems.append("%d error lines" % counts["error"])
    print("result: " + ("FAIL: " + "; ".join(problems) if problems else "ok"))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
