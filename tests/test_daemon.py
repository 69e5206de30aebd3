"""The live daemon as a real process (issue 2).

tunmon runs with `--proc FILE`, a fake /proc/net/dev that the test rewrites in place (same size,
one pwrite, so a reader never sees a half-written file whether it reopens the file every tick or
keeps it open). Scripts are small Python recorders that write one JSON file per event (argv,
TUNMON_*/TUN_DOWN_* environment, pid, process group, stdin, times) so the test can check what
really ran. The interval is 0.1 s; every wait is a poll with a deadline.

Runners: `native` = CPython, `ffi` = CPython with the ctypes `ffi` stand-in first on PYTHONPATH
and TUNMON_RUNNER=ffi, `mpy` = the test MicroPython (no ffi: the os.system fallback, no signals).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import TUNMON, interpreter_command

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_DIR = os.path.join(HERE, "ffi_shim")
SPY_DIR = os.path.join(HERE, "data", "ffi_spy")

RECORDER = r'''#!{python} -S
import json, os, signal, subprocess, sys, time
REC = {rec!r}
NAME = {name!r}
SLEEP = {sleep!r}
RC = {rc!r}
ON_TERM = {on_term!r}
CHILD = {child!r}


def dump(kind, **extra):
    d = dict(name=NAME, kind=kind, argv=sys.argv, pid=os.getpid(), pgid=os.getpgrp(),
             ppid=os.getppid(), time=time.time(),
             env=dict((k, v) for k, v in os.environ.items()
                      if k.startswith("TUNMON_") or k.startswith("TUN_DOWN_")))
    try:
        d["stdin"] = os.readlink("/proc/self/fd/0")
    except OSError as e:
        d["stdin"] = "error: %s" % e
    d.update(extra)
    tmp = os.path.join(REC, ".%s.%d.%s.tmp" % (NAME, os.getpid(), kind))
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.rename(tmp, os.path.join(REC, "%s.%d.%s.json" % (NAME, os.getpid(), kind)))


def on_term(signum, frame):
    dump("term")
    if ON_TERM == "record":
        os._exit(143)


if ON_TERM == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif ON_TERM in ("record", "record_ignore"):
    signal.signal(signal.SIGTERM, on_term)
child = None
if CHILD:
    child = subprocess.Popen(["sleep", "30"]).pid
dump("start", child=child)
end = time.time() + SLEEP
while time.time() < end:
    time.sleep(min(0.05, max(0, end - time.time())))
dump("end")
sys.exit(RC)
'''

PROC_LINE = "%12s:%14d %14d    0    0    0     0          0         0 %14d %14d    0    0    0     0       0          0\n"
PROC_HEADER = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
)


def xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_alive(pgid):
    """Live (non-zombie) processes whose process group is `pgid`."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def wait_for(pred, timeout, what, log=None, proc=None):
    """Polls `pred` until true; fails at the deadline, or at once if `proc` (expected to keep
    running) has exited."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError("tunmon exited (rc %s) while waiting for %s%s" % (
                proc.returncode, what, ("\n--- tunmon stderr ---\n" + log()) if log else ""))
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (
                timeout, what, ("\n--- tunmon stderr ---\n" + log()) if log else ""))
        time.sleep(0.02)


class Daemon:
    def __init__(self, tmp_path, runner):
        self.dir = str(tmp_path)
        self.runner = runner
        self.rec = os.path.join(self.dir, "rec")
        os.mkdir(self.rec)
        self.proc_path = os.path.join(self.dir, "net_dev")
        self.cfg = os.path.join(self.dir, "tunmon.xml")
        self.pidfile = os.path.join(self.dir, "run", "tunmon.pid")
        os.mkdir(os.path.dirname(self.pidfile))
        self.err_path = os.path.join(self.dir, "stderr.log")
        self.ffi_log = os.path.join(self.dir, "ffi.log")
        self.slots = []
        self.p = None
        self.others = []
        self._cache = {}

    # scripts and config -----------------------------------------------------------------------
    def script(self, name, sleep=0, rc=0, on_term="default", child=False):
        path = os.path.join(self.dir, "bin", name)
        if not os.path.isdir(os.path.dirname(path)):
            os.mkdir(os.path.dirname(path))
        with open(path, "w") as f:
            f.write(RECORDER.format(python=sys.executable, rec=self.rec, name=name, sleep=sleep,
                                    rc=rc, on_term=on_term, child=child))
        os.chmod(path, 0o755)
        return path

    def config_text(self, devices, interval, actions=(), retries=(), restore=(), post=(), extra="",
                    pidfile=True):
        out = ["<tun_mon>", "  <net_devices>"]
        out += ["    <net_device>%s</net_device>" % d for d in devices]
        out += ["  </net_devices>", "  <interval>%s</interval>" % interval]
        if pidfile:
            out.append("  <pidfile>%s</pidfile>" % self.pidfile)
        if actions:
            out += ["  <actions>"] + ["    <action><time>%s</time><script>%s</script></action>" % (t, xml_escape(s))
                                      for t, s in actions] + ["  </actions>"]
        if retries:
            out += ["  <retry_actions>"] + ["    <retry><interval>%s</interval><script>%s</script></retry>" % (t, xml_escape(s))
                                            for t, s in retries] + ["  </retry_actions>"]
        if restore:
            out += ["  <restore_dev>"] + ["    <script>%s</script>" % xml_escape(s) for s in restore] + ["  </restore_dev>"]
        if post:
            out += ["  <post_restore_any>"] + ["    <script>%s</script>" % xml_escape(s) for s in post] + ["  </post_restore_any>"]
        if extra:
            out.append(extra)
        out.append("</tun_mon>")
        return "\n".join(out) + "\n"

    def config(self, *args, **kw):
        with open(self.cfg, "w") as f:
            f.write(self.config_text(*args, **kw))

    # the fake /proc/net/dev ---------------------------------------------------------------------
    def counters(self, devs):
        """devs: {name: (rx_bytes, rx_packets) or None (absent)}. The first call fixes the slots;
        later calls rewrite the file in place with exactly the same size."""
        if not self.slots:
            self.slots = ["lo"] + list(devs)
        text = PROC_HEADER + PROC_LINE % ("lo", 123456, 789, 123456, 789)
        for name in self.slots[1:]:
            value = devs.get(name, self._last.get(name) if hasattr(self, "_last") else None)
            if value is None:
                text += PROC_LINE % ("-" * len(name), 0, 0, 0, 0)     # absent: same length
            else:
                text += PROC_LINE % (name, value[0], value[1], value[0] // 2, value[1] // 2)
        self._last = dict(getattr(self, "_last", {}), **devs)
        data = text.encode()
        if not os.path.exists(self.proc_path):
            with open(self.proc_path, "wb") as f:
                f.write(data)
            return
        assert os.path.getsize(self.proc_path) == len(data)
        fd = os.open(self.proc_path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)

    # process --------------------------------------------------------------------------------------
    def command(self, *args):
        interp = interpreter_command("micropython" if self.runner == "mpy" else "cpython")
        return list(interp) + [TUNMON, "-c", self.cfg, "--proc", self.proc_path] + list(args)

    def env(self):
        env = dict(os.environ)
        env.pop("TUNMON_RUNNER", None)
        if self.runner == "ffi":
            env["PYTHONPATH"] = SPY_DIR + ":" + SHIM_DIR + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env["TUNMON_RUNNER"] = "ffi"
            env["TUNMON_TEST_FFI_LOG"] = self.ffi_log
        return env

    def start(self, *args):
        self.errf = open(self.err_path, "ab")
        self.outf = open(os.path.join(self.dir, "stdout.log"), "ab")
        self.p = subprocess.Popen(self.command(*args), stdin=subprocess.DEVNULL, stdout=self.outf,
                                  stderr=self.errf, start_new_session=True, env=self.env(), cwd=self.dir)
        self.t0 = time.time()
        return self.p

    def run_other(self, *args, timeout=15):
        """Another tunmon on the same config (e.g. a second instance); waits for it to exit."""
        res = subprocess.run(self.command(*args), stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, env=self.env(), cwd=self.dir, timeout=timeout)
        return res

    def log(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_exit(self, timeout):
        end = time.monotonic() + timeout
        while self.p.poll() is None:
            if time.monotonic() > end:
                raise AssertionError("tunmon still running after %.1fs\n%s" % (timeout, self.log()))
            time.sleep(0.02)
        return self.p.returncode

    def wait_pidfile(self, timeout=5):
        def ok():
            try:
                with open(self.pidfile, "rb") as f:
                    return f.read().strip() == str(self.p.pid).encode()
            except OSError:
                return False
        wait_for(ok, timeout, "pidfile with our pid", self.log, self.p)

    # records --------------------------------------------------------------------------------------
    def records(self, name=None, kind="start", device=None):
        out = []
        for fn in sorted(os.listdir(self.rec)):
            if not fn.endswith(".json"):
                continue
            if fn not in self._cache:
                with open(os.path.join(self.rec, fn)) as f:
                    self._cache[fn] = json.load(f)
            r = self._cache[fn]
            if (name is None or r["name"] == name) and r["kind"] == kind and \
                    (device is None or r["env"].get("TUNMON_DEVICE") == device):
                out.append(r)
        out.sort(key=lambda r: r["time"])
        return out

    def wait_records(self, name, n=1, timeout=5, kind="start", device=None):
        return wait_for(lambda: (lambda rs: rs if len(rs) >= n else None)(self.records(name, kind, device)),
                        timeout, "%d %s record(s) of %s%s" % (n, kind, name, " for " + device if device else ""),
                        self.log, self.p)

    def cleanup(self):
        if self.p is not None and self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
            self.p.wait()
        for fn in os.listdir(self.rec):
            if fn.endswith(".json"):
                try:
                    with open(os.path.join(self.rec, fn)) as f:
                        r = json.load(f)
                except (OSError, ValueError):
                    continue
                for pid in (r.get("pid"), r.get("child")):
                    if pid and alive(pid):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
        for p in self.others:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in ("errf", "outf"):
            if hasattr(self, f):
                getattr(self, f).close()


@pytest.fixture
def make_daemon(tmp_path):
    made = []

    def make(runner="native"):
        if runner == "ffi" and not os.path.exists(os.path.join(SHIM_DIR, "ffi.py")):
            pytest.skip("tests/ffi_shim/ffi.py is not there (the lead ships it)")
        if runner == "mpy":
            interpreter_command("micropython")       # skips when there is none
        d = Daemon(tmp_path, runner)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


def log_lines(d):
    return d.log().splitlines()


def assert_clean_log(d):
    text = d.log()
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    for line in text.splitlines():
        assert re.match(r"^(error|warning|info|trace): ", line), "unprefixed log line: %r\n%s" % (line, text)


def assert_used_ffi(d):
    if d.runner != "ffi":
        return
    try:
        with open(d.ffi_log) as f:
            names = f.read().split()
    except OSError:
        names = []
    assert names, "TUNMON_RUNNER=ffi: tunmon never bound a libc function through the ffi module"
    assert set(names) & {"fork", "vfork", "posix_spawn", "posix_spawnp"}, names
    assert set(names) & {"execv", "execve", "execvp", "posix_spawn", "posix_spawnp"}, names


def fnum(text):
    """Seconds as the daemon prints them: an integer when whole, else a short decimal."""
    v = float(text)
    assert re.match(r"^\d+(\.\d{1,3})?$", text), text
    return v


ALL_RUNNERS = ["native", "ffi", "mpy"]
SPAWN_RUNNERS = ["native", "ffi"]


# ===============================================================================================
# scripts: argv, environment, stdin, process group

@pytest.mark.parametrize("runner", ALL_RUNNERS)
def test_scripts_get_argv_and_environment(make_daemon, runner):
    d = make_daemon(runner)
    devs = ["tun0", "eth0.2", "6in4-wan6", "gone"]
    a1, a2, r = d.script("a1"), d.script("a2"), d.script("r")
    rs, p = d.script("rs"), d.script("p")
    words = "'a b' ; $(id) \"it's\" * >x $HOME `id`"
    word_argv = ["a b", ";", "$(id)", "it's", "*", ">x", "$HOME", "`id`"]
    d.config(devs, "0.1", actions=[("0.2", a1 + " " + words), ("0.4", a2)], retries=[("0.2", r)],
             restore=[rs], post=[p])
    d.counters({"tun0": (1000, 10), "eth0.2": (2000, 20), "6in4-wan6": (3000, 30), "gone": None})
    d.start()
    for dev in devs:
        d.wait_records("a1", device=dev)
    d.wait_records("r", device="tun0", timeout=4)
    d.counters({"tun0": (1500, 15)})                  # traffic back on tun0: restore
    d.wait_records("p", timeout=3)
    d.wait_records("rs", timeout=3)
    assert d.p.poll() is None, d.log()
    assert not os.path.exists(os.path.join(d.dir, "x"))       # `>x` was not a redirection
    env_keys = {"TUN_DOWN_tun0", "TUN_DOWN_eth0_2", "TUN_DOWN_6in4_wan6", "TUN_DOWN_gone"}
    for dev in devs:
        rec = d.records("a1", device=dev)
        assert len(rec) == 1, rec                           # once per spell
        rec = rec[0]
        assert rec["argv"] == [a1] + word_argv + [dev, "0.2"]
        env = rec["env"]
        assert env["TUNMON_EVENT"] == "action"
        assert env["TUNMON_DEVICE"] == dev
        assert env["TUNMON_SILENT"] == "0.2"
        assert env["TUNMON_STEP"] == "1"
        assert {k for k in env if k.startswith("TUN_DOWN_")} == env_keys, env
        assert all(env[k] == "0.2" for k in env_keys), env
        assert rec["stdin"] == "/dev/null"
        rec2 = d.wait_records("a2", device=dev)[0]
        assert rec2["argv"] == [a2, dev, "0.4"]
        assert rec2["env"]["TUNMON_STEP"] == "2" and rec2["env"]["TUNMON_SILENT"] == "0.4"
    rr = d.records("r", device="tun0")[0]
    assert rr["argv"] == [r, "tun0", "0.6"]                # 6 x 0.1, printed as 0.6
    assert rr["env"]["TUNMON_EVENT"] == "retry"
    assert rr["env"]["TUNMON_STEP"] == "1"
    assert rr["env"]["TUNMON_SILENT"] == "0.6"
    rsr = d.records("rs")
    assert len(rsr) == 1, rsr
    rsr = rsr[0]
    assert rsr["argv"][:2] == [rs, "tun0"] and len(rsr["argv"]) == 3, rsr["argv"]
    silent = fnum(rsr["argv"][2])
    assert silent >= 0.6 and abs(silent * 10 - round(silent * 10)) < 1e-6, rsr["argv"]
    assert rsr["env"]["TUNMON_EVENT"] == "restore"
    assert rsr["env"]["TUNMON_DEVICE"] == "tun0"
    assert rsr["env"]["TUNMON_SILENT"] == rsr["argv"][2]
    assert rsr["env"]["TUN_DOWN_tun0"] == "0"               # tun0 has traffic now
    pr = d.records("p")
    assert len(pr) == 1 and pr[0]["argv"] == [p, "tun0"], pr
    assert pr[0]["env"]["TUNMON_EVENT"] == "post_restore_any"
    assert_clean_log(d)
    assert_used_ffi(d)
    # each script in its own process group, not tunmon's (tunmon leads its own session here)
    allrecs = d.records()
    for rec in allrecs:
        assert rec["pgid"] != d.p.pid, rec
        if runner != "mpy":
            assert rec["pgid"] == rec["pid"], rec
    starts = [rec for rec in allrecs]
    assert len({rec["pgid"] for rec in starts}) == len(starts), "scripts share a process group"


@pytest.mark.parametrize("runner", ALL_RUNNERS)
def test_nonzero_exit_and_missing_script_are_logged_and_loop_goes_on(make_daemon, runner):
    d = make_daemon(runner)
    fail, later = d.script("fail", rc=3), d.script("later")
    missing = os.path.join(d.dir, "nonexistent", "tunmon-x.sh")
    d.config(["tun0"], "0.1", actions=[("0.1", fail + " x"), ("0.1", missing + " y"), ("0.4", later)])
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_records("fail", kind="end")
    d.wait_records("later")
    want = "%s x tun0 0.1 -> 3" % fail
    wait_for(lambda: [l for l in log_lines(d) if l.endswith(want)], 3, "log line %r" % want, d.log, d.p)
    line = [l for l in log_lines(d) if l.endswith(want)][0]
    assert re.match(r"^(error|warning|info): ", line), line
    wait_for(lambda: [l for l in log_lines(d) if missing in l and re.match(r"^(error|warning): ", l)], 3,
             "a log line about %s" % missing, d.log, d.p)
    assert d.p.poll() is None, d.log()
    assert_clean_log(d)
    assert_used_ffi(d)


# ===============================================================================================
# timeouts, no double start, max_scripts

@pytest.mark.parametrize("runner", ALL_RUNNERS)
def test_hung_script_is_killed_and_loop_keeps_schedule(make_daemon, runner):
    """A hung action (with a grandchild) is SIGTERMed with its group after script_timeout 1 s;
    meanwhile the action due at 1.0 s fires on time."""
    d = make_daemon(runner)
    hung, on_time = d.script("hung", sleep=30, on_term="record", child=True), d.script("ontime")
    d.config(["tun0"], "0.1", actions=[("0.1", hung), ("1", on_time)], extra="  <script_timeout>1</script_timeout>")
    d.counters({"tun0": (1000, 10)})
    d.start()
    h = d.wait_records("hung")[0]
    o = d.wait_records("ontime", timeout=4)[0]
    assert 0.6 <= o["time"] - h["time"] <= 1.5, o["time"] - h["time"]
    wait_for(lambda: not alive(h["pid"]) and not alive(h["child"]), 4, "the hung script and its child to die", d.log, d.p)
    dead = time.time()
    assert 0.8 <= dead - h["time"] <= 3.0, dead - h["time"]
    assert d.records("hung", kind="term"), "the script was not sent SIGTERM"
    assert not group_alive(h["pgid"]), "the hung script's process group still has members"
    wait_for(lambda: [l for l in log_lines(d) if hung in l and re.search(r"time|kill", l)], 3,
             "a log line about the timeout", d.log, d.p)
    assert d.p.poll() is None
    assert_clean_log(d)
    assert_used_ffi(d)


def test_same_script_same_device_never_runs_twice_at_once(make_daemon):
    """Retry every 0.2 s, each run takes 0.5 s: runs for one device never overlap (later retries are
    skipped while one runs, and logged); the other device's runs do overlap with them."""
    d = make_daemon("native")
    slow = d.script("slow", sleep=0.5)
    d.config(["tun0", "tun1"], "0.1", retries=[("0.2", slow)])
    d.counters({"tun0": (1000, 10), "tun1": (1000, 10)})
    d.start()
    for dev in ("tun0", "tun1"):
        d.wait_records("slow", n=2, kind="end", device=dev, timeout=5)
    for dev in ("tun0", "tun1"):
        starts = d.records("slow", device=dev)
        ends = d.records("slow", kind="end", device=dev)
        runs = {r["pid"]: [r["time"], None] for r in starts}
        for e in ends:
            runs[e["pid"]][1] = e["time"]
        spans = sorted(v for v in runs.values())
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert e1 is not None and s2 >= e1, "overlapping runs for %s: %r" % (dev, spans)
    a, b = d.records("slow", device="tun0")[0], d.records("slow", device="tun1")[0]
    assert abs(a["time"] - b["time"]) < 0.3, "different devices may run at once"
    skipped = [l for l in log_lines(d) if slow in l and re.search(r"skip|still running|not start", l)]
    assert skipped and all(re.match(r"^(info|warning): ", l) for l in skipped), d.log()
    assert_clean_log(d)


def test_max_scripts_limits_concurrency_and_the_rest_wait_in_order(make_daemon):
    d = make_daemon("native")
    work = d.script("work", sleep=0.3)
    devs = ["d0", "d1", "d2", "d3", "d4"]
    d.config(devs, "0.1", actions=[("0.1", work)], extra="  <max_scripts>2</max_scripts>")
    d.counters(dict((x, (100, 1)) for x in devs))
    d.start()
    d.wait_records("work", n=5, kind="end", timeout=6)
    starts = d.records("work")
    ends = dict((r["pid"], r["time"]) for r in d.records("work", kind="end"))
    spans = [(r["time"], ends[r["pid"]], r["env"]["TUNMON_DEVICE"]) for r in starts]
    for t, _, _ in spans:
        running = [1 for s, e, _ in spans if s <= t < e]
        assert len(running) <= 2, spans
    assert max(len([1 for s, e, _ in spans if s <= t < e]) for t, _, _ in spans) == 2, spans
    order = [dev for _, _, dev in spans]
    assert set(order[:2]) == {"d0", "d1"} and set(order[2:4]) == {"d2", "d3"} and order[4] == "d4", order
    assert len(starts) == 5
    assert_clean_log(d)


# ===============================================================================================
# signals

@pytest.mark.parametrize("runner", SPAWN_RUNNERS)
def test_sigterm_stops_cleanly_and_kills_scripts(make_daemon, runner):
    d = make_daemon(runner)
    polite = d.script("polite", sleep=30, on_term="record", child=True)
    stubborn = d.script("stubborn", sleep=30, on_term="ignore", child=True)
    d.config(["tun0"], "0.1", actions=[("0.1", polite), ("0.2", stubborn)])
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_pidfile()
    p1 = d.wait_records("polite")[0]
    p2 = d.wait_records("stubborn")[0]
    t = time.monotonic()
    d.p.send_signal(signal.SIGTERM)
    rc = d.wait_exit(8)
    took = time.monotonic() - t
    assert rc == 0, d.log()
    # "wait briefly, SIGKILL what is left": well under procd's 5 s term timeout, after which
    # procd SIGKILLs tunmon itself and the pidfile and scripts would be left behind.
    assert took < 4, "SIGTERM took %.1fs to stop tunmon" % took
    assert not os.path.exists(d.pidfile)
    assert d.records("polite", kind="term"), "scripts get SIGTERM first"
    for pid in (p1["pid"], p1["child"], p2["pid"], p2["child"]):
        wait_for(lambda: not alive(pid), 0.5, "script process %d gone" % pid, d.log)
    for pgid in (p1["pgid"], p2["pgid"]):
        assert not group_alive(pgid), "process group %d still has members" % pgid
    assert_clean_log(d)
    assert_used_ffi(d)


def quiet_daemon(make_daemon, pidfile_before=None):
    """A native tunmon watching a quiet tun0 every 0.1 s, started, its pidfile written (over
    `pidfile_before`, bytes, if given)."""
    d = make_daemon("native")
    if pidfile_before is not None:
        with open(d.pidfile, "wb") as f:
            f.write(pidfile_before)
    d.config(["tun0"], "0.1")
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_pidfile(3)
    return d


def test_sigint_stops_cleanly(make_daemon):
    d = quiet_daemon(make_daemon)
    d.p.send_signal(signal.SIGINT)
    assert d.wait_exit(3) == 0, d.log()
    assert not os.path.exists(d.pidfile)
    assert_clean_log(d)


def test_sighup_keeps_device_state_and_applies_new_ladder(make_daemon):
    """v1: a1 at 0.3 s, old2 at 1.5 s, devices tun0 + gone0. After a1 fired, v2 (a1 at 0.3 s,
    new2 at 1.0 s, devices tun0 + new1) and SIGHUP: tun0 keeps its age and ladder position
    (a1 not again; new2 at age 10 = 0.7 s after a1), new1 starts at age 0, gone0 is dropped."""
    d = make_daemon("native")
    a1, old2, new2 = d.script("a1"), d.script("old2"), d.script("new2")
    d.config(["tun0", "gone0"], "0.1", actions=[("0.3", a1), ("1.5", old2)])
    d.counters({"tun0": (1000, 10), "gone0": (50, 5), "new1": (70, 7)})
    d.start()
    first = d.wait_records("a1", device="tun0")[0]
    d.config(["tun0", "new1"], "0.1", actions=[("0.3", a1), ("1", new2)])
    hup = time.time()
    d.p.send_signal(signal.SIGHUP)
    n2 = d.wait_records("new2", device="tun0", timeout=3)[0]
    n1 = d.wait_records("a1", device="new1", timeout=3)[0]
    time.sleep(0.5)                                   # room for a wrong duplicate to show up
    assert len(d.records("a1", device="tun0")) == 1, "SIGHUP restarted tun0's silent spell"
    assert n2["time"] - first["time"] < 0.95, n2["time"] - first["time"]
    assert n2["env"]["TUNMON_SILENT"] == "1" and n2["argv"] == [new2, "tun0", "1"]
    assert n1["argv"] == [a1, "new1", "0.3"] and n1["time"] >= hup + 0.2
    assert "TUN_DOWN_new1" in n2["env"] and "TUN_DOWN_gone0" not in n2["env"], n2["env"]
    assert not d.records("old2"), "the old ladder is gone"
    assert not d.records("new2", device="gone0"), "a removed device is dropped"
    assert d.p.poll() is None
    assert_clean_log(d)


def test_sighup_with_broken_config_keeps_old_one(make_daemon):
    d = make_daemon("native")
    a1, a2 = d.script("a1"), d.script("a2")
    d.config(["tun0"], "0.1", actions=[("0.2", a1), ("1", a2)])
    d.counters({"tun0": (1000, 10)})
    d.start()
    first = d.wait_records("a1")[0]
    good = open(d.cfg).read()
    bad = good.replace("  <interval>0.1</interval>", "  <intervall>5</intervall>")
    with open(d.cfg, "w") as f:
        f.write(bad)
    d.p.send_signal(signal.SIGHUP)
    line_no = bad.splitlines().index("  <intervall>5</intervall>") + 1
    wait_for(lambda: [l for l in log_lines(d) if l.startswith("error: ") and "%s:%d:" % (d.cfg, line_no) in l
                      and "intervall" in l], 3, "the reload error", d.log, d.p)
    second = d.wait_records("a2", timeout=3)[0]
    assert 0.5 <= second["time"] - first["time"] <= 1.2, second["time"] - first["time"]
    assert second["argv"] == [a2, "tun0", "1"]
    assert len(d.records("a1")) == 1
    assert d.p.poll() is None
    assert_clean_log(d)


@pytest.mark.parametrize("before, after", [
    (["tun0"], ["tun0", "new1", "new2"]),       # devices added
    (["tun0", "tun1"], ["tun1"]),               # a device removed
])
def test_a_stop_right_after_a_reload_writes_the_last_ticks_status(make_daemon, before, after):
    """SIGTERM after a SIGHUP, before the next tick: the stopped status is the last tick's,
    with its devices and their own counters (the reload's device list with the last tick's
    counters ended in an internal error, or showed one device's counters for another)."""
    d = make_daemon("native")
    status = os.path.join(d.dir, "status.json")
    extra = "  <status_file>%s</status_file>" % status
    d.config(before, "5", extra=extra)
    d.counters({"tun0": (999, 9), "tun1": (111, 1), "new1": (70, 7), "new2": (80, 8)})
    d.start()
    wait_for(lambda: os.path.exists(status), 5, "the first status write", d.log, d.p)
    d.config(after, "5", extra=extra)
    d.p.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in d.log(), 3, "the reload", d.log, d.p)
    d.p.send_signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0, d.log()
    assert "error" not in d.log(), d.log()
    with open(status) as f:
        written = json.load(f)
    assert written["state"] == "stopped"
    shown = {dev["name"]: dev["rx"]["bytes"] for dev in written["devices"]}
    assert shown == {name: {"tun0": 999, "tun1": 111}[name] for name in before}
    assert not os.path.exists(d.pidfile)


@pytest.mark.parametrize("runner", ALL_RUNNERS)
def test_scripts_write_to_tunmons_own_stdout_with_every_runner(make_daemon, runner):
    d = make_daemon(runner)
    d.config(["tun0"], "0.1", actions=[("0.2", "/bin/echo said by the script")])
    d.counters({"tun0": (1000, 10)})
    d.start()
    stdout = os.path.join(d.dir, "stdout.log")
    wait_for(lambda: b"said by the script tun0 0.2" in open(stdout, "rb").read(), 5,
             "the script's line on tunmon's stdout", d.log, d.p)
    os.remove(d.pidfile)        # the stop every runner obeys
    assert d.wait_exit(3) == 0, d.log()


def test_the_fallback_runner_refuses_to_start_without_its_state_directory(make_daemon):
    # Without it no script's end would be seen: the script slots ran out, silently.
    d = make_daemon("mpy")
    d.config(["tun0"], "0.1")
    d.counters({"tun0": (1000, 10)})
    env = dict(d.env(), TMPDIR="/nonexistent")
    result = subprocess.run(d.command(), env=env, capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot start: cannot make /nonexistent/tunmon-")
    assert result.stderr.endswith(" for the script runner: No such file or directory\n")


# ===============================================================================================
# pidfile

@pytest.mark.parametrize("runner", ALL_RUNNERS)
def test_pidfile_removal_stops_the_daemon(make_daemon, runner):
    d = make_daemon(runner)
    d.config(["tun0"], "0.1")
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_pidfile()
    os.remove(d.pidfile)
    assert d.wait_exit(2) == 0, d.log()
    assert not os.path.exists(d.pidfile)
    assert_clean_log(d)


def test_pidfile_replaced_contents_stops_and_is_left_alone(make_daemon):
    d = make_daemon("native")
    d.config(["tun0"], "0.1")
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_pidfile()
    with open(d.pidfile, "w") as f:
        f.write("999999\n")
    assert d.wait_exit(2) == 0, d.log()
    with open(d.pidfile) as f:
        assert f.read() == "999999\n", "the pidfile is no longer ours: leave it"
    assert_clean_log(d)


@pytest.mark.parametrize("runner", ["native", "mpy"])
def test_second_instance_is_refused(make_daemon, runner):
    d = make_daemon(runner)
    d.config(["tun0"], "0.1")
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_pidfile()
    res = d.run_other()
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "already running (pid %d)" % d.p.pid in lines[0], res.stderr
    assert d.p.poll() is None
    with open(d.pidfile) as f:
        assert f.read().strip() == str(d.p.pid)


def test_stale_pidfile_is_replaced(make_daemon):
    d = make_daemon("native")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(d.pidfile, "w") as f:
        f.write("%d\n" % dead.pid)
    d.config(["tun0"], "0.1")
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_pidfile(3)
    assert d.p.poll() is None
    assert_clean_log(d)


@pytest.mark.parametrize("command", [["sleep", "30"],
                                     ["tail", "-f", "tunmon.log"]])    # only mentions tunmon
def test_pidfile_of_a_live_non_tunmon_process_is_stale(make_daemon, tmp_path, command):
    """After a reboot the recorded pid may belong to some other program: not 'a live tunmon'."""
    d = make_daemon("native")
    (tmp_path / "tunmon.log").write_text("")
    other = subprocess.Popen(command, cwd=str(tmp_path), stdout=subprocess.DEVNULL)
    d.others.append(other)
    with open(d.pidfile, "w") as f:
        f.write("%d\n" % other.pid)
    d.config(["tun0"], "0.1")
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_pidfile(3)
    assert d.p.poll() is None
    assert other.poll() is None, "tunmon must not touch the other process"


@pytest.mark.parametrize("content", [b"\xff\xfe\n", "\u00b2\n".encode(), b"-5\n", b""])
def test_a_pidfile_holding_no_pid_is_stale(make_daemon, content):
    d = quiet_daemon(make_daemon, pidfile_before=content)
    assert d.p.poll() is None
    assert_clean_log(d)


def test_garbage_written_over_the_pidfile_is_a_takeover(make_daemon):
    d = quiet_daemon(make_daemon)
    with open(d.pidfile, "wb") as f:
        f.write(b"\xff\n")
    assert d.wait_exit(3) == 0, d.log()
    assert "pidfile %s removed or taken over: stopping" % d.pidfile in d.log()
    assert "error" not in d.log()


def test_no_pidfile_configured(make_daemon):
    d = make_daemon("native")
    a = d.script("a")
    d.config(["tun0"], "0.1", actions=[("0.2", a)], pidfile=False)
    d.counters({"tun0": (1000, 10)})
    d.start()
    d.wait_records("a")
    assert not os.listdir(os.path.dirname(d.pidfile))
    d.p.send_signal(signal.SIGTERM)
    assert d.wait_exit(3) == 0
    assert_clean_log(d)


# ===============================================================================================
# trace output, quiet operation, unreadable counters

@pytest.mark.parametrize("runner", ALL_RUNNERS)
def test_trace_one_totals_then_deltas(make_daemon, runner):
    """--trace 1: `after 0.1s, bytes N, packets M` per tick, summed over the watched devices
    (lo, veth0 and the absent `ghost` not counted): totals first, then deltas."""
    d = make_daemon(runner)
    d.config(["tun0", "eth0", "ghost"], "0.1", pidfile=False)
    d.counters({"veth0": (555555, 5555), "tun0": (1000, 10), "eth0": (2000, 20), "ghost": None})
    d.start("--trace", "1")
    pat = re.compile(r"after ([0-9.]+)s, bytes (\d+), packets (\d+)$")

    def seen():
        return [(int(m.group(2)), int(m.group(3))) for m in map(pat.search, log_lines(d)) if m]
    wait_for(lambda: len(seen()) >= 2, 5, "two trace lines", d.log, d.p)
    d.counters({"tun0": (1500, 15), "veth0": (999999, 9999)})
    wait_for(lambda: sum(b for b, _ in seen()[1:]) >= 500, 3, "the delta", d.log, d.p)
    d.counters({"eth0": (2070, 22)})
    wait_for(lambda: sum(b for b, _ in seen()[1:]) >= 570, 3, "the second delta", d.log, d.p)
    got = seen()
    assert got[0] == (3000, 30), got
    assert sorted(set(got[1:])) == [(0, 0), (70, 2), (500, 5)], got
    assert got.count((500, 5)) == 1 and got.count((70, 2)) == 1, got
    lines = [l for l in log_lines(d) if pat.search(l)]
    assert all(l.startswith("trace: ") for l in lines), lines
    # the baseline line may say `after 0s` (nothing elapsed yet); later ones the interval (a
    # multiple of it if a tick came late)
    secs = [pat.search(l).group(1) for l in lines]
    assert secs[0] in ("0", "0.1"), lines[0]
    for x in secs[1:]:
        assert fnum(x) > 0 and abs(fnum(x) * 10 - round(fnum(x) * 10)) < 1e-6, lines
    assert secs[1:].count("0.1") >= len(secs[1:]) // 2, lines


def test_trace_shows_script_launch_and_exit(make_daemon):
    d = make_daemon("native")
    a = d.script("a", rc=0)
    d.config(["tun0"], "0.1", actions=[("0.2", a + " arg")], pidfile=False)
    d.counters({"tun0": (1000, 10)})
    d.start("--trace", "1")
    d.wait_records("a", kind="end")
    wait_for(lambda: len([l for l in log_lines(d) if l.startswith("trace: ") and a in l]) >= 2, 3,
             "trace lines for the launch and the exit of %s" % a, d.log, d.p)


def test_nothing_printed_per_tick_without_trace(make_daemon):
    d = make_daemon("native")
    d.config(["tun0"], "0.1", pidfile=False)
    d.counters({"tun0": (1000, 10)})
    d.start()
    time.sleep(0.8)                                   # 8 ticks with nothing to report
    assert d.p.poll() is None, d.log()
    assert len(log_lines(d)) <= 2, d.log()
    assert_clean_log(d)


def test_unreadable_counters_judge_nobody_and_are_logged_once(make_daemon):
    """The counters file disappears for ~0.8 s (8 ticks): ages do not advance, so the action due
    at 0.5 s of silence fires only ~0.4-0.5 s after the file is back; failure and recovery are
    logged once each, not per tick."""
    d = make_daemon("native")
    a = d.script("a")
    d.config(["tun0"], "0.1", actions=[("0.5", a)], pidfile=False)
    d.counters({"tun0": (1000, 10)})
    d.start("--trace", "1")
    wait_for(lambda: [l for l in log_lines(d) if "after 0.1s" in l], 5, "the first tick", d.log, d.p)
    before = len([l for l in log_lines(d) if not l.startswith("trace: ")])
    os.rename(d.proc_path, d.proc_path + ".away")
    gone = time.time()
    time.sleep(0.8)
    assert not d.records("a"), "an action fired while the counters could not be read"
    during = [l for l in log_lines(d) if not l.startswith("trace: ")][before:]
    assert len(during) == 1 and re.match(r"^(error|warning): ", during[0]) and d.proc_path in during[0], during
    os.rename(d.proc_path + ".away", d.proc_path)
    back = time.time()
    rec = d.wait_records("a", timeout=3)[0]
    assert 0.25 <= rec["time"] - back <= 0.9, (rec["time"] - back, back - gone)
    assert fnum(rec["argv"][2]) == 0.5, rec["argv"]
    after = [l for l in log_lines(d) if not l.startswith("trace: ")][before + 1:]
    assert len(after) == 1 and re.match(r"^(info|warning): ", after[0]), after
    assert_clean_log(d)


# ===============================================================================================
# SIGKILL 5 s after SIGTERM: inherently slow, so the scenario runs in the background from the
# start of this module (a thread watches the script die) and is checked here at the end.

SIGKILL_TEST = "test_script_ignoring_term_gets_sigkill_five_seconds_later"


@pytest.fixture(scope="module", autouse=True)
def sigkill_scenario(request, tmp_path_factory):
    import threading
    if not any(item.name == SIGKILL_TEST for item in request.session.items):
        yield None
        return
    d = Daemon(tmp_path_factory.mktemp("sigkill"), "native")
    stub = d.script("stubborn", sleep=30, on_term="record_ignore")
    d.config(["tun0"], "0.1", actions=[("0.1", stub)], extra="  <script_timeout>0.3</script_timeout>")
    d.counters({"tun0": (1000, 10)})
    result = {"daemon": d}

    def watch():
        try:
            s = d.wait_records("stubborn")[0]
            result["start"] = s
            result["term"] = d.wait_records("stubborn", kind="term", timeout=3)[0]
            result["alive_after_term"] = alive(s["pid"])
            wait_for(lambda: not alive(s["pid"]), 9, "SIGKILL of the stubborn script", d.log, d.p)
            result["dead"] = time.time()
        except AssertionError as e:
            result["error"] = str(e)

    d.start()
    thread = threading.Thread(target=watch)
    thread.daemon = True
    thread.start()
    result["thread"] = thread
    yield result
    thread.join(10)
    d.cleanup()


def test_script_ignoring_term_gets_sigkill_five_seconds_later(sigkill_scenario):
    """script_timeout 0.3 s: SIGTERM to the group at ~0.3 s; the script ignores it; SIGKILL 5 s
    later; the daemon keeps running."""
    r = sigkill_scenario
    r["thread"].join(12)
    d = r["daemon"]
    assert "error" not in r, r.get("error")
    assert 0.1 <= r["term"]["time"] - r["start"]["time"] <= 1.2, r["term"]["time"] - r["start"]["time"]
    assert r["alive_after_term"]
    assert 4.0 <= r["dead"] - r["term"]["time"] <= 6.5, r["dead"] - r["term"]["time"]
    assert not d.records("stubborn", kind="end")
    assert d.p.poll() is None, d.log()
    stub = r["start"]["argv"][0]
    assert [l for l in log_lines(d) if stub in l and re.search(r"time|kill", l)], d.log()
    assert_clean_log(d)
