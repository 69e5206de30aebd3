"""Issue 5 on the real kernel: the built-in probe, link state from sysfs, and the proc and
sysfs counter sources deciding alike — in the namespace test bed of test_e2e.py."""
import subprocess
import time

import pytest

import netbed
from conftest import ROOT
from test_e2e import INTERVAL, SLACK, Run, bed_factory, interp_name  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e


def write_config(r, devices, ladder="", extra="", name="tunmon.xml"):
    path = str(r.dir / name)
    with open(path, "w") as f:
        f.write('<tun_mon><interval>%s</interval>%s<net_devices>%s</net_devices>%s</tun_mon>\n'
                % (INTERVAL, extra, devices, ladder))
    return path


def operstate(bed, dev):
    result = subprocess.run(bed.exec_argv(bed.router, ["cat", "/sys/class/net/%s/operstate"
                                                       % dev]), capture_output=True, text=True)
    return result.stdout.strip()


def probe_lines(r):
    return [line for _, line in r.proc.lines if line.startswith("trace: probe ")]


@pytest.fixture
def run(bed_factory, interp, tmp_path):
    return Run(bed_factory(1), interp_name(interp), tmp_path)


def test_the_probe_keeps_a_quiet_healthy_tunnel_up_without_any_script(run):
    r = run
    alert = r.script("alert.sh")
    # Nothing but tunmon's own probe crosses the tunnel; the alert at 1 s must never fire.
    target = netbed.tunnel_addr(0, "provider")
    r.start(write_config(r, '<net_device probe="icmp" target="%s">vx0</net_device>' % target,
                         "<actions><action><time>1</time><script>%s</script></action></actions>"
                         % alert))
    before = r.bed.counters(r.bed.router)["vx0"]
    time.sleep(3.0)
    after = r.bed.counters(r.bed.router)["vx0"]
    assert r.records() == [], r.stderr()
    probes = probe_lines(r)
    assert probes and all(("probe %s through vx0" % target) in line for line in probes)
    # Every probe got its echo reply through the tunnel: RX moved by as many packets.
    assert after["rx_packets"] - before["rx_packets"] >= len(probes) - 1
    # Replies count as traffic: the device keeps coming back up after each silent tick.
    assert any(line == "trace: vx0: up" for _, line in r.proc.lines), r.stderr()
    assert "Traceback" not in r.stderr()


def test_the_probe_does_not_hide_a_broken_tunnel(run):
    r = run
    alert = r.script("alert.sh")
    target = netbed.tunnel_addr(0, "provider")
    r.start(write_config(r, '<net_device probe="icmp" target="%s">vx0</net_device>' % target,
                         "<actions><action><time>0.6</time><script>%s</script></action></actions>"
                         % alert))
    r.bed.break_endpoint(0)
    got = r.wait_for("alert.sh", 3 + SLACK)
    assert got[0]["argv"] == ["vx0", "0.6"]
    assert got[0]["env"]["TUNMON_TARGET"] == target
    assert len(probe_lines(r)) >= 2


def test_the_probe_never_fires_while_traffic_flows(run):
    r = run
    target = netbed.tunnel_addr(0, "provider")
    r.start(write_config(r, '<net_device probe="icmp" target="%s">vx0</net_device>' % target))
    traffic = r.bed.start_traffic([target], interval=0.02)
    try:
        assert r.bed.wait_rx(r.bed.router, "vx0", 5)
        mark = len(r.proc.lines)
        time.sleep(2.0)
        flowing = [line for _, line in r.proc.lines[mark:]]
    finally:
        traffic.kill()
    assert [line for line in flowing if line.startswith("trace: probe ")] == []
    assert sum(1 for line in flowing if line.startswith("trace: after ")) >= 8


def test_a_link_down_is_reported_and_passed_to_scripts(run):
    r = run
    alert = r.script("alert.sh")
    config = write_config(r, "<net_device>%s</net_device>" % netbed.UNDERLAY,
                          "<actions><action><time>0.6</time><script>%s</script></action>"
                          "</actions>" % alert)
    # First with the peer up: the link is up, and the (quiet) underlay's action says so.
    r.start(config)
    got = r.wait_for("alert.sh", 3 + SLACK)
    assert got[0]["env"]["TUNMON_LINK"] == "up", r.stderr()
    r.proc.kill()
    # Then the provider's end of the veth goes down: no carrier here.  The kernel's linkwatch
    # may take up to a second to update operstate: wait for it before starting tunmon.
    r.bed.underlay_down()
    assert netbed.wait_until(lambda: operstate(r.bed, netbed.UNDERLAY) != "up", 3)
    r.start(config)
    got = r.wait_for("alert.sh", 3 + SLACK, count=2)
    assert got[1]["env"]["TUNMON_LINK"] == "down", r.stderr()
    assert any(line == "trace: %s: link down" % netbed.UNDERLAY for _, line in r.proc.lines)


def test_proc_and_sysfs_sources_make_the_same_decisions(bed_factory, interp, tmp_path):
    bed = bed_factory(2)
    runs = {}
    for source in ("proc", "sysfs"):
        folder = tmp_path / source
        folder.mkdir()
        r = Run(bed, interp_name(interp), folder)
        ping = r.script("ping.sh")
        rebuild = r.script("rebuild.sh")
        restored = r.script("restored.sh")
        ladder = ("<actions><action><time>0.6</time><script>%s</script></action>"
                  "<action><time>1.2</time><script>%s</script></action></actions>"
                  "<restore_dev><script>%s</script></restore_dev>" % (ping, rebuild, restored))
        r.start(write_config(r, "<net_device>vx0</net_device><net_device>vx1</net_device>",
                             ladder, "<counter_source>%s</counter_source>" % source))
        assert "counters from %s" % source in r.stderr()
        runs[source] = r
    traffic = bed.start_traffic([netbed.tunnel_addr(0, "provider"),
                                 netbed.tunnel_addr(1, "provider")], interval=0.02)
    try:
        assert bed.wait_rx(bed.router, "vx1", 5)
        time.sleep(0.5)
        bed.break_endpoint(1)
        # Both climb the ladder; then the tunnel is repaired for both at once (a rebuild
        # script of one would repair it under the other's feet).
        for r in runs.values():
            r.wait_for("rebuild.sh", 4)
        bed.repair_endpoint(1)
        for r in runs.values():
            r.wait_for("restored.sh", 4)
        time.sleep(0.5)
    finally:
        traffic.kill()
    decisions = {}
    for source, r in runs.items():
        decisions[source] = [(rec["name"], rec["argv"][0]) for rec in r.records()]
    assert decisions["proc"] == decisions["sysfs"] == [
        ("ping.sh", "vx1"), ("rebuild.sh", "vx1"), ("restored.sh", "vx1")]
    for r in runs.values():
        assert [rec["argv"][1] for rec in r.records()[:2]] == ["0.6", "1.2"]


READ_ALL = """
import sys
sys.path.insert(0, %(root)r)
import tunmon
names = sys.argv[1:]
reader = tunmon.CounterReader("/proc/net/dev", names)
for _ in range(3):                  # the file stays open: each read asks the kernel anew
    assert reader.read()
for i, name in enumerate(names):
    print("%%s %%d %%d" %% (name, reader.rx_bytes[i], reader.rx_packets[i]))
"""


def test_a_proc_net_dev_of_many_pages_is_read_whole(bed_factory, interp, tmp_path):
    """With hundreds of interfaces the kernel serves /proc/net/dev a page per read: every
    device, the last one too, is found with the counters that `cat` shows."""
    bed = bed_factory(1)
    batch = tmp_path / "veths"
    batch.write_text("".join("link add mp%d type veth peer name mq%d\n" % (i, i)
                             for i in range(120)))
    netbed.ip("-n", bed.router, "-batch", str(batch))
    shown = subprocess.run(bed.exec_argv(bed.router, ["cat", "/proc/net/dev"]),
                           capture_output=True, text=True, check=True).stdout
    assert len(shown) > 5 * 4096
    kernel = netbed.read_proc_net_dev(shown)
    names = sorted(kernel)
    script = tmp_path / "read_all.py"
    script.write_text(READ_ALL % {"root": ROOT})
    result = subprocess.run(bed.exec_argv(bed.router, list(interp) + [str(script)] + names),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    read = {}
    for line in result.stdout.split("\n"):
        if line:
            name, rx_bytes, rx_packets = line.split()
            read[name] = (int(rx_bytes), int(rx_packets))
    assert read == {name: (kernel[name]["rx_bytes"], kernel[name]["rx_packets"])
                    for name in names}


RETURNING = """
import os, sys, time
sys.path.insert(0, %(root)r)
import tunmon


def sh(command):
    if os.system(command) != 0:
        raise SystemExit("failed: " + command)


def operstate():
    try:
        with open("/sys/class/net/va/operstate") as f:
            return f.read().strip()
    except OSError:
        return ""


def settle(wanted):
    # operstate follows a link change asynchronously (up to a second)
    for _ in range(60):
        if operstate() == wanted:
            return
        time.sleep(0.05)
    raise SystemExit("va's operstate stayed %%r, not %%r" %% (operstate(), wanted))


links = tunmon.LinkReader("/sys/class/net", ["va"])
seen = ["unknown"]


def tick(present):
    links.read_into(seen, [0 if present else -1])
    return seen[0]


sh("ip link add va type veth peer name vb && ip link set vb up && ip link set va up")
settle("up")
states = [tick(True)]
sh("ip link del va")
states.append(tick(False))
sh("ip link add va type veth peer name vb && ip link set va up")   # vb stays down
settle("lowerlayerdown")
states.append(tick(True))
print(" ".join(states))
"""


def test_a_device_that_returns_is_read_through_new_files(bed_factory, interp, tmp_path):
    """A veth deleted and re-created with its peer down: the first tick it is back reads its
    link as down.  The link reader keeps sysfs files open; reading the new device through
    the old device's files would say "absent" (ENODEV) for a tick, and that tick's traffic
    would count as a restore on a link that is down."""
    bed = bed_factory(1)
    script = tmp_path / "returning.py"
    script.write_text(RETURNING % {"root": ROOT})
    result = subprocess.run(bed.exec_argv(bed.router, list(interp) + [str(script)]),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["up", "absent", "down"], result.stdout + result.stderr
