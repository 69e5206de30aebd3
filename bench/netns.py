"""Scratch network namespaces for the real-kernel parts of the benchmark (root only).

Every namespace is named tunmon-bench-<pid>-<what>; `Scratch.close()` deletes the ones it
made (bench.py calls it in `finally`, on SIGTERM/SIGINT and at exit), and namespaces left by
an earlier run that was killed (their creator pid is gone) are deleted when a new one starts.
"""
import os
import subprocess
import sys
import time

PREFIX = "tunmon-bench-"


def available():
    if os.geteuid() != 0:
        return "needs root"
    try:
        subprocess.run(["ip", "-V"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "no `ip` command (iproute2)"
    return None


def ip(*args, **kwargs):
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(["ip"] + list(args), **kwargs)


def remove_stale():
    listing = ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and not os.path.exists("/proc/%s" % pid):
            ip("netns", "del", name, check=False)


class Scratch:
    def __init__(self):
        self.namespaces = []
        self.processes = []
        remove_stale()

    def namespace(self, what):
        name = "%s%d-%s" % (PREFIX, os.getpid(), what)
        ip("netns", "add", name)
        self.namespaces.append(name)
        # No IPv6: no router solicitations or MLD reports, so the only packets are ours.
        for key in ("all", "default"):
            ip("netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % key,
               check=False)
        return name

    def batch(self, ns, commands):
        """Run `ip -batch` in namespace `ns` (a quarter of a second for 500 veth pairs)."""
        text = "".join(line + "\n" for line in commands)
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=text, text=True, check=True,
                       capture_output=True)

    def start(self, ns, argv, **kwargs):
        proc = subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), **kwargs)
        self.processes.append(proc)
        return proc

    def run(self, ns, argv, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", ns] + list(argv), **kwargs)

    def read_stat(self, ns, dev, field):
        out = self.run(ns, ["cat", "/sys/class/net/%s/statistics/%s" % (dev, field)])
        return int(out.stdout.strip())

    def close(self):
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    proc.terminate()
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                except OSError:
                    pass
        self.processes = []
        for name in self.namespaces:
            # Anything still living in it keeps it from disappearing: kill those first.
            pids = ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            ip("netns", "del", name, check=False)
        self.namespaces = []


def veth_bed(scratch, pairs):
    """A namespace holding `pairs` veth pairs vb<i>/vp<i>, all up: 2 * pairs + 1 interfaces."""
    ns = scratch.namespace("kernel")
    commands = []
    for i in range(pairs):
        commands.append("link add vb%d type veth peer name vp%d" % (i, i))
    for i in range(pairs):
        commands.append("link set vb%d up" % i)
        commands.append("link set vp%d up" % i)
    commands.append("link set lo up")
    started = time.time()
    scratch.batch(ns, commands)
    return ns, time.time() - started


def proc_names(scratch, ns):
    text = scratch.run(ns, ["cat", "/proc/net/dev"]).stdout
    return [line.split(":")[0].strip() for line in text.splitlines()[2:] if ":" in line]


SENDER = r"""
import socket, sys, time
dev, mac, rate = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
src = bytes.fromhex(open("/sys/class/net/%s/address" % dev).read().strip().replace(":", ""))
# An experimental EtherType: the receiving kernel counts the frame and drops it, no reply.
frame = mac + src + b"\x88\xb5" + b"tunmon-bench busy tunnel".ljust(200, b".")
while True:
    s.send(frame)
    time.sleep(1.0 / rate)
"""

PINGER = r"""
import socket, struct, sys, time
dst, every = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
seq = 0
while True:
    seq += 1
    body = struct.pack("!BBHHH", 8, 0, 0, 0x7475, seq) + b"mwan3track-style"
    s.sendto(struct.pack("!BBHHH", 8, 0, checksum(body), 0x7475, seq) + b"mwan3track-style",
             (dst, 0))
    time.sleep(every)
"""


def probe_bed(scratch):
    """Two namespaces joined by two veth pairs: r0<->p0 (the tunnel tunmon watches) and
    r1<->p1 (the one a mwan3track-style loop pings).  Static neighbours, no IPv6."""
    router = scratch.namespace("router")
    peer = scratch.namespace("peer")
    ip("link", "add", "r0", "netns", router, "type", "veth", "peer", "name", "p0", "netns", peer)
    ip("link", "add", "r1", "netns", router, "type", "veth", "peer", "name", "p1", "netns", peer)
    macs = {}
    for ns, devs in ((router, ("r0", "r1")), (peer, ("p0", "p1"))):
        for dev in devs:
            ip("-n", ns, "link", "set", dev, "up")
            macs[dev] = scratch.run(ns, ["cat", "/sys/class/net/%s/address" % dev]).stdout.strip()
        ip("-n", ns, "link", "set", "lo", "up")
    for i in (0, 1):
        ip("-n", router, "addr", "add", "10.98.%d.1/24" % i, "dev", "r%d" % i)
        ip("-n", peer, "addr", "add", "10.98.%d.2/24" % i, "dev", "p%d" % i)
        ip("-n", router, "neigh", "replace", "10.98.%d.2" % i, "lladdr", macs["p%d" % i],
           "dev", "r%d" % i, "nud", "permanent")
        ip("-n", peer, "neigh", "replace", "10.98.%d.1" % i, "lladdr", macs["r%d" % i],
           "dev", "p%d" % i, "nud", "permanent")
    return router, peer, macs


def python_in(scratch, ns, code, *args):
    return scratch.start(ns, [sys.executable, "-S", "-c", code] + [str(a) for a in args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
