"""Issue 5 features on replayed traces, under both interpreters: per-device ladders,
underlay dependencies, noise threshold, the built-in probe's schedule and link state."""
import pytest

from conftest import run_tunmon

HEADER = ("Inter-|   Receive                                                |  Transmit\n"
          " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets"
          " errs drop fifo colls carrier compressed\n")


def snapshot(counters):
    """One /proc/net/dev snapshot from {device: (rx_bytes, rx_packets)}."""
    lines = [HEADER]
    for name, (rx_bytes, rx_packets) in counters.items():
        lines.append("%6s: %7d %7d    0    0    0     0          0         0 %8d %7d    0    0"
                     "    0     0       0          0\n" % (name, rx_bytes, rx_packets, 10, 1))
    return "".join(lines)


class Trace:
    """Builds a trace tick by tick: each device's counters grow by what that tick received."""

    def __init__(self, *devices):
        self.totals = dict((name, [1000, 10]) for name in devices)
        self.parts = [snapshot(self.totals)]

    def tick(self, received=None, directives=""):
        for name, rx_bytes in (received or {}).items():
            self.totals[name][0] += rx_bytes
            self.totals[name][1] += 1 if rx_bytes else 0
        self.parts.append(directives + snapshot(self.totals))
        return self

    def ticks(self, count, received=None):
        for _ in range(count):
            self.tick(received)
        return self

    def write(self, path):
        path.write_text("".join(self.parts))
        return path


def replay(interp, tmp_path, config_xml, trace, *extra):
    config = tmp_path / "tunmon.xml"
    config.write_text(config_xml)
    result = run_tunmon(interp, "-c", config, "--replay", trace.write(tmp_path / "trace"), *extra)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines(), result.stderr


def config(devices, ladder):
    return "<tun_mon><interval>5</interval><net_devices>%s</net_devices>%s</tun_mon>" % (
        devices, ladder)


LADDER = """
  <actions>
    <action><time>10</time><script>/bin/ping.sh</script></action>
    <action device="tun0"><time>20</time><script>/bin/rebuild.sh</script></action>
  </actions>
  <retry_actions><retry><interval>30</interval><script>/bin/retry.sh</script></retry></retry_actions>
  <restore_dev><script device="tun0">/bin/restored.sh</script></restore_dev>
  <post_restore_any><script>/bin/post.sh</script></post_restore_any>
"""
# The same ladder without limits, for configs that watch no tun0.
PLAIN_LADDER = LADDER.replace(' device="tun0"', "")


def test_each_device_climbs_its_own_ladder(interp, tmp_path):
    trace = Trace("tun0", "wg0").ticks(10).tick({"tun0": 500, "wg0": 500})
    lines, _ = replay(interp, tmp_path, config(
        "<net_device>tun0</net_device><net_device>wg0</net_device>", LADDER), trace)
    # tun0's ladder ends at 20 s, so its retry comes at 50 s; wg0's ends at 10 s: retry at 40 s.
    # Only tun0 has a restore script; post_restore_any names both, in config order.
    assert lines == [
        "t=10 action /bin/ping.sh tun0 10",
        "t=10 action /bin/ping.sh wg0 10",
        "t=20 action /bin/rebuild.sh tun0 20",
        "t=40 retry /bin/retry.sh wg0 40",
        "t=50 retry /bin/retry.sh tun0 50",
        "t=55 restore /bin/restored.sh tun0 50",
        "t=55 post_restore_any /bin/post.sh tun0 wg0",
    ]


def test_a_tunnel_is_held_while_its_underlay_is_down_and_relaaddered_after(interp, tmp_path):
    devices = '<net_device depends="wan">tun0</net_device><net_device>wan</net_device>'
    # Both go silent at once.  wan's first action at 10 s makes it down: from then on tun0 is
    # held.  wan comes back at 30 s; tun0 (still silent) restarts its ladder from 0 there.
    trace = Trace("tun0", "wan").ticks(6).tick({"wan": 800}).ticks(5, {"wan": 800})
    lines, errors = replay(interp, tmp_path, config(devices, LADDER), trace, "--trace", "1")
    assert lines == [
        "t=10 action /bin/ping.sh wan 10",
        "t=35 post_restore_any /bin/post.sh wan",
        "t=45 action /bin/ping.sh tun0 10",
        "t=55 action /bin/rebuild.sh tun0 20",
    ]
    assert "t=10 tun0: held" in errors
    assert "t=35 tun0: silent" in errors


def test_a_held_tunnel_gets_no_retries_and_its_restore_still_counts(interp, tmp_path):
    devices = '<net_device depends="wan">tun0</net_device><net_device>wan</net_device>'
    # tun0 goes down first (its own ladder), then wan dies: tun0's retries stop while held.
    trace = Trace("tun0", "wan").ticks(4, {"wan": 800}).ticks(10).tick({"tun0": 900, "wan": 900})
    lines, _ = replay(interp, tmp_path, config(devices, LADDER), trace)
    assert lines == [
        "t=10 action /bin/ping.sh tun0 10",
        "t=20 action /bin/rebuild.sh tun0 20",
        "t=30 action /bin/ping.sh wan 10",
        "t=60 retry /bin/retry.sh wan 40",
        "t=75 restore /bin/restored.sh tun0 70",
        "t=75 post_restore_any /bin/post.sh tun0 wan",
    ]


def test_an_absent_underlay_holds_its_tunnel(interp, tmp_path):
    devices = '<net_device depends="wan">tun0</net_device><net_device>wan</net_device>'
    trace = Trace("tun0", "wan")
    del trace.totals["wan"]
    trace.ticks(6)
    lines, _ = replay(interp, tmp_path, config(devices, LADDER), trace)
    assert lines == ["t=10 action /bin/ping.sh wan 10"]


@pytest.mark.parametrize("devices, message", [
    ('<net_device depends="b">a</net_device><net_device depends="a">b</net_device>',
     "dependency cycle: a -> b -> a"),
    ('<net_device depends="a">a</net_device>', "dependency cycle: a -> a"),
    ('<net_device depends="wan">a</net_device>', 'depends="wan": not a watched device'),
    ('<net_device min_rx_bytes="-1">a</net_device>', "min_rx_bytes: '-1' is not a whole number"),
    ('<net_device probe="icmp">a</net_device>', 'probe="icmp" needs target="address"'),
    ('<net_device probe="tcp" target="x">a</net_device>', "'tcp' is not one of icmp, none"),
    ('<net_device colour="red">a</net_device>', "<net_device> has no attribute colour"),
])
def test_bad_device_settings_are_one_line_errors(interp, tmp_path, devices, message):
    path = tmp_path / "bad.xml"
    path.write_text("<tun_mon>\n<net_devices>\n%s\n</net_devices>\n</tun_mon>\n" % devices)
    result = run_tunmon(interp, "-c", path, "--check")
    assert result.returncode == 2
    assert result.stderr.startswith("error: %s:3:" % path)
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_limit_naming_an_unwatched_device_is_an_error(interp, tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<tun_mon><net_devices><net_device>a</net_device></net_devices>\n<actions>\n"
                    "<action device='a b'><time>5</time><script>/bin/x</script></action>\n"
                    "</actions></tun_mon>\n")
    result = run_tunmon(interp, "-c", path, "--check")
    assert result.returncode == 2
    assert result.stderr == 'error: %s:3: device="b": not a watched device\n' % path


def test_noise_below_the_threshold_is_silence(interp, tmp_path):
    devices = '<net_device min_rx_bytes="100">wg0</net_device>'
    # 60-byte keepalives every tick do not count; a 1500-byte packet does.
    trace = Trace("wg0").ticks(4, {"wg0": 60}).tick({"wg0": 1500}).ticks(2, {"wg0": 60})
    lines, _ = replay(interp, tmp_path, config(devices, PLAIN_LADDER), trace)
    assert lines == [
        "t=10 action /bin/ping.sh wg0 10",
        "t=20 action /bin/rebuild.sh wg0 20",
        "t=25 restore /bin/restored.sh wg0 20",
        "t=25 post_restore_any /bin/post.sh wg0",
        "t=35 action /bin/ping.sh wg0 10",
    ]


def test_without_a_threshold_any_byte_is_traffic(interp, tmp_path):
    trace = Trace("wg0").ticks(4, {"wg0": 60})
    lines, _ = replay(interp, tmp_path, config("<net_device>wg0</net_device>", PLAIN_LADDER), trace)
    assert lines == []


def test_the_probe_fires_on_every_silent_tick_and_never_while_traffic_flows(interp, tmp_path):
    devices = '<net_device probe="icmp" target="2001:db8::1">wan</net_device>'
    trace = Trace("wan").ticks(3, {"wan": 100}).ticks(3).tick({"wan": 100}).ticks(2, {"wan": 5})
    lines, _ = replay(interp, tmp_path, config(devices, ""), trace)
    assert lines == ["t=20 probe wan 2001:db8::1", "t=25 probe wan 2001:db8::1",
                     "t=30 probe wan 2001:db8::1"]


def test_a_down_link_is_silence_even_when_counters_move(interp, tmp_path):
    trace = Trace("eth1").tick({"eth1": 100}).tick({"eth1": 100}, "#link eth1 down\n")
    trace.ticks(2, {"eth1": 100})
    lines, errors = replay(interp, tmp_path, config("<net_device>eth1</net_device>", PLAIN_LADDER),
                           trace, "--trace", "1")
    # The link is down from the second snapshot (t=10) on: silent there and at t=15.
    assert lines == ["t=15 action /bin/ping.sh eth1 10"]
    assert "t=10 eth1: link down" in errors


def test_link_down_is_silence_can_be_switched_off_per_device(interp, tmp_path):
    devices = '<net_device link_down_is_silence="0">eth1</net_device>'
    trace = Trace("eth1").tick({"eth1": 100}, "#link eth1 down\n").ticks(3, {"eth1": 100})
    lines, _ = replay(interp, tmp_path, config(devices, PLAIN_LADDER), trace)
    assert lines == []


@pytest.mark.parametrize("line, message", [
    (b"#link eth1 dwon\n", "#link takes a device and up, down or unknown"),   # was ignored
    (b"#link eth1\n", "#link takes a device and up, down or unknown"),
    (b"#link \xff\xfe down\n", "#link: the device name is not UTF-8"),      # an internal error
])
def test_a_bad_link_line_in_a_trace_names_its_line(interp, tmp_path, line, message):
    trace = "".join(Trace("eth1").tick({"eth1": 100}).tick({"eth1": 100}).parts).encode()
    second = trace.index(b"Inter-|", 1)
    path = tmp_path / "trace.txt"
    path.write_bytes(trace[:second] + line + trace[second:])
    config_path = tmp_path / "c.xml"
    config_path.write_text(config("<net_device>eth1</net_device>", PLAIN_LADDER))
    result = run_tunmon(interp, "-c", config_path, "--replay", path)
    line_number = trace[:second].count(b"\n") + 1
    assert (result.returncode, result.stderr) == (2, "error: %s:%d: %s\n"
                                                 % (path, line_number, message))


def test_a_down_link_holds_the_devices_riding_on_it(interp, tmp_path):
    devices = '<net_device depends="eth1">tun0</net_device><net_device>eth1</net_device>'
    trace = Trace("tun0", "eth1").tick({"eth1": 100}, "#link eth1 down\n").ticks(3)
    lines, errors = replay(interp, tmp_path, config(devices, LADDER), trace, "--trace", "1")
    assert lines == ["t=10 action /bin/ping.sh eth1 10"]
    assert "t=5 tun0: held" in errors


def test_check_shows_device_settings_and_limits(interp, tmp_path):
    path = tmp_path / "c.xml"
    path.write_text(config(
        '<net_device depends="wan" min_rx_bytes="80">tun0</net_device>'
        '<net_device probe="icmp" target="192.0.2.1">wan</net_device>', LADDER))
    result = run_tunmon(interp, "-c", path, "--check")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "device tun0: depends on wan, min_rx_bytes 80\n" in out
    assert "device wan: probe icmp to 192.0.2.1\n" in out
    assert "action 2 at 20s silence (4 ticks): /bin/rebuild.sh [for tun0]\n" in out
    assert "retry 1 every 30s (6 ticks) after 10s, first at 40s: /bin/retry.sh [for wan]\n" in out
    assert "retry 1 every 30s (6 ticks) after 20s, first at 50s: /bin/retry.sh [for tun0]\n" in out
