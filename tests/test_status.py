"""Status file, statistics stream, `--status` table and the rpcd plugin (issue 6).

A real Monitor is driven through an outage with hand-made counters, a Reporter watches it,
and the status file and stats lines are checked tick by tick against values worked out by
hand from the issue.  The same driver runs under MicroPython, which must write the very same
bytes.  The rpcd plugin is run the way rpcd runs it: `list`, then `call status`.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TUNMON, interpreter_command, run_tunmon, small_tmpfs

sys.path.insert(0, ROOT)
import tunmon  # noqa: E402
import tunmon_status  # noqa: E402
import tunmon_xml  # noqa: E402
from tunmon_status import (Reporter, counted, format_amount, format_duration,  # noqa: E402
                           per_second_scaled, show_status, smoothed,
                           smoothing_weight)

PLUGIN = os.path.join(ROOT, "rpcd", "tunmon")
ACL = os.path.join(ROOT, "rpcd", "tunmon.acl.json")
SH = ["busybox", "sh"] if shutil.which("busybox") else ["sh"]
START = 1700000000.0

LADDER = """
  <actions><action><time>15</time><script>/bin/true</script></action></actions>
  <retry_actions><retry><interval>20</interval><script>/bin/true</script></retry></retry_actions>
  <restore_dev><script>/bin/true</script></restore_dev>
  <post_restore_any><script>/bin/true</script></post_restore_any>
"""


def make_config(directory, devices=("tun0", "wg0"), interval=5, status_interval=10, stats=""):
    """interval 5 s; action at 15 s (3 ticks); retries every 20 s after it (ages 7, 11, ...)."""
    text = ("<tun_mon><net_devices>%s</net_devices><interval>%s</interval>"
            "<status_file>%s/run/status.json</status_file><status_interval>%s</status_interval>"
            "%s%s</tun_mon>" % ("".join("<net_device>%s</net_device>" % d for d in devices),
                                interval, directory, status_interval, LADDER, stats))
    return tunmon_xml.parse_config(text, "%s/tunmon.xml" % directory)


class Counters:
    """What the daemon's CounterReader holds after a read: lists in config device order."""

    def __init__(self, count):
        self.rx_bytes = [0] * count
        self.rx_packets = [0] * count
        self.tx_bytes = [0] * count
        self.tx_packets = [0] * count
        self.link = [tunmon.LINK_UNKNOWN] * count
        self.replied = bytearray(count)

    def load_tx(self):
        """The tests set TX directly."""


class Run:
    """A Monitor and a Reporter driven tick by tick, as Daemon.tick() does."""

    def __init__(self, config, pid=4242):
        self.config = config
        self.monitor = tunmon.Monitor(config)
        self.counters = Counters(len(config.devices))
        self.reporter = Reporter(config, pid, self.wall_clock)
        self.tick = -1
        self.wall = None        # the wall time observe() sees

    def step(self, elapsed=1, **traffic):
        """Add traffic {device: (rx bytes, rx packets, tx bytes, tx packets)} and judge."""
        names = self.config.devices
        for name, amounts in traffic.items():
            i = names.index(name)
            if amounts is None:
                self.counters.rx_bytes[i] = self.counters.rx_packets[i] = -1
                self.counters.tx_bytes[i] = self.counters.tx_packets[i] = -1
                continue
            for column, amount in zip((self.counters.rx_bytes, self.counters.rx_packets,
                                       self.counters.tx_bytes, self.counters.tx_packets),
                                      amounts):
                column[i] = max(column[i], 0) + amount
        self.tick += elapsed if self.tick >= 0 else 1
        self.monitor.judge(elapsed if self.tick else 0, self.counters)
        self.observe(self.now())

    def observe(self, wall, counters=None):
        """Reporter.observe() of the last judge(), at wall time `wall`."""
        self.wall = wall
        self.reporter.observe(self.monitor, counters if counters is not None else self.counters)

    def wall_clock(self):
        return self.wall

    def now(self):
        return START + self.tick * self.config.interval

    def status(self):
        with open(self.config.status_file) as f:
            return json.load(f)


def device(status, name):
    return [dev for dev in status["devices"] if dev["name"] == name][0]


# ---- status through an outage ----------------------------------------------------------------

# tun0 receives at ticks 0 and 1, is silent from tick 2, the action fires at tick 4 (15 s),
# the retry at tick 8 (age 7 = 3 + 4), traffic returns at tick 11.  wg0 is steadily busy.
TUN0_TRAFFIC = (1000, 10, 500, 5)
WG0_TRAFFIC = (2000, 4, 0, 0)
OUTAGE = range(2, 11)


def outage_run(tmp_path, ticks=13, **kw):
    run = Run(make_config(str(tmp_path), **kw))
    seen = []
    for tick in range(ticks):
        traffic = {"wg0": WG0_TRAFFIC, "tun0": (0, 0, 500, 5) if tick in OUTAGE else TUN0_TRAFFIC}
        run.step(**traffic)
        seen.append(run.status())
    return run, seen


def test_status_through_an_outage(tmp_path):
    run, seen = outage_run(tmp_path)
    at = lambda tick: START + 5 * tick   # noqa: E731

    # Written at the start, on every state change or event, and every 10 s (2 ticks) otherwise.
    written = [tick for tick, status in enumerate(seen) if status["updated"] == at(tick)]
    assert written == [0, 2, 4, 6, 8, 10, 11]

    expected_tun0 = {
        # tick: (state, since tick, silent s, actions, retries, restores, last event)
        0: ("up", 0, 0, 0, 0, 0, None),
        2: ("silent", 2, 5, 0, 0, 0, None),
        4: ("down", 4, 15, 1, 0, 0, ("action", 1, 4)),
        6: ("down", 4, 25, 1, 0, 0, ("action", 1, 4)),
        8: ("down", 4, 35, 1, 1, 0, ("retry", 1, 8)),
        10: ("down", 4, 45, 1, 1, 0, ("retry", 1, 8)),
        11: ("up", 11, 0, 1, 1, 1, ("restore", None, 11)),
    }
    for tick, (state, since, silent, actions, retries, restores, event) in expected_tun0.items():
        status = seen[tick]
        tun0 = device(status, "tun0")
        assert (tun0["state"], tun0["since"], tun0["silent"]) == (state, at(since), silent), tick
        assert (tun0["actions"], tun0["retries"], tun0["restores"], tun0["probes"]) == \
            (actions, retries, restores, 0), tick
        assert tun0["last_event"] == (event and {"event": event[0], "step": event[1],
                                                 "time": at(event[2])}), tick
        received = min(tick + 1, 2) + (tick >= 11)
        assert tun0["rx"]["bytes"] == 1000 * received and tun0["rx"]["packets"] == 10 * received
        assert tun0["tx"]["bytes"] == 500 * (tick + 1) and tun0["tx"]["packets"] == 5 * (tick + 1)
        wg0 = device(status, "wg0")
        assert (wg0["state"], wg0["since"], wg0["silent"]) == ("up", START, 0)
        assert (wg0["rx"]["bytes"], wg0["tx"]["bytes"]) == (2000 * (tick + 1), 0)
        assert status["post_restore_any"] == (
            {"time": at(11), "exit": None} if tick >= 11 else None)

    top = seen[11]
    assert top["version"] == 1 and top["pid"] == 4242 and top["state"] == "running"
    assert (top["started"], top["interval"], top["status_interval"]) == (START, 5, 10)
    assert top["expires"] == at(11) + 30
    assert seen[12] == seen[11]     # tick 12: nothing changed and nothing due


def test_rates_since_the_previous_write_and_smoothed(tmp_path):
    """Rates cover the time since the counters were last loaded: here, with no statistics,
    since the previous status write (ticks 0, 2, 4, 6, 8, 10 and 11), not the last tick."""
    run, seen = outage_run(tmp_path)
    # tick 0 is the baseline: nothing to measure a rate against yet
    assert device(seen[0], "wg0")["rx"] == {"bytes": 2000, "packets": 4, "rate": None,
                                            "pps": None, "rate_avg": None, "pps_avg": None}
    # wg0: 2000 bytes and 4 packets per 5 s tick, steadily: every rate is exactly that, over
    # two ticks (4000 B in 10 s) as over one (tick 11: 2000 B in 5 s)
    for status in seen[2:]:
        assert device(status, "wg0")["rx"]["rate"] == 400.0
        assert device(status, "wg0")["rx"]["pps"] == 0.8
        assert device(status, "wg0")["rx"]["rate_avg"] == pytest.approx(400.0)
    # tun0 at tick 2: silent in the last tick, but since the write at tick 0 it received
    # 1000 B and 10 packets (tick 1) in 10 s: 100 B/s and 1 packet/s, not 0; it sent 2 x 500 B
    tun0 = device(seen[2], "tun0")
    assert (tun0["rx"]["rate"], tun0["rx"]["pps"]) == (100.0, 1.0)
    assert (tun0["tx"]["rate"], tun0["tx"]["pps"]) == (100.0, 1.0)
    # tun0 at tick 4: nothing received since the write at tick 2, 1000 B and 10 packets sent
    # in those 10 s
    tun0 = device(seen[4], "tun0")
    assert (tun0["rx"]["rate"], tun0["tx"]["rate"], tun0["tx"]["pps"]) == (0.0, 100.0, 1.0)
    # tun0 at tick 11, one tick after the write at tick 10: 1000 B and 10 packets in 5 s
    tun0 = device(seen[11], "tun0")
    assert (tun0["rx"]["rate"], tun0["rx"]["pps"]) == (200.0, 2.0)
    # its smoothed RX rate, by hand: first update at tick 2 (2 ticks, 1000 B in 10 s -> 100 B/s
    # starts the average), then tick 4 (10 s at 0 B/s), then ticks 6 and 8 and 10, then tick 11
    # (1000 B in 5 s)
    average = 100.0
    for seconds, rate in ((10, 0.0), (10, 0.0), (10, 0.0), (10, 0.0), (5, 200.0)):
        average += (1 - pow(2.718281828459045, -seconds / 60.0)) * (rate - average)
    assert tun0["rx"]["rate_avg"] == pytest.approx(average, abs=0.001)


def test_rate_arithmetic():
    assert counted(1500, 1000) == 500
    assert counted(300, 1000) == 300      # counter reset: counted from 0
    assert counted(300, -1) == 300        # was absent: came back with new counters
    assert counted(-1, 1000) is None      # absent now
    # Rates in millionths per second, weights in billionths
    assert smoothed(None, 50000000, smoothing_weight(10000)) == 50000000
    assert smoothed(50000000, None, smoothing_weight(10000)) is None
    # one update over 120 s equals two over 60 s each at the same rate
    once = smoothed(10000000, 100000000, smoothing_weight(120000))
    twice = smoothed(smoothed(10000000, 100000000, smoothing_weight(60000)), 100000000,
                     smoothing_weight(60000))
    assert once == pytest.approx(twice, abs=2)
    assert once == pytest.approx((100.0 - 90.0 * pow(2.718281828459045, -2)) * 1e6, abs=2)
    # 1 Gbit/s that stops, for a minute: the float formula to 1 B/s with a write every 10 s,
    # to 1 part in 10^6 with one every 0.1 s (the weight has 9 decimals)
    for seconds, tolerance in ((10, 1.0), (0.1, 125.0)):
        exact = 125e6
        integer = 125 * 10 ** 12
        for _ in range(int(60 / seconds)):
            exact += (1 - pow(2.718281828459045, -seconds / 60.0)) * (0.0 - exact)
            integer = smoothed(integer, 0, smoothing_weight(int(seconds * 1000)))
        assert integer / 1e6 == pytest.approx(exact, abs=tolerance), seconds
    assert per_second_scaled(1000, 3000, 1000000) == 333333333     # 333.333333 B/s
    assert per_second_scaled(2, 3, 1000000) == 666666667           # rounded, not cut
    assert per_second_scaled(1999, 2001, 1000) == 999000           # rounded once: 999.000 B/s
    assert (per_second_scaled(None, 1000, 1000), per_second_scaled(5, 0, 1000)) == (None, None)


def test_skipped_ticks_reset_and_absent_devices(tmp_path):
    """Whatever ticks passed or were skipped, a rate is the amount counted since the previous
    write over the seconds since it."""
    run = Run(make_config(str(tmp_path), devices=("tun0",)))   # 5 s ticks, written every 10 s
    run.step(tun0=(1000, 10, 100, 1))                   # tick 0: written, the base
    run.step(tun0=(2000, 20, 0, 0))                     # tick 1: quiet, not written
    assert run.status()["updated"] == START
    run.step(elapsed=3, tun0=(3000, 30, 0, 0))       # three ticks in one: tick 4, due
    status = run.status()
    assert status["updated"] == START + 20
    # since tick 0: 2000 + 3000 B and 20 + 30 packets in 20 s (the last tick alone, 15 s
    # with 3000 B, would say 200 B/s); nothing sent
    rx = device(status, "tun0")["rx"]
    assert (rx["bytes"], rx["rate"], rx["pps"]) == (6000, 250.0, 2.5)
    assert device(status, "tun0")["tx"]["rate"] == 0.0
    run.counters.rx_bytes[0] = 50                       # interface re-created
    run.counters.rx_packets[0] = 1
    run.step(elapsed=2)                                 # tick 6, due (30 s)
    # all 50 B and 1 packet are new since the reset, over the 10 s since tick 4
    rx = device(run.status(), "tun0")["rx"]
    assert (rx["bytes"], rx["rate"], rx["pps"]) == (50, 5.0, 0.1)
    run.step(tun0=None)                                 # gone from /proc/net/dev
    tun0 = device(run.status(), "tun0")
    assert tun0["state"] == "absent"
    assert tun0["rx"] == {"bytes": None, "packets": None, "rate": None, "pps": None,
                          "rate_avg": None, "pps_avg": None}


class Untouchable:
    """Stands for a per-device list that a quiet tick must not read."""

    def __getitem__(self, i):
        raise AssertionError("a quiet tick looked at device %r" % (i,))

    def __len__(self):
        raise AssertionError("a quiet tick counted the devices")

    def __iter__(self):
        raise AssertionError("a quiet tick looped over the devices")


def test_a_quiet_tick_looks_at_no_device(tmp_path):
    """observe() runs every tick: one where nothing changed and nothing is due costs the same
    for any number of devices.  It reads no device, moves no base and writes nothing."""
    run = Run(make_config(str(tmp_path), devices=("tun0", "wg0")))   # written every 10 s
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)        # tick 0: written
    written = run.status()
    reports = run.reporter.devices
    bases = [(report.last, list(report.last), report.last_clock) for report in reports]
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)        # tick 1: judged, nothing changed
    counters = run.counters
    devices = run.monitor.devices
    for column in ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets"):
        setattr(counters, column, Untouchable())
    run.monitor.devices = Untouchable()
    try:
        run.observe(START + 5, counters)                 # tick 1 again: still quiet
    finally:
        run.monitor.devices = devices
    # the bases are still tick 0's, in the same lists: rates will cover both ticks
    assert [(report.last, list(report.last), report.last_clock) for report in reports] == bases
    assert all(report.last is base[0] for report, base in zip(reports, bases))
    assert bases[0][1:] == ([1000, 10, 500, 5], 0.0)
    assert run.status() == written


def test_a_state_change_between_writes_is_written_at_once(tmp_path):
    run = Run(make_config(str(tmp_path), devices=("tun0", "wg0"), status_interval=60))
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)        # tick 0: written
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)        # tick 1: quiet, next write at tick 12
    assert run.status()["updated"] == START
    run.step(wg0=WG0_TRAFFIC)                           # tick 2: tun0 hears nothing
    status = run.status()
    assert status["updated"] == START + 10
    tun0 = device(status, "tun0")
    assert (tun0["state"], tun0["since"], tun0["silent"]) == ("silent", START + 10, 5.0)
    # since the write at tick 0: 1000 B received and 500 B sent (both at tick 1) in 10 s
    assert (tun0["rx"]["rate"], tun0["tx"]["rate"]) == (100.0, 50.0)
    assert (device(status, "wg0")["state"], device(status, "wg0")["since"]) == ("up", START)
    run.step(wg0=WG0_TRAFFIC)                           # tick 3: still silent: no change
    assert run.status()["updated"] == START + 10
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)        # tick 4: heard again
    tun0 = device(run.status(), "tun0")
    assert (tun0["state"], tun0["since"]) == ("up", START + 20)


class KernelCounters(Counters):
    """Like the daemon's CounterReader: TX shows only after load_tx(), -1 until then."""

    def __init__(self, count):
        Counters.__init__(self, count)
        self.kernel_tx = [(0, 0)] * count
        self.tx_bytes = [-1] * count
        self.tx_packets = [-1] * count

    def load_tx(self):
        for i in range(len(self.kernel_tx)):
            present = self.rx_bytes[i] >= 0
            self.tx_bytes[i] = self.kernel_tx[i][0] if present else -1
            self.tx_packets[i] = self.kernel_tx[i][1] if present else -1


def test_devices_added_by_a_reload_start_afresh(tmp_path):
    """A device added by a reload takes its first state at its first tick (the Monitor reports
    changes only), with no state event for it, and all four counters as its bases."""
    run = Run(stats_config(tmp_path, "<interval>10</interval><file>%s/stats.jsonl</file>"
                                     % tmp_path, devices=("wg0",)))
    run.step(wg0=WG0_TRAFFIC)                           # tick 0
    config = stats_config(tmp_path, "<interval>10</interval><file>%s/stats.jsonl</file>"
                                    % tmp_path, devices=("wg0", "eth1", "gre1"))
    run.monitor.reconfigure(config, run.config.interval)
    run.reporter.configure(config)
    run.config = config
    counters = KernelCounters(3)                        # the reload opens a new reader
    counters.rx_bytes[0], counters.rx_packets[0] = 4000, 8
    counters.rx_bytes[1], counters.rx_packets[1] = 7777, 7    # eth1: up for a while already
    counters.kernel_tx[1] = (5000, 50)
    counters.rx_bytes[2] = counters.rx_packets[2] = -1  # gre1: absent
    run.monitor.judge(1, counters)                      # tick 1
    run.observe(START + 5, counters)
    status = run.status()
    assert status["updated"] == START + 5
    eth1, gre1 = device(status, "eth1"), device(status, "gre1")
    assert (eth1["state"], eth1["since"], eth1["tx"]["bytes"]) == ("up", START + 5, 5000)
    assert (eth1["rx"]["rate"], eth1["tx"]["rate"]) == (None, None)
    assert (gre1["state"], gre1["since"], gre1["rx"]["rate"]) == ("absent", START + 5, None)
    counters.rx_bytes[0] += 2000
    counters.rx_bytes[1] += 500
    counters.kernel_tx[1] = (6000, 60)
    run.monitor.judge(1, counters)                      # tick 2: statistics due (10 s)
    run.observe(START + 10, counters)
    lines = {line["device"]: line for line in map(json.loads, open(tmp_path / "stats.jsonl"))}
    # eth1 since its first tick, 5 s ago: 500 B received and 1000 B sent (not its 6000 B
    # total, which a base taken before TX was loaded would count)
    eth1 = lines["eth1"]
    assert (eth1["period"], eth1["rx_bytes"], eth1["tx_bytes"], eth1["tx_rate"]) == \
        (5.0, 500, 1000, 200.0)
    assert (lines["gre1"]["state"], lines["gre1"]["tx_bytes"]) == ("absent", None)
    # a first state is not a change of state
    assert eth1["events"] == [] and lines["gre1"]["events"] == []


def test_quiet_ticks_write_only_every_status_interval(tmp_path):
    run = Run(make_config(str(tmp_path), devices=("wg0",), interval=1, status_interval=10))
    written = []
    for tick in range(35):
        run.step(wg0=WG0_TRAFFIC)
        if run.status()["updated"] == run.now():
            written.append(tick)
    assert written == [0, 10, 20, 30]


def test_long_ticks_push_the_expiry_out(tmp_path):
    """With ticks longer than status_interval the file is rewritten once a tick at most:
    it expires after 3 ticks, not 3 status intervals."""
    run = Run(make_config(str(tmp_path), devices=("wg0",), interval=60, status_interval=10))
    run.step(wg0=WG0_TRAFFIC)
    assert run.status()["expires"] == START + 180


def test_reload_keeps_devices_and_seconds(tmp_path):
    run = Run(make_config(str(tmp_path), devices=("tun0", "wg0")))
    for _ in range(4):
        run.step(wg0=WG0_TRAFFIC)                       # tun0 silent, down at tick 3
    # reload: interval 5 -> 2 s, wg0 dropped, eth1 added
    config = make_config(str(tmp_path), devices=("eth1", "tun0"), interval=2)
    old_interval = run.config.interval
    run.monitor.reconfigure(config, old_interval)
    run.reporter.configure(config)
    run.config = config
    run.counters = Counters(2)
    run.counters.rx_bytes[1] = run.counters.rx_packets[1] = 0
    run.counters.rx_bytes[0], run.counters.rx_packets[0] = 7777, 7   # eth1: old counters
    run.counters.tx_bytes[1], run.counters.tx_packets[1] = 600, 6
    run.monitor.judge(1, run.counters)
    run.observe(START + 15 + 2)
    status = run.status()
    assert [dev["name"] for dev in status["devices"]] == ["eth1", "tun0"]
    assert status["interval"] == 2
    tun0 = device(status, "tun0")
    assert (tun0["state"], tun0["since"], tun0["actions"]) == ("down", START + 15, 1)
    eth1 = device(status, "eth1")
    assert (eth1["state"], eth1["since"], eth1["rx"]["rate"]) == ("up", START + 17, None)
    # tun0 sent 600 B and 6 packets since the write at tick 3 (15 s), one 2 s tick ago
    assert (tun0["tx"]["rate"], tun0["tx"]["pps"]) == (300.0, 3.0)
    run.counters.rx_bytes[0] += 1000
    run.monitor.judge(1, run.counters)
    run.observe(START + 19)
    assert run.status()["updated"] == START + 17       # nothing due: not written
    run.reporter.configure(config)                      # a reload writes at the next tick
    run.monitor.judge(1, run.counters)
    run.observe(START + 21)
    assert run.status()["updated"] == START + 21
    # eth1 since the write at 17 s: 1000 B (received in the tick to 19 s) and no packet in 4 s
    eth1 = device(run.status(), "eth1")
    assert (eth1["rx"]["rate"], eth1["rx"]["pps"]) == (250.0, 0.0)


@pytest.mark.parametrize("after", [("tun0", "wg0"), ("wg0",)], ids=["kept", "dropped"])
def test_a_stop_between_a_reload_and_the_next_tick_shows_the_silence_it_had(tmp_path, after):
    """The reload changes the interval (5 s to 1 s), and no tick follows before the stop: the
    stopped status is the last tick's, its silences in seconds as they were."""
    run = Run(make_config(str(tmp_path), devices=("tun0", "wg0"), interval=5))
    for _ in range(4):
        run.step(wg0=WG0_TRAFFIC)                       # tun0 silent for 3 ticks: 15 s
    assert device(run.status(), "tun0")["silent"] == 15
    config = make_config(str(tmp_path), devices=after, interval=1)
    run.monitor.reconfigure(config, run.config.interval)
    run.reporter.configure(config)
    run.reporter.close()
    status = run.status()
    assert status["state"] == "stopped"
    assert [dev["name"] for dev in status["devices"]] == ["tun0", "wg0"]
    assert (device(status, "tun0")["silent"], device(status, "wg0")["silent"]) == (15, 0)


def test_script_exits_and_stop(tmp_path):
    run, seen = outage_run(tmp_path, ticks=12)
    run.reporter.script_exited("tun0", "restore", 0)
    run.reporter.script_exited("", "post_restore_any", -9)
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)        # an exit is worth a write
    status = run.status()
    assert status["updated"] == run.now()
    assert device(status, "tun0")["last_exit"] == {"event": "restore", "code": 0,
                                                   "time": START + 55}
    assert status["post_restore_any"] == {"time": START + 55, "exit": -9}
    run.reporter.script_exited("nosuchdevice", "action", 1)   # a device dropped by a reload
    run.reporter.close()
    stopped = run.status()
    assert stopped["state"] == "stopped"
    assert stopped["devices"] == status["devices"]
    assert not os.path.exists(run.config.status_file + ".tmp")


def test_the_stopped_status_keeps_the_last_ticks_times(tmp_path):
    """A stop comes a while after the last tick (up to an interval, plus the scripts' grace):
    the last write's times are still those of the tick whose counters it shows."""
    run, seen = outage_run(tmp_path, ticks=12)
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)        # not due: no write at this tick
    last_tick = run.now()
    assert run.status()["updated"] < last_tick
    written = run.status()
    run.wall = last_tick + 4                            # SIGTERM, 4 s after the tick
    run.reporter.close()
    stopped = run.status()
    assert (stopped["state"], stopped["updated"]) == ("stopped", last_tick)
    assert stopped["started"] == written["started"] == START
    for name in ("tun0", "wg0"):
        assert device(stopped, name)["since"] == device(written, name)["since"]


def test_a_stop_after_the_first_write_ran_out_of_memory(tmp_path, monkeypatch):
    """The first status write fails with MemoryError (a small MicroPython heap): the daemon's
    stop still writes the "stopped" status of that tick, rather than failing on a tick it
    never noted (which turned "out of memory" into an internal TypeError)."""
    def out_of_memory(*args):
        raise MemoryError

    run = Run(make_config(str(tmp_path)))
    monkeypatch.setattr(tunmon_status.Reporter, "write_device", out_of_memory)
    with pytest.raises(MemoryError):
        run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)
    monkeypatch.undo()
    run.reporter.close()
    stopped = run.status()
    assert (stopped["state"], stopped["updated"]) == ("stopped", START)
    assert [dev["name"] for dev in stopped["devices"]] == ["tun0", "wg0"]


def test_running_out_of_memory_halfway_through_a_write_leaves_no_part(tmp_path, monkeypatch):
    """A MemoryError after the first device's line: the last complete file stays, and no
    temporary file is left in /var/run (procd restarts us, and each try would leave one)."""
    run = Run(make_config(str(tmp_path), status_interval=5))
    run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)
    complete = open(run.config.status_file).read()
    real_write_device = tunmon_status.Reporter.write_device
    written = []

    def out_of_memory_after_one(reporter, out, report, *args):
        if written:
            raise MemoryError
        real_write_device(reporter, out, report, *args)
        written.append(report.name)

    monkeypatch.setattr(tunmon_status, "FLUSH_AT", 1)     # each line goes out at once
    monkeypatch.setattr(tunmon_status.Reporter, "write_device", out_of_memory_after_one)
    with pytest.raises(MemoryError):
        run.step(tun0=TUN0_TRAFFIC, wg0=WG0_TRAFFIC)
    assert written == ["tun0"]
    assert open(run.config.status_file).read() == complete
    assert os.listdir(os.path.dirname(run.config.status_file)) == ["status.json"]


def test_quiet_ticks_allocate_nothing_under_micropython(tmp_path):
    """The daemon calls observe() every tick: a quiet one must not feed the GC."""
    script = tmp_path / "alloc.py"
    extra = ("<status_interval>1000</status_interval>"
             "<stats><interval>60</interval><file>%s/stats.jsonl</file></stats>" % tmp_path)
    script.write_text(DRIVER_PRELUDE % {"root": ROOT, "dir": str(tmp_path), "extra": extra}
                      + """
import gc
big = 10 ** 12
for tick in range(20):
    for i in (0, 1):                        # both busy: large counters, no state change
        counters.rx_bytes[i] = big + tick
        counters.rx_packets[i] = tick
    monitor.judge(1 if tick else 0, counters)
    gc.collect()
    before = gc.mem_alloc()
    reporter.observe(monitor, counters)
    print(gc.mem_alloc() - before)
""")
    result = subprocess.run(interpreter_command("micropython") + [str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    allocated = [int(line) for line in result.stdout.split()]
    # the first tick writes the status, tick 12 (60 s) the statistics; no other tick allocates
    assert [tick for tick, amount in enumerate(allocated) if amount] == [0, 12], allocated


HEAP_PAGES = """
import sys, micropython
sys.path.insert(0, %(root)r)
import tunmon
real_tick = tunmon.Daemon.tick

def many_ticks(daemon, elapsed):
    real_tick(daemon, elapsed)
    print("first tick")
    micropython.mem_info(1)
    for _ in range(400):        # a status write each (status_interval = interval)
        real_tick(daemon, 1)
    print("400 ticks later")
    micropython.mem_info(1)
    raise KeyboardInterrupt

tunmon.Daemon.tick = many_ticks
print("exit", tunmon.run(["-c", %(config)r, "--proc", %(proc)r, "--sys", %(sys)r]))
"""


def sysfs_up(root, names):
    """A /sys/class/net at `root` whose devices `names` all say operstate up."""
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "operstate").write_text("up\n")
    return root


def heap_frontier(mem_info):
    """The end of the highest block in use, from micropython.mem_info(1)'s map of the heap:
    lines of one character a block, '.' for a free one."""
    frontier = None
    block = None
    for line in mem_info.splitlines():
        offset, _, blocks = line.partition(": ")
        try:
            at = int(offset, 16)
        except ValueError:
            continue
        if at and block is None:
            block = at // 64        # a full line maps 64 blocks
        used = len(blocks.rstrip(".\n"))
        if used:
            frontier = (at, used)
    assert frontier and block, "no heap map in:\n" + mem_info[:2000]
    at, used = frontier
    return at + used * block


def test_the_micropython_daemon_keeps_to_the_same_heap_pages(tmp_path):
    """MicroPython collects only a full heap, and allocates upward until then: the few
    hundred bytes of each status write would walk the whole heap (1 MiB on a 32-bit router)
    and leave every page of it resident.  400 status writes (about 500 KB allocated) must
    leave the daemon's heap where it was, give or take the HEAP_SLACK it collects after."""
    names = ["tun%d" % i for i in range(8)]
    proc = tmp_path / "dev"
    proc.write_text("Inter-|   Receive  |  Transmit\n face |bytes    packets\n" + "".join(
        "%6s: %d %d 0 0 0 0 0 0 %d %d 0 0 0 0 0 0\n" % (name, 10 ** 9, 10 ** 6, 10 ** 8, 10 ** 5)
        for name in names))
    config = tmp_path / "tunmon.xml"
    config.write_text(
        "<tun_mon><net_devices>%s</net_devices><interval>0.1</interval>"
        "<status_file>%s/status.json</status_file><status_interval>0.1</status_interval>%s"
        "</tun_mon>" % ("".join("<net_device>%s</net_device>" % n for n in names), tmp_path,
                        LADDER))
    sys_root = sysfs_up(tmp_path / "sys", names)
    script = tmp_path / "pages.py"
    script.write_text(HEAP_PAGES % {"root": ROOT, "config": str(config), "proc": str(proc),
                                    "sys": str(sys_root)})
    result = subprocess.run(interpreter_command("micropython") + [str(script)],
                            capture_output=True, text=True, timeout=120)
    assert "exit 130" in result.stdout, result.stdout[-2000:] + result.stderr
    first, _, later = result.stdout.partition("400 ticks later")
    status = json.loads((tmp_path / "status.json").read_text())
    assert [dev["name"] for dev in status["devices"]] == names
    grown = heap_frontier(later) - heap_frontier(first)
    # A collection comes once HEAP_SLACK bytes are allocated; the allocation that set it
    # off, and what a fragment of free space could not hold, may lie a little beyond.
    assert grown <= tunmon.HEAP_SLACK + 8192, grown


# Counters for the driver scripts below: the tests set them directly.
FAKE_COUNTERS = """
class Counters:
    def __init__(self, n):
        self.rx_bytes = [0] * n
        self.rx_packets = [0] * n
        self.tx_bytes = [0] * n
        self.tx_packets = [0] * n
        self.link = ["unknown"] * n
        self.replied = bytearray(n)
    def load_tx(self):
        pass
"""

WRITE_COST = """
import gc, sys
sys.path.insert(0, %(root)r)
import tunmon, tunmon_xml, tunmon_status
names = ["tun%%d" %% i for i in range(%(count)d)]
config = tunmon_xml.parse_config(
    "<tun_mon><net_devices>" + "".join("<net_device>%%s</net_device>" %% n for n in names)
    + "</net_devices><interval>1</interval><status_file>%(dir)s/status.json</status_file>"
    "%(settings)s</tun_mon>", "%(dir)s/tunmon.xml")
""" + FAKE_COUNTERS + """
monitor = tunmon.Monitor(config)
counters = Counters(len(names))
wall = [1700000000.0]
reporter = tunmon_status.Reporter(config, 4242, lambda: wall[0])


def written(tick):
    for i in range(len(names)):             # every device busy, with router-sized counters
        counters.rx_bytes[i] = 10 ** 11 + 1500 * tick + i
        counters.rx_packets[i] = 10 ** 8 + tick
        counters.tx_bytes[i] = 10 ** 10 + 700 * tick
        counters.tx_packets[i] = 10 ** 7 + tick
    monitor.judge(1 if tick else 0, counters)
    wall[0] += 1
    gc.collect()
    before = gc.mem_alloc()
    reporter.observe(monitor, counters)     # writes what is due every second
    return gc.mem_alloc() - before


print(max([written(tick) for tick in range(12)][2:]))
"""


def write_costs(tmp_path, settings):
    """Bytes a write allocates under MicroPython (the most of 10), for 2 and for 40 devices."""
    costs = {}
    for count in (2, 40):
        directory = tmp_path / str(count)
        directory.mkdir()
        script = directory / "write.py"
        script.write_text(WRITE_COST % {"root": ROOT, "dir": str(directory), "count": count,
                                        "settings": settings % {"dir": directory}})
        result = subprocess.run(interpreter_command("micropython") + [str(script)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        costs[count] = int(result.stdout)
    return costs


def test_a_status_write_allocates_little_and_not_per_device_under_micropython(tmp_path):
    """On MicroPython a status write built its text out of strings and floats: 52 KiB for 8
    devices, every 10 s.  Now a write allocates for the file itself (its temporary name, the
    open, the rename) and a view per KiB written, whatever the number of devices."""
    costs = write_costs(tmp_path, "<status_interval>1</status_interval>")
    for count in (2, 40):
        status = json.loads((tmp_path / str(count) / "status.json").read_text())
        assert [dev["rx"]["rate"] for dev in status["devices"]] == [1500.0] * count
    assert costs[2] <= 1024, costs
    # 38 more devices: about 15 KiB more text, flushed a KiB at a time (32 B a view)
    assert costs[40] - costs[2] <= 20 * 32, costs


@pytest.mark.parametrize("stats_format", ["json", "influx"])
def test_statistics_lines_allocate_little_under_micropython(tmp_path, stats_format):
    """The statistics lines are written the same way: 49 KiB (JSON) and 62 KiB (influx) for
    8 devices before; now a round allocates for the file's append, in a buffer that grew to
    the size of a round once."""
    costs = write_costs(tmp_path, "<status_interval>1000</status_interval><stats>"
                        "<interval>1</interval><file>%%(dir)s/stats</file><format>%s</format>"
                        "</stats>" % stats_format)
    for count in (2, 40):
        lines = (tmp_path / str(count) / "stats").read_text().splitlines()
        assert len(lines) == 11 * count
        last = lines[-1]
        if stats_format == "json":
            assert json.loads(last)["rx_rate"] == 1500.0
        else:
            assert ",rx_rate=1500.0," in last
    assert costs[2] <= 768, costs
    assert costs[40] <= 768, costs


VANISHED = """
import gc, sys
sys.path.insert(0, %(root)r)
import tunmon, tunmon_xml
config = tunmon_xml.parse_config(
    "<tun_mon><net_devices><net_device>tun0</net_device><net_device>wg0</net_device>"
    "</net_devices><interval>1</interval><status_file>%(dir)s/status.json</status_file>"
    "<status_interval>1000</status_interval>"
    "<actions><action><time>1d</time><script>/bin/true</script></action></actions>"
    "</tun_mon>", "%(dir)s/tunmon.xml")

class NoSignals:
    mechanism = "none"
    def take(self, signum):
        return False
    def wait_ms(self, milliseconds):
        pass

daemon = tunmon.Daemon(config, %(proc)r, False, sys_root=%(sys)r, signals=NoSignals())
daemon.reader.keep_open = True      # as the daemon keeps /proc/net/dev open
daemon.start_reporter()
for _ in range(3):
    daemon.tick(1)


def allocated(ticks):
    # In a function: a new module-level name would grow the globals dict mid-measurement.
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in ticks:
        daemon.tick(1)
    return gc.mem_alloc() - before


ticks = list(range(20))
print(allocated(ticks), daemon.reader.link[0], daemon.reader.link[1],
      daemon.monitor.devices[1].state)
"""


@pytest.mark.parametrize("wg0_in_sysfs", [False, True])
def test_a_vanished_device_costs_nothing_per_tick_under_micropython(tmp_path, wg0_in_sysfs):
    """wg0 is gone (netifd removed the tunnel): not in /proc/net/dev, nor, as the kernel has
    it, in /sys.  Tick after tick of that outage, the MicroPython daemon allocates nothing:
    a device the counters did not find is not looked for in sysfs, where every failing open
    would allocate an OSError.  (Still in /sys, a moment's race: its link is absent too.)"""
    proc = tmp_path / "net_dev"
    proc.write_text("Inter-|   Receive\n face |bytes packets\n"
                    "  tun0: 1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n")
    sys_root = sysfs_up(tmp_path / "sys", ("tun0", "wg0") if wg0_in_sysfs else ("tun0",))
    script = tmp_path / "vanished.py"
    script.write_text(VANISHED % {"root": ROOT, "dir": str(tmp_path), "proc": str(proc),
                                  "sys": str(sys_root)})
    result = subprocess.run(interpreter_command("micropython") + [str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["0", "up", "absent", "absent"], result.stdout


# ---- the same bytes under MicroPython ---------------------------------------------------------

STATS_FILE = "<stats><interval>10</interval><file>%s/stats.%s</file><format>%s</format></stats>"
DRIVER_PRELUDE = """
import sys
sys.path.insert(0, %(root)r)
import tunmon, tunmon_xml, tunmon_status
NOW = 1700000000.0
CONFIG = tunmon_xml.parse_config(
    "<tun_mon><net_devices><net_device>tun0</net_device><net_device>wg0</net_device>"
    "</net_devices><interval>5</interval><status_file>%(dir)s/run/status.json</status_file>"
    "<actions><action><time>15</time><script>/bin/true</script></action></actions>"
    "<retry_actions><retry><interval>20</interval><script>/bin/true</script></retry>"
    "</retry_actions><restore_dev><script>/bin/true</script></restore_dev>%(extra)s</tun_mon>",
    "%(dir)s/tunmon.xml")
""" + FAKE_COUNTERS + """
monitor = tunmon.Monitor(CONFIG)
counters = Counters(2)
wall = [NOW]
reporter = tunmon_status.Reporter(CONFIG, 4242, lambda: wall[0])

def run_outage(ticks):
    for tick in range(ticks):
        if tick < 2 or tick > 10:
            counters.rx_bytes[0] += 1000
            counters.rx_packets[0] += 10
        counters.tx_bytes[0] += 500
        counters.tx_packets[0] += 5
        counters.rx_bytes[1] += 3000000000      # 600 MB/s: counters past 2**31 and 2**32
        counters.rx_packets[1] += 2000
        monitor.judge(1 if tick else 0, counters)
        wall[0] = NOW + 5 * tick
        reporter.observe(monitor, counters)
        with open(CONFIG.status_file) as f:
            print(f.read())
"""


@pytest.mark.parametrize("stats_format", ["json", "influx"])
def test_micropython_writes_the_same_status_and_stats(tmp_path, stats_format):
    outputs = []
    for name in ("cpython", "micropython"):
        directory = tmp_path / name
        directory.mkdir()
        stats = STATS_FILE % (directory, stats_format, stats_format)
        script = directory / "drive.py"
        script.write_text(DRIVER_PRELUDE % {"root": ROOT, "dir": str(directory), "extra": stats}
                          + "run_outage(14)\nreporter.close()\n")
        result = subprocess.run(interpreter_command(name) + [str(script)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with open(directory / ("stats." + stats_format)) as f:
            stats_text = f.read()
        outputs.append((result.stdout.replace(str(directory), "DIR"), stats_text))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count('"version": 1') == 14


# ---- atomic writes and failures ----------------------------------------------------------------

READER = """
import json, os, sys
path, stop = sys.argv[1], sys.argv[2]
reads = 0
while not os.path.exists(stop):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        continue
    json.loads(text)      # raises on a partial file: the reader exits non-zero
    reads += 1
print(reads)
"""


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path):
    path = str(tmp_path / "run" / "status.json")
    stop = str(tmp_path / "stop")
    reader = subprocess.Popen([sys.executable, "-c", READER, path, stop], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    # Contents of very different sizes: a reader catching a half-written one would fail.
    bodies = [json.dumps({"devices": ["x" * size] * 50}) for size in (10, 5000, 200, 20000)]
    deadline = time.time() + 1.5
    writes = 0
    while time.time() < deadline:
        body = bodies[writes % len(bodies)]
        content = body.encode()
        tunmon_status.write_atomically(path, lambda f: f.write(content))
        writes += 1
    open(stop, "w").close()
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    assert int(out) > 50 and writes > 100
    assert os.listdir(str(tmp_path / "run")) == ["status.json"]


def test_a_write_that_runs_out_of_room_halfway_keeps_the_old_file(tmp_path, capsys):
    """The file is written a device at a time: a full /var/run in the middle of a write must
    leave the last complete file in place and no temporary file behind."""
    with small_tmpfs(tmp_path / "run", "16k") as run_dir:
        names = tuple("tun%d" % i for i in range(30))
        run = Run(make_config(str(tmp_path), devices=names, status_interval=5))
        run.step(**{name: TUN0_TRAFFIC for name in names})
        first = (run_dir / "status.json").read_text()
        # One file fits in the 16 KiB; the old one and a whole new one do not.
        assert 8192 < len(first) < 16384
        run.step(**{name: TUN0_TRAFFIC for name in names})
        assert (run_dir / "status.json").read_text() == first
        assert sorted(os.listdir(run_dir)) == ["status.json"]
        assert capsys.readouterr().err.splitlines() == [
            "warning: cannot write status file %s/status.json: No space left on device" % run_dir]


def test_write_failures_are_logged_once_and_never_raise(tmp_path, capsys):
    blocker = tmp_path / "run"
    blocker.write_text("a file where the status directory should be\n")
    stats = "<stats><interval>5</interval><file>%s/stats.jsonl</file></stats>" % blocker
    run = Run(make_config(str(tmp_path), devices=("wg0",), status_interval=5, stats=stats))
    for _ in range(4):
        run.step(wg0=WG0_TRAFFIC)
    assert capsys.readouterr().err.splitlines() == [
        "warning: cannot write status file %s/status.json: Not a directory" % blocker,
        "warning: cannot write stats file %s/stats.jsonl: Not a directory" % blocker]
    blocker.unlink()
    run.step(wg0=WG0_TRAFFIC)
    assert capsys.readouterr().err.splitlines() == [
        "info: stats file %s/stats.jsonl written again" % blocker,
        "info: status file %s/status.json written again" % blocker]
    assert run.status()["updated"] == run.now()


# ---- statistics stream -------------------------------------------------------------------------

def stats_config(tmp_path, body, **kw):
    return make_config(str(tmp_path), stats="<stats>%s</stats>" % body, **kw)


def test_stats_json_lines(tmp_path):
    run = Run(stats_config(tmp_path, "<interval>10</interval><file>%s/stats.jsonl</file>"
                                     % tmp_path))
    for tick in range(13):
        run.step(wg0=WG0_TRAFFIC, tun0=(0, 0, 500, 5) if tick in OUTAGE else TUN0_TRAFFIC)
    lines = [json.loads(line) for line in open(tmp_path / "stats.jsonl")]
    # one line per device every 10 s (2 ticks): ticks 2, 4, ..., 12
    assert [(line["time"], line["device"]) for line in lines] == [
        (START + 5 * tick, name) for tick in (2, 4, 6, 8, 10, 12) for name in ("tun0", "wg0")]
    assert lines[0] == {
        "time": START + 10, "device": "tun0", "state": "silent", "period": 10.0, "silent": 5.0,
        "rx_bytes": 1000, "rx_packets": 10, "tx_bytes": 1000, "tx_packets": 10,
        "rx_rate": 100.0, "rx_pps": 1.0, "tx_rate": 100.0, "tx_pps": 1.0,
        "events": [{"event": "state", "state": "silent", "time": START + 10}]}
    assert lines[1]["rx_bytes"] == 4000 and lines[1]["rx_rate"] == 400.0
    assert lines[2]["events"] == [
        {"event": "state", "state": "down", "time": START + 20},
        {"event": "action", "step": 1, "time": START + 20, "silent": 15.0}]
    assert (lines[2]["state"], lines[2]["rx_bytes"], lines[2]["tx_rate"]) == ("down", 0, 100.0)
    assert lines[6]["events"] == [
        {"event": "retry", "step": 1, "time": START + 40, "silent": 35.0}]
    assert (lines[8]["state"], lines[8]["rx_bytes"], lines[8]["events"]) == ("down", 0, [])
    assert lines[10]["events"] == [
        {"event": "state", "state": "up", "time": START + 55},
        {"event": "restore", "time": START + 55, "silent": 45.0}]
    assert (lines[10]["state"], lines[10]["rx_bytes"], lines[10]["rx_rate"]) == ("up", 2000, 200.0)


def test_stats_influx_lines(tmp_path):
    run = Run(stats_config(tmp_path, "<interval>10</interval><file>%s/stats.influx</file>"
                                     "<format>influx</format>" % tmp_path))
    for tick in range(5):
        run.step(wg0=WG0_TRAFFIC, tun0=(0, 0, 500, 5) if tick in OUTAGE else TUN0_TRAFFIC)
    assert open(tmp_path / "stats.influx").read().splitlines() == [
        'tunmon,device=tun0 state="silent",period=10.0,silent=5.0,rx_bytes=1000i,'
        'rx_packets=10i,tx_bytes=1000i,tx_packets=10i,rx_rate=100.0,rx_pps=1.0,tx_rate=100.0,'
        'tx_pps=1.0 1700000010000000000',
        'tunmon_event,device=tun0,event=state state="silent" 1700000010000000000',
        'tunmon,device=wg0 state="up",period=10.0,silent=0.0,rx_bytes=4000i,rx_packets=8i,'
        'tx_bytes=0i,tx_packets=0i,rx_rate=400.0,rx_pps=0.8,tx_rate=0.0,tx_pps=0.0'
        ' 1700000010000000000',
        'tunmon,device=tun0 state="down",period=10.0,silent=15.0,rx_bytes=0i,rx_packets=0i,'
        'tx_bytes=1000i,tx_packets=10i,rx_rate=0.0,rx_pps=0.0,tx_rate=100.0,tx_pps=1.0'
        ' 1700000020000000000',
        'tunmon_event,device=tun0,event=state state="down" 1700000020000000000',
        'tunmon_event,device=tun0,event=action step=1i,silent=15.0 1700000020000000000',
        'tunmon,device=wg0 state="up",period=10.0,silent=0.0,rx_bytes=4000i,rx_packets=8i,'
        'tx_bytes=0i,tx_packets=0i,rx_rate=400.0,rx_pps=0.8,tx_rate=0.0,tx_pps=0.0'
        ' 1700000020000000000']


def test_influx_escaping_and_absent_fields(tmp_path):
    assert tunmon_status.influx_tag("a,b=c d\\e") == "a\\,b\\=c\\ d\\\\e"
    assert tunmon_status.influx_string('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    # A device that went absent: its line leaves out every counter and rate
    run = Run(stats_config(tmp_path, "<interval>5</interval><file>%s/stats.influx</file>"
                                     "<format>influx</format>" % tmp_path))
    run.step(wg0=WG0_TRAFFIC, tun0=TUN0_TRAFFIC)
    run.step(wg0=WG0_TRAFFIC, tun0=None)
    lines = (tmp_path / "stats.influx").read_text().splitlines()
    assert lines[0] == 'tunmon,device=tun0 state="absent",period=5.0,silent=5.0 1700000005000000000'
    assert lines[1] == 'tunmon_event,device=tun0,event=state state="absent" 1700000005000000000'
    assert lines[2].startswith('tunmon,device=wg0 state="up",period=5.0,silent=0.0,'
                               'rx_bytes=2000i,rx_packets=4i,tx_bytes=0i,tx_packets=0i,'
                               'rx_rate=400.0,')


@pytest.mark.parametrize("stats_format", ["json", "influx"])
def test_stats_udp_delivery(tmp_path, stats_format):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    run = Run(stats_config(tmp_path, "<interval>5</interval><udp>127.0.0.1:%d</udp>"
                                     "<format>%s</format>" % (port, stats_format)))
    for tick in range(4):
        run.step(wg0=WG0_TRAFFIC, tun0=(0, 0, 500, 5) if tick in OUTAGE else TUN0_TRAFFIC)
    expected = 7 if stats_format == "influx" else 6     # influx adds the state event line
    datagrams = [receiver.recv(65536).decode() for _ in range(expected)]
    receiver.close()
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in datagrams)
    if stats_format == "json":
        records = [json.loads(text) for text in datagrams]
        assert [(r["device"], r["time"]) for r in records] == [
            (name, START + 5 * tick) for tick in (1, 2, 3) for name in ("tun0", "wg0")]
        assert records[5]["rx_rate"] == 400.0 and records[4]["state"] == "silent"
    else:
        assert datagrams[3] == ('tunmon_event,device=tun0,event=state state="silent"'
                                ' 1700000010000000000\n')
        assert datagrams[0].startswith("tunmon,device=tun0 state=\"up\",period=5.0,")


def test_stats_udp_delivery_under_micropython(tmp_path):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    extra = "<stats><interval>5</interval><udp>127.0.0.1:%d</udp></stats>" % (
        receiver.getsockname()[1])
    script = tmp_path / "drive.py"
    script.write_text(DRIVER_PRELUDE % {"root": ROOT, "dir": str(tmp_path), "extra": extra}
                      + "run_outage(3)\n")
    result = subprocess.run(interpreter_command("micropython") + [str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    records = [json.loads(receiver.recv(65536)) for _ in range(4)]
    receiver.close()
    assert [(r["device"], r["time"]) for r in records] == [
        (name, START + 5 * tick) for tick in (1, 2) for name in ("tun0", "wg0")]
    assert records[1]["rx_rate"] == 600000000.0


def test_udp_failure_is_logged_once(tmp_path, capsys):
    class Unreachable:
        def sendto(self, data, address):
            raise OSError(101, "Network is unreachable")

        def close(self):
            pass

    run = Run(stats_config(tmp_path, "<interval>5</interval><udp>192.0.2.1:8089</udp>"))
    for _ in range(4):
        run.reporter.sock = run.reporter.sock or Unreachable()
        run.step(wg0=WG0_TRAFFIC)
    assert capsys.readouterr().err.splitlines() == [
        "warning: cannot send stats to 192.0.2.1 port 8089 (udp): Network is unreachable"]


def test_stats_file_cap_and_one_rotation(tmp_path):
    path = tmp_path / "stats.jsonl"
    run = Run(stats_config(tmp_path, "<interval>5</interval><file>%s</file><max_size>2k</max_size>"
                                     % path, devices=("wg0",)))
    for _ in range(60):
        run.step(wg0=WG0_TRAFFIC)
    older, newer = open(str(path) + ".1").read(), open(str(path)).read()
    assert len(older) <= 2048 and len(newer) <= 2048
    assert len(older) + len(older.splitlines()[0]) + 1 > 2048   # .1 was filled, then moved
    times = [json.loads(line)["time"] for line in (older + newer).splitlines()]
    # no line lost or repeated between the two files, and only the newest lines are kept
    assert times == [START + 5 * tick for tick in range(60 - len(times), 60)]
    assert not os.path.exists(str(path) + ".2")


def test_a_round_larger_than_the_cap_is_kept_whole(tmp_path):
    """20 devices write about 4.6 KB of lines a round, more than max_size: each round still
    goes to the file whole (the one exception the README names), so no device's line is
    lost to a rotation in the middle of a round."""
    path = tmp_path / "stats.jsonl"
    names = tuple("tun%d" % i for i in range(20))
    run = Run(stats_config(tmp_path, "<interval>5</interval><file>%s</file><max_size>2k</max_size>"
                                     % path, devices=names))
    for _ in range(4):
        run.step(**{name: WG0_TRAFFIC for name in names})
    for kept in (str(path) + ".1", str(path)):
        lines = [json.loads(line) for line in open(kept)]
        assert [line["device"] for line in lines] == list(names)
        assert len(set(line["time"] for line in lines)) == 1


@pytest.mark.parametrize("failing_from", [1, 8])
def test_a_failing_send_is_logged_once_whatever_datagram_fails(tmp_path, capsys, failing_from):
    """A socket that refuses from the first datagram of each round, or from the eighth of 20:
    one warning, never an "again" between rounds."""
    names = tuple("tun%d" % i for i in range(20))
    run = Run(stats_config(tmp_path, "<interval>5</interval><udp>127.0.0.1:9</udp>",
                           devices=names))
    sent = []

    class RefusingSocket:
        def sendto(self, data, address):
            sent.append(data)
            if len(sent) >= failing_from:
                raise OSError(105, "No buffer space available")

        def close(self):
            pass

    for tick in range(6):
        del sent[:]                 # counted per round
        run.reporter.sock = run.reporter.sock or RefusingSocket()
        run.reporter.udp_address = ("127.0.0.1", 9)
        run.step(**{name: WG0_TRAFFIC for name in names})
    assert capsys.readouterr().err.splitlines() == [
        "warning: cannot send stats to 127.0.0.1 port 9 (udp): No buffer space available"]


# ---- tunmon --status -------------------------------------------------------------------------

@pytest.fixture
def live_pid():
    """A live process whose command line mentions tunmon, standing in for the daemon."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "tunmon"])
    deadline = time.time() + 10
    while not tunmon_status.is_tunmon(proc.pid):   # until its exec is done
        assert time.time() < deadline, "the stand-in daemon did not start"
        time.sleep(0.01)
    yield proc.pid
    proc.kill()
    proc.wait()


def table_status(pid, state="running"):
    return {
        "version": 1, "pid": pid, "state": state, "started": 1000.0, "updated": 2000.0,
        "expires": 2030.0, "interval": 5.0, "status_interval": 10.0, "post_restore_any": None,
        "devices": [
            {"name": "6in4-henet", "state": "down", "since": 1808.0, "silent": 192.0,
             "link": "unknown",
             "rx": {"bytes": 1234567890, "packets": 1000000, "rate": 0.0, "pps": 0.0,
                    "rate_avg": 12.3, "pps_avg": 0.1},
             "tx": {"bytes": 987654, "packets": 5000, "rate": 120.0, "pps": 1.0,
                    "rate_avg": 130.0, "pps_avg": 1.0},
             "actions": 2, "retries": 1, "restores": 0, "probes": 38,
             "last_event": {"event": "retry", "step": 1, "time": 1990.0},
             "last_exit": {"event": "retry", "code": 1, "time": 1992.0}},
            {"name": "wg0", "state": "up", "since": 1000.0, "silent": 0.0, "link": "up",
             "rx": {"bytes": 45600000000, "packets": 40000000, "rate": 1534000.0, "pps": 1100.0,
                    "rate_avg": 1400000.0, "pps_avg": 1000.0},
             "tx": {"bytes": 2100000, "packets": 30000, "rate": 2500.0, "pps": 25.0,
                    "rate_avg": 2400.0, "pps_avg": 24.0},
             "actions": 1, "retries": 0, "restores": 1, "probes": 0,
             "last_event": {"event": "restore", "step": None, "time": 1500.0},
             "last_exit": None},
            {"name": "gre4-x", "state": "absent", "since": 1900.0, "silent": 100.0,
             "link": "absent",
             "rx": {"bytes": None, "packets": None, "rate": None, "pps": None,
                    "rate_avg": None, "pps_avg": None},
             "tx": {"bytes": None, "packets": None, "rate": None, "pps": None,
                    "rate_avg": None, "pps_avg": None},
             "actions": 1, "retries": 0, "restores": 0, "probes": 0,
             "last_event": {"event": "action", "step": 1, "time": 1915.0},
             "last_exit": {"event": "retry", "code": 0, "time": 1800.0}},
        ]}


TABLE = """\
tunmon pid {pid} running, updated 4s ago, interval 5s, status every 10s
DEVICE      STATE      FOR  SILENT   RX RATE   TX RATE  RX TOTAL  TX TOTAL  ACT/RET/RES  PROBES  LAST EVENT
6in4-henet  down     3m16s   3m16s     0 B/s   120 B/s    1.2 GB  987.7 kB        2/1/0      38  retry 1 14s ago, exit 1
wg0         up      16m44s      0s  1.5 MB/s  2.5 kB/s   45.6 GB    2.1 MB        1/0/1       0  restore 8m24s ago
gre4-x      absent   1m44s   1m44s         -         -         -         -        1/0/0       0  action 1 1m29s ago
"""


def write_status(directory, status, name="status.json"):
    """`status` in the layout tunmon writes; returns the file's path."""
    path = directory / name
    head = dict((key, value) for key, value in status.items() if key != "devices")
    path.write_text(json.dumps(head)[:-1] + ', "devices": [\n'
                    + ",\n".join(json.dumps(device) for device in status["devices"]) + "\n]}\n")
    return str(path)


class Out:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text


def test_table(tmp_path, live_pid, capsys):
    path = write_status(tmp_path, table_status(live_pid))
    out = Out()
    assert show_status(path, False, out, now=2004.0) == 0
    assert out.text == TABLE.format(pid=live_pid)
    assert capsys.readouterr().err == ""


def test_table_under_micropython(tmp_path, live_pid):
    path = write_status(tmp_path, table_status(live_pid))
    code = ("import sys\nsys.path.insert(0, %r)\nimport tunmon_status\n"
            "sys.exit(tunmon_status.show_status(%r, False, sys.stdout, now=2004.0))"
            % (ROOT, path))
    result = subprocess.run(interpreter_command("micropython") + ["-c", code],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == TABLE.format(pid=live_pid)


def test_json_output_is_the_file(tmp_path, live_pid):
    path = write_status(tmp_path, table_status(live_pid))
    out = Out()
    assert show_status(path, True, out, now=2004.0) == 0
    assert out.text == open(path).read()


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass", "tunmon"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("case, word, message", [
    ("stopped", "STOPPED", "warning: tunmon is not running: it stopped 4s ago"),
    ("dead", "NOT RUNNING",
     "warning: tunmon is not running: pid {pid} is gone; last status 4s ago"),
    ("hung", "STALE", "warning: stale status: last written 5m00s ago, due every 10s "
                      "(is tunmon stuck?)"),
])
def test_stale_status_is_said_clearly(tmp_path, live_pid, capsys, case, word, message):
    pid = dead_pid() if case == "dead" else live_pid
    now = 2300.0 if case == "hung" else 2004.0
    path = write_status(tmp_path, table_status(pid, "stopped" if case == "stopped" else "running"))
    out = Out()
    assert show_status(path, False, out, now=now) == 1
    assert out.text.splitlines()[0].startswith("tunmon pid %d %s, updated " % (pid, word))
    # a dead daemon's figures are as of its last write: not extrapolated to now
    assert " 3m12s " in out.text.splitlines()[2]
    assert capsys.readouterr().err.splitlines() == [message.format(pid=pid)]
    assert show_status(path, True, Out(), now=now) == 1


def test_missing_unreadable_and_corrupt_files(tmp_path, live_pid, capsys):
    missing = str(tmp_path / "none.json")
    assert show_status(missing, False, Out()) == 1
    assert capsys.readouterr().err == ("error: no status file %s: tunmon is not running, "
                                       "or writes its status elsewhere\n" % missing)
    assert show_status(str(tmp_path), False, Out()) == 2
    assert capsys.readouterr().err == "error: cannot read %s: Is a directory\n" % tmp_path
    full = json.dumps(table_status(live_pid))
    for broken in (full[:len(full) // 2], "[]", '{"version": 1}', full.replace('"rx"', '"rxx"')):
        path = tmp_path / "broken.json"
        path.write_text(broken)
        out = Out()
        assert show_status(str(path), False, out, now=2004.0) == 2
        assert out.text == ""
        assert capsys.readouterr().err == (
            "error: %s: not a tunmon status file (corrupt or truncated)\n" % path)
    newer = dict(table_status(live_pid), version=2)
    path = write_status(tmp_path, newer)
    assert show_status(path, False, Out()) == 2
    assert capsys.readouterr().err == (
        "error: %s: status schema version 2; this tunmon reads version 1\n" % path)


@pytest.mark.parametrize("content", [
    b"\xff\xfe{}",                                                   # not UTF-8
    b'{"version": 1, "updated": -1e999, "expires": 0, "devices": []}',  # a time past floats
    b"[" * 100000,                                                    # nested past any limit
], ids=["not-utf8", "huge-time", "deep-nesting"])
def test_a_corrupt_status_file_is_one_line_on_both_interpreters(interp, tmp_path, content):
    status = tmp_path / "status.json"
    status.write_bytes(content)
    config = tmp_path / "tunmon.xml"
    config.write_text("<tun_mon><net_devices><net_device>tun0</net_device></net_devices>"
                      "<status_file>%s</status_file></tun_mon>" % status)
    result = run_tunmon(interp, "--status", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr == "error: %s: not a tunmon status file (corrupt or truncated)\n" % status


def test_status_names_what_it_shows_when_the_config_is_broken(tmp_path):
    config = tmp_path / "tunmon.xml"
    config.write_text("<tun_mon>")
    result = run_tunmon(interpreter_command("cpython"), "--status", "-c", str(config))
    assert result.stderr.splitlines()[0].startswith("warning: %s:" % config)
    assert result.stderr.splitlines()[0].endswith("; showing /var/run/tunmon/status.json")


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (-3, "0s"), (59.4, "59s"), (60, "1m00s"), (192, "3m12s"), (3599, "59m59s"),
    (3600, "1h00m"), (7380, "2h03m"), (86399, "23h59m"), (86400, "1d00h"), (363600, "4d05h")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("value, unit, text", [
    (None, "B/s", "-"), (0, "B/s", "0 B/s"), (999, "B", "999 B"), (1000, "B", "1.0 kB"),
    (1534000, "B/s", "1.5 MB/s"), (999999999, "B", "1.0 GB"), (2.5e15, "B", "2500.0 TB")])
def test_amounts(value, unit, text):
    assert format_amount(value, unit) == text


# ---- rpcd plugin --------------------------------------------------------------------------------

def plugin(*args, status_file=None, stdin=""):
    env = dict(os.environ)
    if status_file is not None:
        env["TUNMON_STATUS_FILE"] = str(status_file)
    return subprocess.run(SH + [PLUGIN] + list(args), input=stdin, env=env,
                          capture_output=True, text=True, timeout=30)


def test_rpcd_plugin_parses_and_lists_its_methods():
    assert subprocess.run(SH + ["-n", PLUGIN]).returncode == 0
    result = plugin("list")
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {"status": {}}


def test_rpcd_call_status_of_a_live_daemon(tmp_path, live_pid):
    config = make_config(str(tmp_path))
    run = Run(config, pid=live_pid)
    for tick in range(5):
        run.step(wg0=WG0_TRAFFIC, tun0=(0, 0, 500, 5) if tick in OUTAGE else TUN0_TRAFFIC)
    # The Reporter's clock is fake (2023): make the file fresh by its "expires".
    status = run.status()
    status["expires"] = int(time.time()) + 30
    write_status(tmp_path / "run", status)         # where config.status_file is
    result = plugin("call", "status", status_file=config.status_file, stdin="{}")
    assert (result.returncode, result.stderr) == (0, "")
    answer = json.loads(result.stdout)
    assert answer.pop("running") is True
    assert answer == status
    assert device(answer, "tun0")["state"] == "down"


def test_rpcd_call_status_when_not_running(tmp_path, live_pid):
    stale = dict(table_status(live_pid), expires=time.time() - 1)
    for status in (table_status(live_pid, "stopped"), table_status(dead_pid()), stale):
        path = write_status(tmp_path, status)
        result = plugin("call", "status", status_file=path)
        assert (result.returncode, result.stderr) == (0, "")
        answer = json.loads(result.stdout)
        assert answer.pop("running") is False
        assert answer == json.loads(open(path).read())


def test_rpcd_takes_a_pid_recycled_by_a_program_that_mentions_tunmon_for_dead(tmp_path):
    (tmp_path / "tunmon.log").write_text("")
    other = subprocess.Popen(["tail", "-f", "tunmon.log"], cwd=str(tmp_path),
                             stdout=subprocess.DEVNULL)
    try:
        fresh = dict(table_status(other.pid), expires=int(time.time()) + 30)
        result = plugin("call", "status", status_file=write_status(tmp_path, fresh))
        assert json.loads(result.stdout)["running"] is False
        assert not tunmon_status.is_tunmon(other.pid)     # the daemon's own rule agrees
    finally:
        other.kill()
        other.wait()


def test_rpcd_call_status_without_a_usable_file(tmp_path):
    missing = tmp_path / "none.json"
    result = plugin("call", "status", status_file=missing)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "running": False, "error": "no status file %s: tunmon is not running" % missing}
    garbage = tmp_path / 'odd "name".json'
    garbage.write_text("garbage\n")
    result = plugin("call", "status", status_file=garbage)
    assert json.loads(result.stdout) == {
        "running": False, "error": "%s is not a tunmon status file" % garbage}


@pytest.mark.parametrize("args", [("call", "restart"), ("call",), ("bogus",), ()])
def test_rpcd_plugin_rejects_unknown_calls(args):
    result = plugin(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    if args[:1] == ("call",):
        assert result.stderr == "error: unknown method '%s' (tunmon has: status)\n" % (
            args[1] if len(args) > 1 else "")


def test_acl_lets_luci_read_the_status():
    with open(ACL) as f:
        acl = json.load(f)
    assert acl == {"luci-app-tunmon": {
        "description": "Read tunmon's status: ubus call tunmon status",
        "read": {"ubus": {"tunmon": ["status"]}}}}


# ---- the live daemon -------------------------------------------------------------------------

def test_the_running_daemon_keeps_the_status_file_and_stats_stream(tmp_path):
    """tunmon.py itself (not a hand-driven Reporter): the status file follows an outage and its
    end, `--status` reads it while tunmon runs and says STOPPED after SIGTERM."""
    status_path = tmp_path / "run" / "status.json"
    stats_path = tmp_path / "stats.jsonl"
    counters = tmp_path / "dev"
    line = "Inter-|\n face |\n  tun0: %d %d 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n"
    counters.write_text(line % (1000, 10))
    config = tmp_path / "c.xml"
    config.write_text(
        "<tun_mon><interval>0.1</interval><status_file>%s</status_file>"
        "<status_interval>5</status_interval>"
        "<stats><interval>0.2</interval><file>%s</file></stats>"
        "<net_devices><net_device>tun0</net_device></net_devices>"
        "<actions><action><time>0.3</time><script>/bin/true</script></action></actions>"
        "</tun_mon>" % (status_path, stats_path))
    daemon = subprocess.Popen([sys.executable, TUNMON, "-c", str(config), "--proc",
                               str(counters)], stderr=subprocess.PIPE, text=True)

    def device_state():
        try:
            return json.loads(status_path.read_text())["devices"][0]["state"]
        except (OSError, ValueError):
            return None

    def wait_for(state):
        deadline = time.monotonic() + 5
        while device_state() != state and time.monotonic() < deadline:
            time.sleep(0.02)
        return device_state()

    try:
        assert wait_for("down") == "down"
        table = subprocess.run([sys.executable, TUNMON, "-c", str(config), "--status"],
                               capture_output=True, text=True)
        assert table.returncode == 0, table.stderr
        assert "running" in table.stdout.splitlines()[0]
        assert table.stdout.splitlines()[2].split()[:2] == ["tun0", "down"]
        counters.write_text(line % (5000, 50))
        assert wait_for("up") == "up"
        status = json.loads(status_path.read_text())
        assert status["devices"][0]["restores"] == 1
        assert status["devices"][0]["rx"]["bytes"] == 5000
    finally:
        daemon.terminate()
        assert daemon.wait(5) == 0
    assert "Traceback" not in daemon.stderr.read()
    after = subprocess.run([sys.executable, TUNMON, "-c", str(config), "--status"],
                           capture_output=True, text=True)
    assert after.returncode == 1 and "STOPPED" in after.stdout
    records = [json.loads(text) for text in stats_path.read_text().splitlines()]
    assert {record["device"] for record in records} == {"tun0"}
    # The stream carries the outage: the action and the state changes, whatever states its
    # 0.2 s samples happened to catch.
    events = [event for record in records for event in record["events"]]
    assert any(event["event"] == "action" for event in events), events
    assert {event["state"] for event in events if event["event"] == "state"} >= {"down", "up"}
