"""Replay tests for issue 2: the event rules, driven through `tunmon.py -c CFG --replay TRACE`.

Black-box: every expected line below was worked out by hand from the issue text, not from the
implementation. Each test runs under CPython and MicroPython (the `interp` fixture).

Conventions used by the hand-made traces:
- snapshot k is tick k (t = k x interval); the first snapshot is the baseline (age 0 for all);
- an unwatched `lo` line with counters that change on every snapshot is always present, so a
  reader that looks at the wrong line sees "traffic";
- script paths are absolute and need not exist (replay runs nothing).
"""
import os
import re
import subprocess

import pytest

from conftest import TUNMON, run_tunmon

HEADER = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
)


def dev_line(name, rx_bytes, rx_packets, glued=False):
    """One /proc/net/dev line. `glued`: counter written right after the colon (old kernels)."""
    rest = "%7d    0    0    0     0          0         0 %8d %7d    0    0    0     0       0          0\n" % (
        rx_packets, rx_bytes // 2 + 7, rx_packets // 2 + 3)
    if glued:
        return "%6s:%d %s" % (name, rx_bytes, rest)
    return "%6s: %7d %s" % (name, rx_bytes, rest)


class Trace:
    """Builds a replay trace: snapshots, `#unreadable` and `#tick N` lines."""

    def __init__(self):
        self.parts = []
        self.noise = 0

    def snap(self, devs, order=None, glued=()):
        """devs: {name: (rx_bytes, rx_packets) or None (absent)}; lines in `order` (default dict order)."""
        self.noise += 1
        text = HEADER + dev_line("lo", 5000 + self.noise * 111, 50 + self.noise)
        for name in order or list(devs):
            value = devs[name]
            if value is not None:
                text += dev_line(name, value[0], value[1], glued=name in glued)
        self.parts.append(text)
        return self

    def same(self, n, devs, **kw):
        for _ in range(n):
            self.snap(devs, **kw)
        return self

    def unreadable(self):
        self.parts.append("#unreadable\n")
        return self

    def tick(self, n):
        self.parts.append("#tick %d\n" % n)
        return self

    def comment(self, text):
        self.parts.append("# %s\n" % text)
        return self

    def text(self):
        return "".join(self.parts)


def xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def tm_config(devices, interval=5, actions=(), retries=(), restore=(), post=(), extra="",
              retry_tag="retry", retry_time_tag="interval", raw_scripts=False):
    """XML config text. actions/retries: [(time, script)], restore/post: [script]."""
    esc = (lambda s: s) if raw_scripts else xml_escape
    out = ["<tun_mon>", "  <net_devices>"]
    out += ["    <net_device>%s</net_device>" % d for d in devices]
    out += ["  </net_devices>", "  <interval>%s</interval>" % interval]
    if actions:
        out.append("  <actions>")
        out += ["    <action><time>%s</time><script>%s</script></action>" % (t, esc(s)) for t, s in actions]
        out.append("  </actions>")
    if retries:
        out.append("  <retry_actions>")
        out += ["    <%s><%s>%s</%s><script>%s</script></%s>" % (retry_tag, retry_time_tag, t, retry_time_tag, esc(s), retry_tag)
                for t, s in retries]
        out.append("  </retry_actions>")
    if restore:
        out.append("  <restore_dev>")
        out += ["    <script>%s</script>" % esc(s) for s in restore]
        out.append("  </restore_dev>")
    if post:
        out.append("  <post_restore_any>")
        out += ["    <script>%s</script>" % esc(s) for s in post]
        out.append("  </post_restore_any>")
    if extra:
        out.append(extra)
    out.append("</tun_mon>")
    return "\n".join(out) + "\n"


def write(path, text):
    with open(str(path), "w") as f:
        f.write(text)
    return str(path)


def replay(interp, tmp_path, config_text, trace, *extra_args, expect_rc=0):
    """Runs the replay; returns (stdout lines, stderr text). Asserts exit code and no traceback."""
    cfg = write(tmp_path / "tunmon.xml", config_text)
    tr = write(tmp_path / "trace.txt", trace.text() if isinstance(trace, Trace) else trace)
    res = run_tunmon(interp, "-c", cfg, "--replay", tr, *extra_args)
    assert "Traceback" not in res.stderr, res.stderr
    assert "Traceback" not in res.stdout, res.stdout
    assert "internal error" not in res.stderr, res.stderr
    assert res.returncode == expect_rc, (res.returncode, res.stdout, res.stderr)
    return [l for l in res.stdout.splitlines() if l.strip()], res.stderr


A = "/etc/tunmon/ping.sh"
B = "/etc/tunmon/second.sh"
R = "/etc/tunmon/rebuild.sh"
RS = "/etc/tunmon/restored.sh"
P = "/etc/tunmon/post.sh"
QUIET = {"tun0": (1000, 10)}


# ---------------------------------------------------------------------------------------------
# The issue's own example and the original's cases

def test_issue_example_exact_lines(interp, tmp_path):
    """Interval 5, action at 15 s, retry every 120 s, traffic back at 140 s (issue 2)."""
    cfg = tm_config(["tun0"], 5, actions=[(15, A)], retries=[(120, R)], restore=[RS], post=[P])
    tr = Trace().same(28, QUIET)                 # ticks 0..27 silent
    tr.snap({"tun0": (1500, 15)})                # tick 28 (t=140): traffic
    tr.snap({"tun0": (1600, 16)}).snap({"tun0": (1700, 17)})
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=15 action /etc/tunmon/ping.sh tun0 15",
        "t=135 retry /etc/tunmon/rebuild.sh tun0 135",
        "t=140 restore /etc/tunmon/restored.sh tun0 135",
        "t=140 post_restore_any /etc/tunmon/post.sh tun0",
    ]


def test_age_zero_after_change_and_one_after_none(interp, tmp_path):
    """Action at 1 tick: a changed tick (age 0) fires nothing, the next unchanged tick (age 1) fires."""
    cfg = tm_config(["tun0"], 5, actions=[(5, A)])
    tr = Trace().snap({"tun0": (1000, 10)}).snap({"tun0": (1100, 11)}).snap({"tun0": (1100, 11)})
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=10 action %s tun0 5" % A]


def test_baseline_gives_full_ladder_from_startup(interp, tmp_path):
    """Every device starts at age 0: a device silent from the start fires at exactly its tick count."""
    cfg = tm_config(["tun0"], 5, actions=[(15, A)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(3, QUIET))
    assert lines == []                                           # ticks 0..2: age 2 < 3
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(4, QUIET))
    assert lines == ["t=15 action %s tun0 15" % A]


def test_original_five_seconds_at_interval_two_is_three_ticks(interp, tmp_path):
    cfg = tm_config(["tun0"], 2, actions=[(5, A)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(6, QUIET))
    assert lines == ["t=6 action %s tun0 6" % A]


def test_original_retry_fifteen_at_interval_two_is_eight_ticks(interp, tmp_path):
    """No actions: L = 0, retry 15 s at interval 2 -> 8 ticks -> ages 8, 16, 24."""
    cfg = tm_config(["tun0"], 2, retries=[(15, R)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(25, QUIET))
    assert lines == [
        "t=16 retry %s tun0 16" % R,
        "t=32 retry %s tun0 32" % R,
        "t=48 retry %s tun0 48" % R,
    ]


# ---------------------------------------------------------------------------------------------
# Rounding: ticks = round half up of time / interval, at least 1

def test_rounding_table_interval_five(interp, tmp_path):
    """The original's table: 2 -> 1 (raised), 3 -> 1, 12 -> 2, 13 -> 3, 15 -> 3, 23 -> 5, 120 -> 24."""
    table = [(2, 1), (3, 1), (12, 2), (13, 3), (15, 3), (23, 5), (120, 24)]
    cfg = tm_config(["tun0"], 5, actions=[(t, "/s/a%s.sh" % t) for t, _ in table])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(26, QUIET))
    expected = []
    for ticks in sorted(set(k for _, k in table)):
        for t, k in table:                       # same tick: config order
            if k == ticks:
                expected.append("t=%d action /s/a%s.sh tun0 %d" % (k * 5, t, k * 5))
    assert lines == expected


def test_rounding_is_half_up_not_bankers(interp, tmp_path):
    """7.5 -> 2, 12.5 -> 3 (Python's round() gives 2), 17.4 -> 3, 17.5 -> 4, 22.5 -> 5 (round() gives 4)."""
    table = [("7.5", 2), ("12.5", 3), ("17.4", 3), ("17.5", 4), ("22.5", 5)]
    cfg = tm_config(["tun0"], 5, actions=[(t, "/s/a%s.sh" % t) for t, _ in table])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(7, QUIET))
    assert lines == [
        "t=10 action /s/a7.5.sh tun0 10",
        "t=15 action /s/a12.5.sh tun0 15",
        "t=15 action /s/a17.4.sh tun0 15",
        "t=20 action /s/a17.5.sh tun0 20",
        "t=25 action /s/a22.5.sh tun0 25",
    ]


def test_rounding_decimal_interval_is_exact(interp, tmp_path):
    """Interval 0.1: 0.15 s is 1.5 ticks -> 2, 0.35 s is 3.5 ticks -> 4 (naive float division gives
    1.4999.. and 3.4999.. and rounds down). Seconds print as 0.2 / 0.4, not 0.30000000000000004."""
    cfg = tm_config(["tun0"], "0.1", actions=[("0.15", A), ("0.35", B), ("0.3", R)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(6, QUIET))
    assert lines == [
        "t=0.2 action %s tun0 0.2" % A,
        "t=0.3 action %s tun0 0.3" % R,
        "t=0.4 action %s tun0 0.4" % B,
    ]


def test_decimal_interval_seconds_format(interp, tmp_path):
    """Interval 2.5: 5 s -> 2 ticks (t=5), 7.5 s -> 3 ticks (t=7.5); interval 0.2: 0.5 s -> 3 ticks (t=0.6)."""
    cfg = tm_config(["tun0"], "2.5", actions=[(5, A), ("7.5", B)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(4, QUIET))
    assert lines == ["t=5 action %s tun0 5" % A, "t=7.5 action %s tun0 7.5" % B]
    cfg = tm_config(["tun0"], "0.2", actions=[("0.5", A)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(4, QUIET))
    assert lines == ["t=0.6 action %s tun0 0.6" % A]


def test_time_suffixes(interp, tmp_path):
    """Interval 1m: 90s -> 2 ticks, 2.5m -> 3, 4m -> 4 (L = 4); retry 1h -> 60 ticks -> age 64."""
    cfg = tm_config(["tun0"], "1m", actions=[("90s", "/s/a.sh"), ("2.5m", "/s/b.sh"), ("4m", "/s/c.sh")],
                    retries=[("1h", R)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(66, QUIET))
    assert lines == [
        "t=120 action /s/a.sh tun0 120",
        "t=180 action /s/b.sh tun0 180",
        "t=240 action /s/c.sh tun0 240",
        "t=3840 retry %s tun0 3840" % R,
    ]


def test_time_suffix_hours_and_days(interp, tmp_path):
    cfg = tm_config(["tun0"], "1h", actions=[("1d", A)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(25, QUIET))
    assert lines == ["t=86400 action %s tun0 86400" % A]


# ---------------------------------------------------------------------------------------------
# actions

def test_several_actions_at_one_tick_run_in_config_order(interp, tmp_path):
    """13 s and 15 s both round to 3 ticks: both run, in config order; 12 s (2 ticks) comes first."""
    cfg = tm_config(["tun0"], 5, actions=[(13, "/s/first.sh"), (15, "/s/second.sh"), (12, "/s/early.sh")])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(8, QUIET))
    assert lines == [
        "t=10 action /s/early.sh tun0 10",
        "t=15 action /s/first.sh tun0 15",
        "t=15 action /s/second.sh tun0 15",
    ]


def test_action_once_per_spell_and_again_next_spell(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace().same(10, QUIET)                 # ticks 0..9 silent: action at tick 2 only
    tr.snap({"tun0": (2000, 20)})                # tick 10: traffic (restore, silence 9 ticks = 45 s)
    tr.same(4, {"tun0": (2000, 20)})             # ticks 11..14 silent: action at tick 12
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=10 action %s tun0 10" % A,
        "t=50 restore %s tun0 45" % RS,
        "t=60 action %s tun0 10" % A,
    ]


def test_action_args_and_event_words(interp, tmp_path):
    """argv = script words then device then silent seconds; words keep their order."""
    cfg = tm_config(["tun0"], 5, actions=[(5, "/usr/bin/logger -t tunmon --")])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(2, QUIET))
    assert lines == ["t=5 action /usr/bin/logger -t tunmon -- tun0 5"]


def test_short_spell_is_no_restore(interp, tmp_path):
    """A silence that never reached the first action is not a restore (the original fired restore)."""
    cfg = tm_config(["tun0"], 5, actions=[(15, A)], restore=[RS], post=[P])
    tr = Trace().same(3, QUIET)                  # ages 1, 2
    tr.snap({"tun0": (1100, 11)})                # traffic: not down, no restore
    tr.same(4, {"tun0": (1100, 11)})             # ages 1..4 -> action at tick 6
    tr.snap({"tun0": (1200, 12)})                # tick 8: restore, silence 4 ticks
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=30 action %s tun0 15" % A,
        "t=40 restore %s tun0 20" % RS,
        "t=40 post_restore_any %s tun0" % P,
    ]


# ---------------------------------------------------------------------------------------------
# retries

def test_retries_at_l_plus_multiples_of_each_period(interp, tmp_path):
    """Actions 10 s and 20 s -> L = 4 ticks; retry r1 every 2 ticks fires at ages 6, 8, 10, 12;
    r2 every 3 ticks at ages 7, 10, 13; at age 10 both, in config order."""
    cfg = tm_config(["tun0"], 5, actions=[(20, "/s/a2.sh"), (10, "/s/a1.sh")],
                    retries=[(10, "/s/r1.sh"), (15, "/s/r2.sh")])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(14, QUIET))      # ticks 0..13
    assert lines == [
        "t=10 action /s/a1.sh tun0 10",
        "t=20 action /s/a2.sh tun0 20",
        "t=30 retry /s/r1.sh tun0 30",
        "t=35 retry /s/r2.sh tun0 35",
        "t=40 retry /s/r1.sh tun0 40",
        "t=50 retry /s/r1.sh tun0 50",
        "t=50 retry /s/r2.sh tun0 50",
        "t=60 retry /s/r1.sh tun0 60",
        "t=65 retry /s/r2.sh tun0 65",
    ]


def test_retries_stop_when_traffic_returns_and_restart_with_new_spell(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(5, A)], retries=[(10, R)], restore=[RS])
    tr = Trace().same(6, QUIET)                  # ages 1..5: action@1, retries@3,5
    tr.snap({"tun0": (1001, 10)})                # tick 6: bytes only increased -> traffic
    tr.same(4, {"tun0": (1001, 10)})             # ticks 7..10: ages 1..4: action@7, retry@9
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=5 action %s tun0 5" % A,
        "t=15 retry %s tun0 15" % R,
        "t=25 retry %s tun0 25" % R,
        "t=30 restore %s tun0 25" % RS,
        "t=35 action %s tun0 5" % A,
        "t=45 retry %s tun0 15" % R,
    ]


def test_retry_only_ladder_marks_down(interp, tmp_path):
    """No actions: L = 0; a retry alone makes the device down, so its traffic is a restore."""
    cfg = tm_config(["tun0"], 5, retries=[(10, R)], restore=[RS], post=[P])
    tr = Trace().same(4, QUIET).snap({"tun0": (1000, 11)})   # packets only increased -> traffic
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=10 retry %s tun0 10" % R,
        "t=20 restore %s tun0 15" % RS,
        "t=20 post_restore_any %s tun0" % P,
    ]


# ---------------------------------------------------------------------------------------------
# restore_dev / post_restore_any

def test_restore_scripts_in_config_order_then_post_scripts(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(5, A)], restore=["/s/rs1.sh", "/s/rs2.sh"],
                    post=["/s/p1.sh", "/s/p2.sh x"])
    tr = Trace().same(3, QUIET).snap({"tun0": (1100, 11)})
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=5 action %s tun0 5" % A,
        "t=15 restore /s/rs1.sh tun0 10",
        "t=15 restore /s/rs2.sh tun0 10",
        "t=15 post_restore_any /s/p1.sh tun0",
        "t=15 post_restore_any /s/p2.sh x tun0",
    ]


def test_post_restore_any_once_per_tick_with_restored_names_in_config_order(interp, tmp_path):
    """Config order wan6, tun0, tun1: wan6 and tun0 come back at tick 5 -> one post call
    `wan6 tun0` (config order, not file order); tun1 at tick 6 -> another with `tun1`."""
    devs = ["wan6", "tun0", "tun1"]
    cfg = tm_config(devs, 5, actions=[(10, A)], restore=[RS], post=[P])
    base = {"tun1": (300, 3), "tun0": (100, 1), "wan6": (200, 2)}  # file order differs
    tr = Trace().same(5, base)                   # ticks 0..4, all act at tick 2
    s5 = dict(base, tun0=(150, 2), wan6=(250, 3))
    tr.snap(s5)                                  # tick 5: traffic wan6 + tun0
    tr.snap(dict(s5, tun1=(400, 4)))             # tick 6: traffic tun1 (wan6, tun0 age 1)
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines[:3] == ["t=10 action %s wan6 10" % A, "t=10 action %s tun0 10" % A,
                         "t=10 action %s tun1 10" % A]
    assert sorted(lines[3:5]) == sorted(["t=25 restore %s wan6 20" % RS, "t=25 restore %s tun0 20" % RS])
    assert lines[5:] == [
        "t=25 post_restore_any %s wan6 tun0" % P,
        "t=30 restore %s tun1 25" % RS,
        "t=30 post_restore_any %s tun1" % P,
    ]


def test_no_post_restore_any_without_a_restore(interp, tmp_path):
    """Traffic on devices that were never down: no restore and no post_restore_any."""
    cfg = tm_config(["tun0", "tun1"], 5, actions=[(30, A)], restore=[RS], post=[P])
    tr = Trace()
    for k in range(8):
        tr.snap({"tun0": (1000 + k * (k % 3), 10 + k * (k % 3)), "tun1": (500 + 7 * k, 5 + k)})
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == []


def test_post_restore_any_runs_without_restore_dev_scripts(interp, tmp_path):
    """Only post_restore_any configured: it still runs when a down device comes back."""
    cfg = tm_config(["tun0"], 5, actions=[(5, A)], post=[P])
    tr = Trace().same(2, QUIET).snap({"tun0": (1100, 11)})
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=5 action %s tun0 5" % A, "t=10 post_restore_any %s tun0" % P]


# ---------------------------------------------------------------------------------------------
# counter reset, absent devices

def test_counter_reset_to_zero_is_not_traffic(interp, tmp_path):
    """Counters fall to 0 (interface re-created): new baseline, not traffic (0 packets); the
    spell goes on; later packets are traffic relative to the new baseline."""
    cfg = tm_config(["tun0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace().same(4, QUIET)                  # action at tick 2
    tr.same(2, {"tun0": (0, 0)})                 # ticks 4, 5: reset, silent (ages 4, 5)
    tr.snap({"tun0": (60, 1)})                   # tick 6: traffic -> restore, silence 5 ticks
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=10 action %s tun0 10" % A, "t=30 restore %s tun0 25" % RS]


def test_counter_reset_with_packets_is_traffic_and_new_baseline(interp, tmp_path):
    """Counters drop to (300, 3): traffic (packets > 0), and (300, 3) is the new baseline, so the
    next unchanged reading is silence (not another reset)."""
    cfg = tm_config(["tun0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace().same(4, QUIET)                  # action at tick 2, age 3 at tick 3
    tr.same(4, {"tun0": (300, 3)})               # tick 4 traffic; ticks 5..7 silent: action at 6
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=10 action %s tun0 10" % A,
        "t=20 restore %s tun0 15" % RS,
        "t=30 action %s tun0 10" % A,
    ]


def test_unknown_device_is_silent(interp, tmp_path):
    """A device never present in the file is silent from the start (it gets the whole ladder)."""
    cfg = tm_config(["tun0", "ghost"], 5, actions=[(10, A)])
    tr = Trace()
    for k in range(4):
        tr.snap({"tun0": (1000 + k, 10 + k)})
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=10 action %s ghost 10" % A]


def test_absent_device_is_silent_and_reappearing_with_zero_packets_is_not_traffic(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace()
    for k in range(3):
        tr.snap({"tun0": (1000 + 100 * k, 10 + k)})   # ticks 0..2: traffic (age 0)
    tr.same(3, {"tun0": None})                   # ticks 3..5 absent: ages 1..3, action at tick 4
    tr.same(2, {"tun0": (0, 0)})                 # ticks 6, 7: back with 0 packets: silent, ages 4, 5
    tr.snap({"tun0": (90, 1)})                   # tick 8: traffic -> restore, silence 5 ticks
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=20 action %s tun0 10" % A, "t=40 restore %s tun0 25" % RS]


def test_absent_device_reappearing_with_packets_is_traffic(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace().same(2, QUIET)                  # ages 0, 1
    tr.same(2, {"tun0": None})                   # ticks 2, 3 absent: action at 2
    tr.same(2, {"tun0": (80, 2)})                # tick 4: back with packets -> traffic (restore 15 s)
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=10 action %s tun0 10" % A, "t=20 restore %s tun0 15" % RS]


def test_absent_device_reappearing_with_same_counters_follows_reset_rule(interp, tmp_path):
    """Issue: 'when it reappears the same reset rule applies': new values become the baseline and
    count as traffic when RX packets > 0 - even if they equal the values seen before it vanished."""
    cfg = tm_config(["tun0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace().same(2, QUIET).same(2, {"tun0": None}).same(2, QUIET)
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=10 action %s tun0 10" % A, "t=20 restore %s tun0 15" % RS]


# ---------------------------------------------------------------------------------------------
# unreadable and skipped ticks

def test_unreadable_tick_judges_nobody(interp, tmp_path):
    """Tick 3 unreadable: ages do not advance, nothing fires; tick 4 is age 3 -> action at t=20
    with 15 silent seconds."""
    cfg = tm_config(["tun0"], 5, actions=[(15, A)])
    tr = Trace().same(3, QUIET).unreadable().snap(QUIET)
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=20 action %s tun0 15" % A]


def test_several_unreadable_ticks_then_traffic(interp, tmp_path):
    """Silent ticks 1..5 (action at 3), ticks 6..8 unreadable, tick 9 traffic: restore with the
    silence counted in judged ticks only (5 ticks = 25 s); nothing fires during the gap
    although the retry (age 5 + 1) would be due."""
    cfg = tm_config(["tun0"], 5, actions=[(15, A)], retries=[(5, R)], restore=[RS], post=[P])
    tr = Trace().same(6, QUIET)                  # ages 1..5: action@3, retry@4,5
    tr.unreadable().unreadable().unreadable()
    tr.snap({"tun0": (1100, 11)})                # tick 9
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=15 action %s tun0 15" % A,
        "t=20 retry %s tun0 20" % R,
        "t=25 retry %s tun0 25" % R,
        "t=45 restore %s tun0 25" % RS,
        "t=45 post_restore_any %s tun0" % P,
    ]


def test_unreadable_baseline_tick(interp, tmp_path):
    """The very first tick unreadable: the first readable snapshot (tick 1) is the baseline."""
    cfg = tm_config(["tun0"], 5, actions=[(10, A)])
    tr = Trace().unreadable().same(3, QUIET)     # baseline at tick 1; ages 1, 2 at ticks 2, 3
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=15 action %s tun0 10" % A]


def test_skipped_ticks_never_lose_an_action(interp, tmp_path):
    """Ticks 2..19 skipped: at tick 20 (age 20) both actions fire (first tick with age >= count),
    the retry (L = 6, P = 4: ages 10, 14, 18, 22, ...) fires once, not once per missed point;
    the next retry is at age 22."""
    cfg = tm_config(["tun0"], 5, actions=[(15, "/s/a1.sh"), (30, "/s/a2.sh")], retries=[(20, R)])
    tr = Trace().same(2, QUIET).comment("router was busy").tick(20).same(3, QUIET)   # ticks 20, 21, 22
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == [
        "t=100 action /s/a1.sh tun0 100",
        "t=100 action /s/a2.sh tun0 100",
        "t=100 retry %s tun0 100" % R,
        "t=110 retry %s tun0 110" % R,
    ]


def test_skipped_ticks_with_traffic_in_the_snapshot(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace().same(4, QUIET)                  # action at tick 2, age 3 at tick 3
    tr.tick(10).snap({"tun0": (1100, 11)})       # tick 10: traffic
    tr.same(2, {"tun0": (1100, 11)})             # ticks 11, 12: ages 1, 2 -> action at 12
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines[0] == "t=10 action %s tun0 10" % A
    assert len(lines) == 3
    assert re.match(r"^t=50 restore %s tun0 \d+$" % re.escape(RS), lines[1]), lines
    assert lines[2] == "t=60 action %s tun0 10" % A


def test_comment_lines_are_ignored(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(10, A)])
    tr = Trace().comment("recorded on the router").snap(QUIET).comment("x").snap(QUIET).snap(QUIET)
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=10 action %s tun0 10" % A]


def test_snapshots_that_grow_past_the_buffer(interp, tmp_path):
    """Snapshots grow from 12 interfaces to 122 at tick 2 (14 KB, several times the 4 KB
    buffer they start in).  tun0 is on the first line and falls silent at tick 3, wg0 on the
    last line receives all along: only a reader that kept every snapshot whole fires the
    action and the restore for tun0 alone."""

    def snap(tr, tick, tun0_packets):
        others = ["eth%d" % i for i in range(10 if tick < 2 else 120)]
        devs = {"tun0": (100 * tun0_packets, tun0_packets)}
        devs.update((name, (1000 * tick + i, 10 * tick + i)) for i, name in enumerate(others))
        devs["wg0"] = (500 * tick + 1, 5 * tick + 1)
        return tr.snap(devs)

    cfg = tm_config(["tun0", "wg0"], 5, actions=[(10, A)], restore=[RS])
    tr = Trace()
    for tick, packets in enumerate([1, 2, 3, 3, 3, 4]):
        snap(tr, tick, packets)
    assert len(tr.parts[-1]) > 3 * 4096
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=20 action %s tun0 10" % A, "t=25 restore %s tun0 10" % RS]


READ_LINES = """
import sys
sys.path.insert(0, %r)
import tunmon
data = bytes(sys.argv[2], "utf-8")
with open(sys.argv[1], "wb") as f:
    f.write(data)
with open(sys.argv[1], "rb") as f:
    lines = [bytes(line) for line in tunmon.read_lines(f, chunk_size=8)]
print(repr(lines == data.splitlines(True)) + " " + repr(len(lines)))
"""


def test_read_lines_at_and_around_the_window_size(interp, tmp_path):
    """Lines of 7, 8, 9 and 16 bytes with an 8-byte window (the newline counted), a line far
    longer than it, and a last line without a newline: every line comes out whole."""
    data = "abcdef\n" + "abcdefg\n" + "abcdefgh\n" + "a" * 15 + "\n\n" + "x" * 50 + "\n" + "end"
    script = tmp_path / "read_lines.py"
    script.write_text(READ_LINES % os.path.dirname(os.path.abspath(TUNMON)))
    res = subprocess.run(list(interp) + [str(script), str(tmp_path / "data"), data],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["True", "7"], res.stdout + res.stderr


def test_a_trace_without_a_final_newline(interp, tmp_path):
    """The last device line of the last snapshot has no newline: its traffic still counts."""
    cfg = tm_config(["tun0"], 5, actions=[(5, A)], restore=[RS])
    tr = Trace().snap({"tun0": (100, 1)}).snap({"tun0": (100, 1)}).snap({"tun0": (200, 2)})
    text = tr.text()
    assert text.endswith("\n") and text.rstrip("\n").endswith(dev_line("tun0", 200, 2).rstrip("\n"))
    lines, _ = replay(interp, tmp_path, cfg, text.rstrip("\n"))
    assert lines == ["t=5 action %s tun0 5" % A, "t=10 restore %s tun0 5" % RS]


# ---------------------------------------------------------------------------------------------
# device names and the /proc/net/dev reader

def test_device_names_with_dot_underscore_dash_and_no_substring_match(interp, tmp_path):
    """Silent eth0.2, wg_x, 6in4-wan6, br-lan and eth0; busy veth0 (listed before eth0 in the
    file) and br-lan.5 must not make eth0 / br-lan look busy."""
    devs = ["eth0.2", "wg_x", "6in4-wan6", "br-lan", "eth0"]
    cfg = tm_config(devs, 5, actions=[(10, A)])
    tr = Trace()
    order = ["veth0", "br-lan.5", "eth0", "eth0.2", "wg_x", "6in4-wan6", "br-lan"]
    for k in range(3):
        s = {d: (4000 + len(d), 40) for d in devs}
        s["veth0"] = (1000 + 100 * k, 10 + k)
        s["br-lan.5"] = (2000 + 100 * k, 20 + k)
        tr.snap(s, order=order, glued=("eth0.2",))
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=10 action %s %s 10" % (A, d) for d in devs]


def test_busy_device_with_glued_counter_is_traffic(interp, tmp_path):
    """Old kernels print `eth0:123456789 ...` with no space: still parsed."""
    cfg = tm_config(["eth0"], 5, actions=[(5, A)])
    tr = Trace()
    for k in range(4):
        tr.snap({"eth0": (123456789 + k * 1000, 1000 + k)}, glued=("eth0",))
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == []


def test_trace_zero_prints_nothing_per_tick(interp, tmp_path):
    cfg = tm_config(["tun0"], 5, actions=[(10, A)])
    lines, err = replay(interp, tmp_path, cfg, Trace().same(12, QUIET), "--trace", "0")
    assert lines == ["t=10 action %s tun0 10" % A]
    assert "after 5s" not in err
    assert len(err.splitlines()) < 3, err


# ---------------------------------------------------------------------------------------------
# script words in the replay output

def test_script_words_quotes_and_no_shell(interp, tmp_path):
    """Quotes group and are removed; shell syntax passes through literally; newlines and tabs in
    the element are whitespace."""
    script = "\n      /s/rec.sh\t'a b'  \"c  d\" ; $(id) `x` $HOME * >out\n    "
    cfg = tm_config(["tun0"], 5, actions=[(5, script)])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(2, QUIET))
    assert lines == ["t=5 action /s/rec.sh a b c  d ; $(id) `x` $HOME * >out tun0 5"]


def test_script_text_entities_cdata_char_refs_and_comments(interp, tmp_path):
    script = "/s/rec.sh &amp;&lt;&gt; &#65;&#x42;c <![CDATA[<raw>&amp;]]> one<!-- c -->two"
    cfg = tm_config(["tun0"], 5, actions=[(5, script)], raw_scripts=True)
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(2, QUIET))
    assert lines == ["t=5 action /s/rec.sh &<> ABc <raw>&amp; onetwo tun0 5"]


def test_device_name_from_entities_and_whitespace(interp, tmp_path):
    cfg = tm_config([" 6in4-wan6 \n", "wg&#95;x"], 5, actions=[(5, A)])
    tr = Trace().same(2, {"6in4-wan6": (10, 1), "wg_x": (10, 1)})
    lines, _ = replay(interp, tmp_path, cfg, tr)
    assert lines == ["t=5 action %s 6in4-wan6 5" % A, "t=5 action %s wg_x 5" % A]


def test_replay_missing_trace_file_is_a_clean_error(interp, tmp_path):
    cfg = write(tmp_path / "tunmon.xml", tm_config(["tun0"], 5, actions=[(5, A)]))
    res = run_tunmon(interp, "-c", cfg, "--replay", str(tmp_path / "nope.txt"))
    assert res.returncode in (1, 2), res
    assert "Traceback" not in res.stderr
    err = res.stderr.strip().splitlines()
    assert err == ["error: %s: cannot read the trace: No such file or directory"
                   % (tmp_path / "nope.txt")], res.stderr


@pytest.mark.parametrize("mode", ["--check", "--replay"])
def test_an_output_that_cannot_be_written_is_named_as_such(interp, tmp_path, mode):
    cfg = write(tmp_path / "tunmon.xml", tm_config(["tun0"], 5, actions=[(5, A)]))
    trace = write(tmp_path / "trace.txt", Trace().same(3, QUIET).text())
    with open("/dev/full", "w") as full:
        res = run_tunmon(interp, "-c", cfg, *([mode, trace] if mode == "--replay" else [mode]),
                         stdout=full, stderr=subprocess.PIPE, capture_output=False)
    assert (res.returncode, res.stderr) == (2, "error: cannot write the output: "
                                               "No space left on device\n")


def test_replay_is_deterministic_and_runs_nothing(interp, tmp_path):
    """Replay never runs a script: a real script that would create a file is not executed."""
    marker = tmp_path / "ran"
    script = tmp_path / "mark.sh"
    script.write_text("#!/bin/sh\ntouch %s\n" % marker)
    os.chmod(str(script), 0o755)
    cfg = tm_config(["tun0"], 5, actions=[(5, str(script))])
    lines, _ = replay(interp, tmp_path, cfg, Trace().same(3, QUIET))
    assert lines == ["t=5 action %s tun0 5" % script]
    assert not marker.exists()
