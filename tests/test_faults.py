"""Faults at run time (issue 8): the live daemon against scripts that fail in every way,
a vanishing /proc file, signal storms, half-written configs, racing twins, failing spawns,
a full status directory, a jumping wall clock, and hostile interface names.

Every daemon runs as `python3 tunmon.py -c CFG --proc FAKE --trace 1` at interval 0.1 s in a
session of its own, so everything it and its scripts start can be found afterwards (same
session id) and nothing outlives the test.  Schedule checks read the `trace: after ...` line
of every tick, time-stamped as it arrives.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, TUNMON, interpreter_command, small_tmpfs

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import tunmon  # noqa: E402
import tunmon_xml  # noqa: E402

INTERVAL = 0.1
HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_DIR = os.path.join(HERE, "ffi_shim")
FIELDS = " ".join(["0"] * 14)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


# ---------------------------------------------------------------------------------------------
# Harness

def proc_text(counters):
    """/proc/net/dev text; counters: {name: (rx_bytes, rx_packets)}."""
    lines = ["Inter-|   Receive                                                |  Transmit",
             " face |bytes    packets errs drop fifo frame compressed multicast|"
             "bytes    packets errs drop fifo colls carrier compressed"]
    for name, (b, p) in counters.items():
        lines.append("%6s: %d %d %s" % (name, b, p, FIELDS))
    return "\n".join(lines) + "\n"


def write_file(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def script(directory, name, body, mode=0o755):
    path = os.path.join(str(directory), name)
    write_file(path, "#!/bin/sh\n" + body + "\n", mode)
    return path


def config_xml(devices, interval=INTERVAL, actions=(), retries=(), restores=(), posts=(),
               extra=""):
    esc = tunmon_xml.escape
    parts = ["<tun_mon>", "<net_devices>"]
    parts += ["<net_device>%s</net_device>" % esc(d) for d in devices]
    parts += ["</net_devices>", "<interval>%s</interval>" % interval, extra, "<actions>"]
    parts += ["<action><time>%s</time><script>%s</script></action>" % (t, esc(s))
              for t, s in actions]
    parts += ["</actions>", "<retry_actions>"]
    parts += ["<retry><interval>%s</interval><script>%s</script></retry>" % (t, esc(s))
              for t, s in retries]
    parts += ["</retry_actions>", "<restore_dev>"]
    parts += ["<script>%s</script>" % esc(s) for s in restores]
    parts += ["</restore_dev>", "<post_restore_any>"]
    parts += ["<script>%s</script>" % esc(s) for s in posts]
    parts += ["</post_restore_any>", "</tun_mon>"]
    return "\n".join(parts) + "\n"


def stat_fields(pid):
    """(state, ppid, pgrp, session) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3])


def all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def session_members(session):
    out = []
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields and fields[3] == session:
            out.append((pid, fields[0]))
    return out


def children_of(pid):
    out = []
    for child in all_pids():
        fields = stat_fields(child)
        if fields and fields[1] == pid:
            out.append((child, fields[0]))
    return out


class Live:
    """One tunmon daemon process with a fake /proc/net/dev in a temporary directory."""

    def __init__(self, tmp_path, devices, counters=None, trace=True, env=None, config=None,
                 **config_kw):
        self.dir = str(tmp_path)
        os.makedirs(self.dir, exist_ok=True)
        self.devices = devices
        self.cfg = os.path.join(self.dir, "tunmon.xml")
        self.proc = os.path.join(self.dir, "net_dev")
        self.status = os.path.join(self.dir, "status.json")
        extra = config_kw.pop("extra", "")
        if "<status_file>" not in extra:
            extra += "<status_file>%s</status_file>" % self.status
        write_file(self.cfg, config or config_xml(devices, extra=extra, **config_kw))
        self.set_counters(counters or {d: (1000, 10) for d in devices})
        self.trace = trace
        self.env = dict(os.environ)
        self.env.pop("TUNMON_RUNNER", None)
        self.env.update(env or {})
        self.lines = []          # (monotonic time, stderr line)
        self.stdout_bytes = 0
        self.p = None

    def set_counters(self, counters):
        temp = self.proc + ".new"
        write_file(temp, proc_text(counters))
        os.rename(temp, self.proc)

    def start(self, *extra_args):
        args = [sys.executable, "-u", TUNMON, "-c", self.cfg, "--proc", self.proc]
        if self.trace:
            args += ["--trace", "1"]
        self.p = subprocess.Popen(args + list(extra_args), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  start_new_session=True, env=self.env, cwd=self.dir)
        self.threads = [threading.Thread(target=self._read_err, daemon=True),
                        threading.Thread(target=self._drain_out, daemon=True)]
        for t in self.threads:
            t.start()
        self.wait_for(lambda: self.count("trace: after") >= 1 or self.p.poll() is not None,
                      10, "first tick")
        return self

    def _read_err(self):
        for raw in self.p.stderr:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))

    def _drain_out(self):
        while True:
            chunk = self.p.stdout.read1(65536) if hasattr(self.p.stdout, "read1") else \
                self.p.stdout.read(65536)
            if not chunk:
                return
            self.stdout_bytes += len(chunk)

    def text(self):
        return "\n".join(line for _, line in list(self.lines))

    def count(self, needle):
        return sum(1 for _, line in list(self.lines) if needle in line)

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %s; stderr so far:\n%s"
                             % (what, self.text()[-4000:]))

    def ticks(self):
        """[(arrival time, ticks elapsed)] from the `trace: after Xs` lines."""
        out = []
        for when, line in list(self.lines):
            if line.startswith("trace: after "):
                seconds = float(line.split()[2].rstrip("s,"))
                out.append((when, int(round(seconds / INTERVAL))))
        return out

    def lateness(self, since=0.0):
        """Seconds each tick arrived after its slot, from the first tick on (after `since`)."""
        ticks = [t for t in self.ticks()]
        if not ticks:
            return []
        first = ticks[0][0]
        k = 0
        late = []
        for when, elapsed in ticks[1:]:
            k += elapsed
            if when >= since:
                late.append(when - (first + k * INTERVAL))
        base = min(late) if late else 0.0       # the first tick's own delay is the zero
        return [x - base for x in late]

    def fds(self):
        return sorted(os.listdir("/proc/%d/fd" % self.p.pid))

    def fd_targets(self):
        out = []
        for fd in self.fds():
            try:
                out.append(os.readlink("/proc/%d/fd/%s" % (self.p.pid, fd)))
            except OSError:
                pass
        return sorted(out)

    def signal(self, sig):
        os.kill(self.p.pid, sig)

    def stop(self, timeout=20):
        if self.p.poll() is None:
            self.signal(signal.SIGTERM)
        rc = self.p.wait(timeout)
        for t in self.threads:
            t.join(5)
        return rc

    def leftovers(self, grace=1.0):
        """Processes still running in the daemon's session (its scripts and what they forked).
        Zombies are not running: once tunmon is gone they wait for init to reap them."""
        deadline = time.monotonic() + grace
        while True:
            left = [(pid, state) for pid, state in session_members(self.p.pid)
                    if pid != self.p.pid and state != "Z"]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def kill_everything(self):
        if self.p is None:
            return
        for pid, _ in session_members(self.p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.p.kill()
        except OSError:
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def live(tmp_path):
    made = []

    def make(*args, **kw):
        d = Live(tmp_path, *args, **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        d.kill_everything()


def assert_on_schedule(d, max_late=0.6, since=0.0):
    late = d.lateness(since)
    assert late, "no ticks traced"
    late_sorted = sorted(late)
    median = late_sorted[len(late_sorted) // 2]
    assert median < 0.05, "median lateness %.3fs" % median
    assert max(late) < max_late, "a tick was %.3fs late" % max(late)
    # No tick was skipped for long: every `after` is 1 tick, or a few when the machine hiccuped.
    gaps = [elapsed for _, elapsed in d.ticks()[1:] if elapsed > 3]
    assert not gaps, "ticks skipped: %r" % gaps


def no_lasting_zombies(d):
    """A child may be a zombie for up to one tick; one that stays so is a leak."""
    first = set(pid for pid, state in children_of(d.p.pid) if state == "Z")
    time.sleep(3 * INTERVAL)
    second = set(pid for pid, state in children_of(d.p.pid) if state == "Z")
    return first & second


# ---------------------------------------------------------------------------------------------
# Scripts that fail in every way

def test_misbehaving_scripts_never_disturb_the_loop(live, tmp_path):
    stamps = tmp_path / "stamps"
    scripts = [
        ("0.1", script(tmp_path, "fails.sh", "exit 3")),
        ("0.2", str(tmp_path / "missing.sh")),
        ("0.2", script(tmp_path, "noexec.sh", "exit 0", mode=0o644)),
        ("0.3", script(tmp_path, "hangs.sh", "exec sleep 1000")),
        ("0.3", script(tmp_path, "stubborn.sh", "trap '' TERM\nwhile :; do sleep 0.05; done")),
        ("0.4", script(tmp_path, "chatty.sh", "head -c 20000000 /dev/zero")),
        ("0.4", script(tmp_path, "closes.sh", "exec >&- 2>&- <&-\nsleep 0.3\nexit 4")),
        ("0.5", script(tmp_path, "killed.sh", "kill -KILL $$")),
    ]
    stamp = script(tmp_path, "stamp.sh", 'echo "$TUNMON_SILENT" >> %s' % stamps)
    d = live(["tun0"], actions=scripts, retries=[("1", stamp)],
             extra="<script_timeout>1</script_timeout><max_scripts>16</max_scripts>")
    d.start()
    d.wait_for(lambda: d.count("ignored SIGTERM: sending SIGKILL") >= 1, 15, "SIGKILL")
    d.wait_for(lambda: d.count("stubborn.sh tun0 0.3 -> signal 9") >= 1, 5, "stubborn reaped")
    time.sleep(0.5)
    text = d.text()
    assert "fails.sh tun0 0.1 -> 3" in text
    assert "cannot run %s tun0 0.2: No such file" % (tmp_path / "missing.sh") in text
    assert "noexec.sh tun0 0.2: Permission denied" in text
    assert "hangs.sh tun0 0.3 still running after 1s: sending SIGTERM" in text
    assert "hangs.sh tun0 0.3 -> signal 15" in text
    assert "closes.sh tun0 0.4 -> 4" in text
    assert "killed.sh tun0 0.5 -> signal 9" in text
    assert d.stdout_bytes >= 20000000, "the chatty script's output went somewhere else"
    assert d.p.poll() is None, "tunmon died:\n" + text
    assert_on_schedule(d)
    # The retry kept its own period through all of it (1 s after the ladder's last action).
    silences = [float(x) for x in stamps.read_text().split()]
    assert silences[:5] == [1.5, 2.5, 3.5, 4.5, 5.5], silences
    assert not no_lasting_zombies(d), children_of(d.p.pid)
    assert d.stop() == 0
    assert not d.leftovers(), "still running after stop: %r" % d.leftovers()


def test_children_forked_by_a_script_do_not_outlive_stop(live, tmp_path):
    """A script that starts a background child and exits at once: after tunmon stops, the
    child must not be left running (issue 8: no orphan left after stop)."""
    pidfile = tmp_path / "child.pid"
    forks = script(tmp_path, "forks.sh", "sleep 1000 </dev/null >/dev/null 2>&1 &\n"
                                         "echo $! > %s\nexit 0" % pidfile)
    d = live(["tun0"], actions=[("0.1", forks)])
    d.start()
    d.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "the child")
    child = int(pidfile.read_text())
    d.wait_for(lambda: d.count("forks.sh tun0 0.1 -> 0") >= 1, 5, "the script's exit")
    assert stat_fields(child) is not None, "the child should still be running now"
    assert d.stop() == 0
    time.sleep(0.3)
    gone = stat_fields(child)
    assert gone is None or gone[0] == "Z", "child %d of an exited script outlived tunmon" % child


def test_no_fd_leak_and_no_zombie_after_a_thousand_script_runs(live, tmp_path):
    """20 retries per tick (10 silent devices, 2 retry entries every tick): count the
    daemon's open files after its first scripts and again after more than 1,000 runs."""
    devices = ["d%d" % i for i in range(10)]
    d = live(devices, retries=[("0.1", "/bin/true"), ("0.1", "/bin/true -x")],
             extra="<max_scripts>40</max_scripts>")
    d.start()
    d.wait_for(lambda: d.count("trace: run ") >= 60, 10, "first runs")
    before = d.fd_targets()
    d.wait_for(lambda: d.count("trace: run ") >= 1100, 60, "1,100 runs")
    after = d.fd_targets()
    assert len(after) == len(before), "fds before %r, after %r" % (before, after)
    assert d.count("-> 0") >= 1000
    assert not no_lasting_zombies(d), children_of(d.p.pid)
    assert_on_schedule(d, max_late=1.0)
    assert d.stop() == 0
    assert not d.leftovers()


# ---------------------------------------------------------------------------------------------
# The counter file

@pytest.mark.parametrize("how, why", [
    ("directory", "Is a directory"),
    ("removed", "No such file or directory"),
    ("too large", "larger than 4 MiB"),     # read to its end, it would take all memory
])
def test_proc_file_unreadable_for_a_while_is_logged_once_and_recovered_once(live, tmp_path, how,
                                                                            why):
    d = live(["tun0"], actions=[("10", "/bin/true")])
    d.start()
    time.sleep(0.5)
    saved = open(d.proc).read()
    os.remove(d.proc)
    if how == "directory":
        os.mkdir(d.proc)
    elif how == "too large":
        write_file(d.proc, saved * (5 * 2 ** 20 // len(saved)))
    time.sleep(1.0)
    ticks_during = len(d.ticks())
    time.sleep(0.3)
    assert len(d.ticks()) == ticks_during, "ticks were judged without counters"
    if how == "directory":
        os.rmdir(d.proc)
    write_file(d.proc, saved)
    d.wait_for(lambda: d.count("readable again") >= 1, 5, "recovery")
    time.sleep(0.5)
    assert d.count("cannot read %s (%s): " % (d.proc, why)) == 1, d.text()
    assert d.count("cannot read") == 1, d.text()
    assert d.count("readable again") == 1, d.text()
    assert d.p.poll() is None
    assert d.stop() == 0


def test_a_proc_file_too_big_for_the_micropython_heap_is_unreadable_not_fatal(tmp_path):
    config = tmp_path / "tunmon.xml"
    write_file(str(config), config_xml(["tun0"], extra="<status_file>%s</status_file>"
                                       % (tmp_path / "status.json")))
    proc = tmp_path / "net_dev"
    write_file(str(proc), proc_text({"tun0": (1000, 10)}) * 20000)   # 3 MB: the heap is 2 MB
    daemon = subprocess.Popen(list(interpreter_command("micropython")) + [
        TUNMON, "-c", str(config), "--proc", str(proc)], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        still_running = daemon.poll() is None
        daemon.send_signal(signal.SIGINT)   # this MicroPython (no ffi) takes it as Ctrl-C
        stderr = daemon.communicate(timeout=10)[1]
    finally:
        daemon.kill()
    assert still_running, stderr
    failures = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(failures) == 1, stderr
    assert failures[0].startswith("error: cannot read %s (out of memory for a file of over "
                                  % proc), stderr
    assert failures[0].endswith(" KiB): ticks are not judged until it is back"), stderr


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_a_closed_log_pipe_does_not_stop_the_monitor(tmp_path, interpreter):
    """stderr is a pipe to the log reader (procd's); if that reader goes away, the writes fail
    (EPIPE), and they ended the daemon."""
    config = tmp_path / "tunmon.xml"
    status = tmp_path / "status.json"
    write_file(str(config), config_xml(["tun0"], extra="<status_file>%s</status_file>"
                                       "<status_interval>0.1</status_interval>" % status))
    proc = tmp_path / "net_dev"
    write_file(str(proc), proc_text({"tun0": (1000, 10)}))
    daemon = subprocess.Popen(list(interpreter_command(interpreter)) + [
        TUNMON, "-c", str(config), "--proc", str(proc), "--trace", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert daemon.stderr.readline().startswith(b"info: tunmon ")
        daemon.stderr.close()               # the reader is gone; --trace writes every tick
        time.sleep(1.0)
        assert daemon.poll() is None
        before = json.loads(status.read_text())["updated"]
        time.sleep(1.0)                     # the status file is still written, every tick
        assert json.loads(status.read_text())["updated"] > before
        assert daemon.poll() is None
    finally:
        daemon.kill()
        daemon.wait()


def test_full_status_directory_does_not_stop_the_loop(live, tmp_path):
    """A full /var/run: status writes fail (ENOSPC), are logged once, and the loop goes on."""
    with small_tmpfs(tmp_path / "run", "12k") as full:
        with open(full / "filler", "wb") as f:
            try:
                f.write(b"x" * 65536)
                f.flush()
            except OSError:
                pass
        status = full / "status.json"
        d = live(["tun0"], actions=[("0.3", "/bin/true")],
                 extra="<status_file>%s</status_file><status_interval>0.1</status_interval>"
                 % status)
        d.start()
        d.wait_for(lambda: len(d.ticks()) >= 15, 10, "15 ticks")
        failures = [line for _, line in d.lines if str(status) in line and "error" in line]
        assert d.p.poll() is None, d.text()
        assert len(failures) <= 1, failures
        assert_on_schedule(d)
        os.remove(full / "filler")
        d.wait_for(lambda: status.exists(), 5, "the status file once there is room")
        assert d.stop() == 0


# ---------------------------------------------------------------------------------------------
# Signals and reloads

def test_sighup_storm_keeps_running_and_on_schedule(live, tmp_path):
    marks = tmp_path / "marks"
    mark = script(tmp_path, "mark.sh", 'echo "$TUNMON_SILENT" >> %s' % marks)
    d = live(["tun0"], actions=[("1.5", mark)])
    d.start()
    storm_start = time.monotonic()
    for _ in range(100):
        d.signal(signal.SIGHUP)
        time.sleep(0.01)
    time.sleep(1.2)
    assert d.p.poll() is None, d.text()
    assert d.count("config reloaded") >= 1
    assert d.count("reload failed") == 0
    # Ages survive reloads: the action fired once, at 1.5 s of silence.
    assert marks.read_text().split() == ["1.5"], d.text()
    storm_ticks = sum(e for when, e in d.ticks() if when >= storm_start)
    assert storm_ticks >= int((time.monotonic() - storm_start) / INTERVAL) - 4
    assert_on_schedule(d, max_late=0.8)
    assert d.stop() == 0


def test_sighup_while_the_config_is_half_written_keeps_the_old_config(live, tmp_path):
    old_marks = tmp_path / "old"
    new_marks = tmp_path / "new"
    old = script(tmp_path, "old.sh", "echo x >> %s" % old_marks)
    new = script(tmp_path, "new.sh", "echo x >> %s" % new_marks)
    d = live(["tun0"], retries=[("0.2", old)])
    d.start()
    d.wait_for(lambda: old_marks.exists(), 5, "the old retry")
    full = config_xml(["tun0", "tun1"], retries=[("0.2", new)],
                      extra="<status_file>%s</status_file>" % d.status)
    for cut in (len(full) // 3, len(full) // 2, len(full) - 12):
        with open(d.cfg, "w") as f:            # in place, as an editor without rename does
            f.write(full[:cut])
        d.signal(signal.SIGHUP)
        d.wait_for(lambda: d.count("reload failed") >= 1, 5, "the failed reload")
        before = len(old_marks.read_text().split())
        time.sleep(0.5)
        assert len(old_marks.read_text().split()) > before, "old config stopped working"
        assert not new_marks.exists()
    assert d.count("reload failed, keeping the old config") == 3, d.text()
    with open(d.cfg, "w") as f:
        f.write(full)
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: d.count("config reloaded: watching tun0, tun1") == 1, 5, "the reload")
    d.wait_for(lambda: new_marks.exists(), 5, "the new retry")
    assert d.p.poll() is None
    assert d.stop() == 0


def test_two_instances_started_at_the_same_instant_one_runs(tmp_path):
    pidfile = tmp_path / "tunmon.pid"
    extra = "<pidfile>%s</pidfile>" % pidfile
    for attempt in range(4):
        stale = attempt % 2 == 1
        if stale:    # a pidfile left by a dead tunmon: both may think they replaced it
            dead = subprocess.Popen(["true"])
            dead.wait()
            write_file(str(pidfile), "%d\n" % dead.pid)
        twins = [Live(tmp_path / ("%d-%d" % (attempt, i)), ["tun0"], extra=extra)
                 for i in range(2)]
        barrier = threading.Barrier(2)
        errors = []

        def go(twin):
            try:
                barrier.wait()
                twin.start()
            except Exception as err:     # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=go, args=(twin,)) for twin in twins]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            time.sleep(1.0)
            alive = [twin for twin in twins if twin.p and twin.p.poll() is None]
            assert len(alive) == 1, "attempt %d (stale=%s): %d running\n%s" % (
                attempt, stale, len(alive), "\n---\n".join(t.text() for t in twins))
            loser = [twin for twin in twins if twin is not alive[0]][0]
            assert loser.p.returncode in (0, 1), loser.text()
            assert ("already running" in loser.text()) or ("taken over" in loser.text()), \
                loser.text()
            assert tunmon.read_pid(str(pidfile)) == alive[0].p.pid
            assert alive[0].stop() == 0
            assert not pidfile.exists()
        finally:
            for twin in twins:
                twin.kill_everything()


# ---------------------------------------------------------------------------------------------
# In-process faults: spawn failures and the wall clock

class FakeSignals:
    """Stands in for tunmon.Signals: SIGTERM after `seconds`; sleeps on the monotonic clock."""

    mechanism = "test"

    def __init__(self, seconds):
        self.stop_at = time.monotonic() + seconds

    def take(self, signum):
        return signum == signal.SIGTERM and time.monotonic() >= self.stop_at

    def pending(self):
        return False

    def wait_ms(self, milliseconds):
        time.sleep(max(0.0, min(milliseconds / 1000.0,
                                self.stop_at - time.monotonic() + 0.001)))


class FlakyRunner:
    """spawn() fails with EAGAIN, then ENOMEM, then works; every spawn is recorded."""

    name = "flaky"

    def __init__(self, failures):
        self.failures = list(failures)
        self.spawned = []
        self.attempts = 0

    def spawn(self, path, argv, env):
        self.attempts += 1
        if self.failures:
            code = self.failures.pop(0)
            raise OSError(code, os.strerror(code))
        self.spawned.append((time.monotonic(), list(argv)))
        return 100000 + len(self.spawned)

    def poll(self, pid):
        return 0

    def signal_group(self, pid, sig):
        pass

    def group_alive(self, pid):
        return False


def run_in_process(tmp_path, capsys, devices, seconds, runner, **config_kw):
    proc = tmp_path / "net_dev"
    write_file(str(proc), proc_text({d: (100, 1) for d in devices}))
    cfg = tmp_path / "tunmon.xml"
    extra = config_kw.pop("extra", "") + "<status_file>%s</status_file>" % (tmp_path / "st.json")
    write_file(str(cfg), config_xml(devices, extra=extra, **config_kw))
    config = tunmon_xml.load_config(str(cfg))
    daemon = tunmon.Daemon(config, str(proc), True, runner=runner,
                           signals=FakeSignals(seconds))
    started = time.monotonic()
    rc = daemon.run()
    return rc, started, capsys.readouterr().err


def test_spawn_failures_eagain_and_enomem_are_logged_and_the_loop_goes_on(tmp_path, capsys):
    runner = FlakyRunner([11, 11, 12, 12])
    rc, started, err = run_in_process(tmp_path, capsys, ["tun0"], 1.5, runner,
                                      retries=[("0.1", "/bin/true")])
    assert rc == 0
    assert err.count("Resource temporarily unavailable") == 2, err
    assert err.count(os.strerror(12)) == 2, err
    assert runner.attempts >= 12, err
    assert len(runner.spawned) >= 8, err
    # After the failures, one spawn per tick, on schedule.
    times = [when - started for when, _ in runner.spawned]
    assert times[-1] > 1.2, times


def test_wall_clock_jumps_do_not_matter(tmp_path, capsys, monkeypatch):
    """time.time() jumps a day back and forth on every call: ticks, actions and retries
    still follow the monotonic clock."""
    real = time.time
    flip = [0]

    def jumping():
        flip[0] += 1
        return real() + (86400.0 if flip[0] % 2 else -86400.0) * (flip[0] % 5)

    monkeypatch.setattr(time, "time", jumping)
    runner = FlakyRunner([])
    rc, started, err = run_in_process(tmp_path, capsys, ["tun0"], 1.55, runner,
                                      actions=[("0.5", "/bin/true a")],
                                      retries=[("0.3", "/bin/true r")])
    monkeypatch.setattr(time, "time", real)
    assert rc == 0
    fired = [(round(when - started, 2), argv[1]) for when, argv in runner.spawned]
    assert [word for _, word in fired] == ["a", "r", "r", "r"], (fired, err)
    for (when, _), due in zip(fired, [0.5, 0.8, 1.1, 1.4]):
        assert abs(when - due) < 0.15, fired


def libfaketime():
    """The libfaketime preload library (Debian: apt-get install faketime), or None."""
    import glob
    for pattern in ("/usr/lib/*/faketime/libfaketimeMT.so.1", "/usr/lib/faketime/libfaketimeMT.so.1",
                    "/usr/local/lib/faketime/libfaketimeMT.so.1"):
        found = glob.glob(pattern)
        if found:
            return found[0]
    return None


# In CI (.ci/run installs faketime) a missing libfaketime fails instead of skipping.
@pytest.mark.skipif(libfaketime() is None and not os.environ.get("CI"),
                    reason="libfaketime is not installed (apt-get install faketime); the "
                           "in-process wall clock test above still runs")
def test_wall_clock_running_ten_times_fast_under_libfaketime(live, tmp_path):
    """libfaketime moves the wall clock 100 days ahead and runs it ten times fast (the
    monotonic clock is left alone, and it also shortens sleeps tenfold): tunmon still ticks
    every 0.1 real seconds and stops cleanly."""
    d = live(["tun0"], env={"LD_PRELOAD": libfaketime(), "FAKETIME": "+100d x10",
                            "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    d.start()
    t0 = time.monotonic()
    time.sleep(2.0)
    elapsed_ticks = sum(e for when, e in d.ticks() if when > t0)
    assert 14 <= elapsed_ticks <= 24, elapsed_ticks
    assert d.stop() == 0


# ---------------------------------------------------------------------------------------------
# Security: hostile interface names, planted symlinks, writable files

HOSTILE_NAMES = ["a;b", "$(touch${IFS}p)", "`touch${IFS}q`", "q'uo\"te", "x|y&z>w", "*", "-rf",
                 "$IFS", "\\n"]
ARGV_DUMP = r"""#!%s
import json, os, sys
path = os.environ["DUMP_DIR"] + "/dump-%%d-%%s.json" %% (os.getpid(), os.environ["TUNMON_EVENT"])
with open(path + ".tmp", "w") as f:
    json.dump({"argv": sys.argv, "env": {k: v for k, v in os.environ.items()
               if k.startswith(("TUN", "ACTION", "DEVICE"))}}, f)
os.rename(path + ".tmp", path)
""" % sys.executable


@pytest.mark.parametrize("runner", ["posix_spawn", "system", "ffi"])
def test_hostile_names_reach_scripts_as_plain_words(live, tmp_path, runner):
    """Interface names from the config and /proc, and script words, full of shell syntax:
    every script gets them as exact argv words and environment values; nothing runs."""
    env = {"DUMP_DIR": str(tmp_path)}
    if runner == "system":
        env["TUNMON_RUNNER"] = "system"
    elif runner == "ffi":
        if not os.path.exists(os.path.join(SHIM_DIR, "ffi.py")):
            pytest.skip("no ffi stand-in")
        env["TUNMON_RUNNER"] = "ffi"
        env["PYTHONPATH"] = SHIM_DIR
    dump = tmp_path / "dump.py"
    write_file(str(dump), ARGV_DUMP, 0o755)
    words = "'$(touch pwn3)' \"a;b\" '`touch pwn4`' '&&' '|' '>x'"
    d = live(HOSTILE_NAMES, env=env, actions=[("0.2", "%s %s" % (dump, words))],
             posts=["%s --post" % dump])
    d.start()
    d.wait_for(lambda: len(list(tmp_path.glob("dump-*-action.json"))) >= len(HOSTILE_NAMES),
               15, "one action per device")
    d.set_counters({name: (5000, 50) for name in HOSTILE_NAMES})     # all restored at once
    d.wait_for(lambda: list(tmp_path.glob("dump-*-post_restore_any.json")), 10, "the post")
    time.sleep(0.3)
    assert d.stop() == 0
    seen = set()
    for path in tmp_path.glob("dump-*-action.json"):
        data = json.loads(path.read_text())
        argv = data["argv"]
        assert argv[1:7] == ["$(touch pwn3)", "a;b", "`touch pwn4`", "&&", "|", ">x"], argv
        assert argv[7] in HOSTILE_NAMES and argv[8] == "0.2" and len(argv) == 9, argv
        assert data["env"]["TUNMON_DEVICE"] == argv[7]
        for name in HOSTILE_NAMES:
            key = "TUN_DOWN_" + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
            assert key in data["env"], (key, sorted(data["env"]))
        seen.add(argv[7])
    assert seen == set(HOSTILE_NAMES)
    post = json.loads(next(tmp_path.glob("dump-*-post_restore_any.json")).read_text())
    assert post["argv"][1:] == ["--post"] + HOSTILE_NAMES
    for planted in ("p", "q", "pwn3", "pwn4", "x", "w"):
        assert not (tmp_path / planted).exists(), "a shell ran something: %s exists" % planted
    assert not d.leftovers()


def test_pidfile_symlink_is_never_written_through(live, tmp_path):
    """An attacker plants pidfile -> a file of root's: tunmon must not write (or truncate,
    or remove) what the link points to; refusing to start is fine too."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    absent_victim = tmp_path / "absent-victim"
    for target in (victim, absent_victim):
        pidfile = tmp_path / ("tunmon-%s.pid" % target.name)
        os.symlink(str(target), str(pidfile))
        d = live(["tun0"], extra="<pidfile>%s</pidfile>" % pidfile)
        d.start()
        time.sleep(0.5)
        rc = d.stop()
        assert victim.read_text() == "precious\n"
        assert not absent_victim.exists(), "tunmon created a file through a planted symlink"
        assert rc in (0, 1), d.text()
        if os.path.lexists(str(pidfile)):
            assert os.path.islink(str(pidfile)) and os.readlink(str(pidfile)) == str(target)


def test_pidfile_temp_name_cannot_be_planted(live, tmp_path):
    """The old temporary name `<pidfile>.<pid>.tmp` was predictable: plant a symlink there
    (the shell knows the pid tunmon will have, since it execs it) and check nothing is
    written through it."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pidfile = tmp_path / "tunmon.pid"
    d = live(["tun0"], extra="<pidfile>%s</pidfile>" % pidfile)
    command = 'ln -s %s %s.$$.tmp; exec "$@"' % (victim, pidfile)
    d.p = subprocess.Popen(["/bin/sh", "-c", command, "sh", sys.executable, "-u", TUNMON,
                            "-c", d.cfg, "--proc", d.proc, "--trace", "1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True, env=d.env, cwd=d.dir)
    d.threads = [threading.Thread(target=d._read_err, daemon=True),
                 threading.Thread(target=d._drain_out, daemon=True)]
    for t in d.threads:
        t.start()
    d.wait_for(lambda: len(d.ticks()) >= 3 or d.p.poll() is not None, 10, "ticks")
    assert victim.read_text() == "precious\n", "the pid was written through a planted symlink"
    assert d.stop() in (0, 1)
    assert victim.read_text() == "precious\n"


def test_status_file_symlink_is_never_written_through(live, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    status = tmp_path / "status.json"
    os.symlink(str(victim), str(status))
    d = live(["tun0"], actions=[("0.2", "/bin/true")],
             extra="<status_file>%s</status_file><status_interval>0.1</status_interval>"
             % status)
    d.start()
    time.sleep(1.0)
    assert d.stop() == 0
    assert victim.read_text() == "precious\n", "the status was written through a symlink"


@pytest.mark.skipif(os.geteuid() != 0, reason="the warning is for tunmon running as root")
@pytest.mark.parametrize("what", ["config", "script"])
@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_check_warns_about_files_others_can_change(tmp_path, what, mode):
    scr = script(tmp_path, "act.sh", "exit 0")
    cfg = tmp_path / "tunmon.xml"
    write_file(str(cfg), config_xml(["tun0"], actions=[("5", scr)]))
    os.chmod(str(cfg if what == "config" else scr), mode | (0o111 if what == "script" else 0))
    run = subprocess.run([sys.executable, TUNMON, "-c", str(cfg), "--check"],
                         capture_output=True, text=True, timeout=30)
    out = run.stdout + run.stderr
    assert "writable by" in out, out
    name = str(cfg) if what == "config" else scr
    assert any("writable by" in line and name in line for line in out.splitlines()), out


@pytest.mark.skipif(os.geteuid() != 0, reason="the warning is for tunmon running as root")
def test_check_is_quiet_about_root_only_files(tmp_path):
    scr = script(tmp_path, "act.sh", "exit 0", mode=0o755)
    cfg = tmp_path / "tunmon.xml"
    write_file(str(cfg), config_xml(["tun0"], actions=[("5", scr)]), 0o644)
    run = subprocess.run([sys.executable, TUNMON, "-c", str(cfg), "--check"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "writable by" not in run.stdout + run.stderr


# ---- the schedule on a wrapping millisecond clock ------------------------------------------

class SimulatedLoop:
    """What Daemon.loop() needs of a Daemon, on a simulated clock that wraps every 2^30 ms as
    a 32-bit MicroPython's ticks_ms() does; tick() may stall the process for a while."""

    PERIOD = 1 << 30

    def __init__(self, monkeypatch, start_ms, stalls, ticks):
        self.now_ms = start_ms
        self.stalls = stalls            # {tick number: ms that tick takes}
        self.stop_after = ticks
        self.ticks = []                 # (clock ms when the tick ran, elapsed)
        self.config = type("Config", (), {"interval": 60.0, "pidfile": None})
        self.pool = self
        self.signals = self
        period = self.PERIOD
        monkeypatch.setattr(tunmon, "ticks_ms", lambda: self.now_ms % period)
        monkeypatch.setattr(tunmon, "ticks_add", lambda ticks, delta: (ticks + delta) % period)
        monkeypatch.setattr(tunmon, "ticks_diff", lambda later, earlier:
                            (later - earlier + period // 2) % period - period // 2)

    def tick(self, elapsed):
        self.ticks.append((self.now_ms, elapsed))
        self.now_ms += self.stalls.get(len(self.ticks) - 1, 0)

    def pidfile_still_ours(self):
        return True

    def take(self, signum):
        return signum == signal.SIGTERM and len(self.ticks) >= self.stop_after

    def wait_ms(self, milliseconds):
        self.now_ms += milliseconds

    def due_in(self, now):
        return None

    def service(self, now):
        pass


def test_the_schedule_holds_across_the_clock_wrap_and_after_a_long_stall(monkeypatch):
    """Ticks stay 60 s apart across the wrap; a tick late by 150 s counts the two it
    overran as elapsed; a process stopped for 7 days (longer than half the period, so the
    clock cannot tell it from a wait of days) ticks at once when it runs again."""
    day_ms = 86400 * 1000
    start = SimulatedLoop.PERIOD - 100 * 1000            # 100 s before the wrap
    loop = SimulatedLoop(monkeypatch, start, {3: 150 * 1000, 6: 7 * day_ms}, 9)
    tunmon.Daemon.loop(loop)
    times = [(when - start) // 1000 for when, _ in loop.ticks]
    elapsed = [count for _, count in loop.ticks]
    assert times[:6] == [0, 60, 120, 180, 330, 360], times
    assert elapsed[:6] == [0, 1, 1, 1, 2, 1], elapsed
    # tick 6 stalls 7 days: the next one comes as soon as the process runs again
    assert times[7] - times[6] == 7 * 86400 and elapsed[7] == 1, (times, elapsed)
    assert times[8] - times[7] == 60 and elapsed[8] == 1, (times, elapsed)
