"""`tunmon --plot STATSFILE`: the SVG of RX/TX rates with states and events (issue 6).

The statistics come from the real Monitor and Reporter driven through an outage, so the plot
is checked against what the daemon writes.  The SVG must parse as XML and match the golden
file byte for byte under CPython and MicroPython (times in UTC).  After an intended change,
regenerate the golden files with TUNMON_UPDATE_GOLDEN=1 and look at them (rsvg-convert).
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from conftest import ROOT, interpreter_command
from test_status import Counters

sys.path.insert(0, ROOT)
import tunmon  # noqa: E402
import tunmon_status  # noqa: E402
import tunmon_xml  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "golden")
SVG = "{http://www.w3.org/2000/svg}"
START = 1700002800.0     # 2023-11-14 23:00:00 UTC

OUTAGE_CONFIG = """<tun_mon>
  <net_devices><net_device>6in4-henet</net_device><net_device>wg0</net_device></net_devices>
  <interval>5</interval>
  <status_file>%(dir)s/status.json</status_file>
  <actions>
    <action><time>15</time><script>/bin/true</script></action>
    <action><time>60</time><script>/bin/true</script></action>
  </actions>
  <retry_actions><retry><interval>2m</interval><script>/bin/true</script></retry></retry_actions>
  <restore_dev><script>/bin/true</script></restore_dev>
  <stats><interval>10</interval><file>%(dir)s/stats.jsonl</file></stats>
</tun_mon>"""


def outage_stats(directory):
    """40 minutes at 5 s ticks: 6in4-henet dead from 12:00 to 19:30 (two actions, retries, a
    restore); wg0 busy with a download burst from 25:00 to 31:00 and re-created at 34:00."""
    config = tunmon_xml.parse_config(OUTAGE_CONFIG % {"dir": directory},
                                     directory + "/tunmon.xml")
    monitor = tunmon.Monitor(config)
    counters = Counters(2)
    wall = [START]
    reporter = tunmon_status.Reporter(config, 4242, lambda: wall[0])
    for tick in range(480):
        minute = tick * 5 / 60.0
        wobble = (tick * 37) % 11          # deterministic variation, identical on every run
        dead = 12 <= minute < 19.5
        if not dead:
            counters.rx_bytes[0] += 5 * (36000 + 1500 * wobble)
            counters.rx_packets[0] += 5 * 40
        counters.tx_bytes[0] += 5 * (600 if dead else 8000 + 300 * wobble)
        counters.tx_packets[0] += 5 * 10
        if 34 <= minute < 35:
            for column in (counters.rx_bytes, counters.rx_packets, counters.tx_bytes,
                           counters.tx_packets):
                column[1] = -1
        else:
            if counters.rx_bytes[1] < 0:      # back as a new interface: counters from 0
                for column in (counters.rx_bytes, counters.rx_packets, counters.tx_bytes,
                               counters.tx_packets):
                    column[1] = 0
            burst = 1200000 if 25 <= minute < 31 else 150000
            counters.rx_bytes[1] += 5 * (burst + 20000 * ((tick * 13) % 7))
            counters.rx_packets[1] += 5 * 900
            counters.tx_bytes[1] += 5 * (30000 + 4000 * ((tick * 5) % 9))
            counters.tx_packets[1] += 5 * 300
        monitor.judge(1 if tick else 0, counters)
        wall[0] = START + 5 * tick
        reporter.observe(monitor, counters)
    reporter.close()
    return directory + "/stats.jsonl"


def days_stats(path):
    """Two days at 10-minute lines, written by hand: an uplink and a GRE tunnel that is held
    while its underlay is down (state changes between lines), with a gap where tunmon was
    stopped, and the rate unit changing between panels."""
    lines = []
    for i in range(1, 289):
        end = START + 600 * i
        if 150 <= i < 160:
            continue                       # tunmon stopped: no lines
        lines.append({"time": end, "device": "eth0.2", "state": "up", "period": 600.0,
                      "rx_rate": 2e6 + 1e5 * (i % 7), "tx_rate": 3e5, "events": []})
        held = 100 <= i < 110
        events = []
        if i == 100:
            events = [{"event": "state", "state": "held", "time": end - 300}]
        if i == 110:
            events = [{"event": "state", "state": "up", "time": end - 300}]
        lines.append({"time": end, "device": "gre4-x", "state": "held" if held else "up",
                      "period": 600.0, "rx_rate": 0.0 if held else 800.0, "tx_rate": 120.0,
                      "events": events})
    with open(path, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return path


def plot_with(interpreter, stats_path):
    """Run tunmon_plot.plot() in its own process, with times in UTC."""
    code = ("import sys\nsys.path.insert(0, %r)\nimport tunmon_plot\n"
            "sys.exit(tunmon_plot.plot(%r, sys.stdout))" % (ROOT, stats_path))
    return subprocess.run(interpreter_command(interpreter) + ["-c", code],
                          env=dict(os.environ, TZ="UTC"), capture_output=True, text=True,
                          timeout=120)


def check_golden(name, svg):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("TUNMON_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(svg)
    with open(path) as f:
        assert svg == f.read(), "%s differs: TUNMON_UPDATE_GOLDEN=1 rewrites it" % name


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    return outage_stats(str(tmp_path_factory.mktemp("outage")))


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_outage_plot_matches_the_golden_file(outage, interpreter):
    result = plot_with(interpreter, outage)
    assert (result.returncode, result.stderr) == (0, "")
    check_golden("plot_outage.svg", result.stdout)


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_days_plot_matches_the_golden_file(tmp_path, interpreter):
    result = plot_with(interpreter, days_stats(str(tmp_path / "stats.jsonl")))
    assert (result.returncode, result.stderr) == (0, "")
    check_golden("plot_days.svg", result.stdout)


def texts(root):
    return [element.text for element in root.iter()
            if element.tag in (SVG + "text", SVG + "tspan") and element.text]


def test_the_svg_parses_and_shows_what_happened(outage):
    result = plot_with("cpython", outage)
    root = ElementTree.fromstring(result.stdout)
    assert root.tag == SVG + "svg"
    labels = texts(root)
    assert "tunmon: RX/TX rate per device" in labels
    assert "2023-11-14 23:00:00 to 2023-11-14 23:39:55 (local time), rates in bytes per second" \
        in labels
    assert {"6in4-henet", "wg0", "RX", "TX", "down", "silent", "restore"} <= set(labels)
    assert "peak RX 48.0 kB/s, TX 10.4 kB/s; 2 actions, 3 retries, 1 restore" in labels
    assert ["23:%02d" % minute for minute in range(0, 40, 5)] == [
        label for label in labels if len(label) == 5 and label[2] == ":"]
    assert {"action 1", "action 2", "retry 1", "60 kB/s", "1.5 MB/s"} <= set(labels)
    # one dashed marker per action, retry and restore: 6in4-henet 2 + 3 + 1, wg0 2 + 1
    markers = [line for line in root.iter(SVG + "line") if line.get("stroke-dasharray")]
    assert len(markers) == 9
    # 6in4-henet's down band runs from its "down" state change to its "up" one; wg0 was
    # absent (grey) while re-created, never down
    changes = {}
    for line in open(outage):
        record = json.loads(line)
        for event in record["events"]:
            if event["event"] == "state":
                changes.setdefault((record["device"], event["state"]), event["time"])
    x_of = lambda at: 84 + (at - START) / 2395.0 * 852    # noqa: E731  2395 s in 852 px
    down = [rect for rect in root.iter(SVG + "rect") if rect.get("fill") == "#f8c9c9"
            and rect.get("height") == "150"]
    assert len(down) == 1
    assert changes[("6in4-henet", "down")] == START + 12 * 60 + 10   # action 1 at 15 s silence
    assert float(down[0].get("x")) == pytest.approx(x_of(changes[("6in4-henet", "down")]),
                                                    abs=0.1)
    assert float(down[0].get("x")) + float(down[0].get("width")) == pytest.approx(
        x_of(changes[("6in4-henet", "up")]), abs=0.2)
    absent = [rect for rect in root.iter(SVG + "rect") if rect.get("fill") == "#dddddd"
              and rect.get("height") == "150"]
    assert len(absent) == 1
    assert float(absent[0].get("x")) == pytest.approx(x_of(changes[("wg0", "absent")]), abs=0.1)


def test_the_rotated_half_is_read_first(outage, tmp_path):
    lines = open(outage).read().splitlines(True)
    split = str(tmp_path / "stats.jsonl")
    with open(split + ".1", "w") as f:
        f.writelines(lines[:300])
    with open(split, "w") as f:
        f.writelines(lines[300:])
    assert plot_with("cpython", split).stdout == plot_with("cpython", outage).stdout


def test_nothing_to_plot_and_unreadable_input(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = plot_with("cpython", str(empty))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: %s: no statistics yet\n" % empty
    influx = tmp_path / "stats.influx"
    influx.write_text('tunmon,device=tun0 state="up",rx_rate=1.0 1700000000000000000\n')
    result = plot_with("cpython", str(influx))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("error: %s: no JSON statistics lines (the plot reads "
                             "<stats><format>json</format>)\n" % influx)
    missing = tmp_path / "none.jsonl"
    result = plot_with("cpython", str(missing))
    assert (result.returncode, result.stderr) == (
        2, "error: cannot read %s: No such file or directory\n" % missing)


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_hostile_lines_are_skipped_or_ignored_on_both_interpreters(outage, tmp_path, interpreter):
    """Each of these ended --plot in an internal error, or (a time of 1e300) in a loop that
    never ended and took all memory."""
    skipped = [b'{"device": "tun0", "time": 1700000020, "period": 1e999}',
               b'{"device": "tun0", "time": 1e300, "period": 10}',
               b'{"device": "tun0", "time": 1e999, "period": 10}',
               b'{"device": "tun0", "time": -1e999, "period": 10}',
               b'{"device": "\xff", "time": 1700000040, "period": 10}',
               b'{' + b'[' * 100000]
    ignored = [b'{"device": "tun0", "time": 1700000010, "period": 10, "events": 5}',
               b'{"device": "tun0", "time": 1700000030, "period": 10, "rx_rate": 1e999,'
               b' "events": [{"event": "state", "state": "down", "time": 1e999}]}']
    with open(outage, "rb") as f:
        lines = f.readlines()
    hostile = str(tmp_path / "stats.jsonl")
    with open(hostile, "wb") as f:
        f.writelines(lines + [line + b"\n" for line in skipped + ignored])
    result = plot_with(interpreter, hostile)
    assert (result.returncode, result.stderr) == (0, "warning: %s: skipped %d lines that are "
                                                     "not JSON statistics\n" % (hostile, len(skipped)))
    assert result.stdout.startswith("<svg")


def test_damaged_lines_are_skipped_and_counted(outage, tmp_path):
    lines = open(outage).read().splitlines(True)
    damaged = str(tmp_path / "stats.jsonl")
    with open(damaged, "w") as f:
        f.writelines(lines[:10] + ['{"time": 17000\n', "garbage\n", "\n"] + lines[10:])
    result = plot_with("cpython", damaged)
    assert result.returncode == 0
    assert result.stderr == ("warning: %s: skipped 2 lines that are not JSON statistics\n"
                             % damaged)
    assert result.stdout == plot_with("cpython", outage).stdout
