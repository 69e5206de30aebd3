"""A real-kernel test bed for tunmon's end-to-end tests (issue 4).

Two network namespaces, a "router" (where tunmon runs) and a "provider" (the far end),
joined by a veth pair, the underlay `eth-wan`, 10.99.0.1/24 <-> 10.99.0.2/24. Over it run one
or more VXLAN tunnels `vx0`, `vx1`, ... (VNI 42, 43, ...), tunnel addresses 10.100.<i>.1/24 on
the router and 10.100.<i>.2/24 at the provider. The tunnels are created with `nolearning` and a
fixed `remote`, so pointing an end at another address cuts the tunnel at once (the kernel
would otherwise keep using a learned endpoint for 300 s). IPv6 is disabled and every neighbour
entry is static, so the kernel itself sends nothing: the only packets are those the tests make,
which is what lets a test count them exactly.

Outages are made the way they happen in the field:
- `break_endpoint(i)`: the provider's end of tunnel i now sends to 10.99.0.9 — the provider
  believes the router's IPv4 address changed (the seed's "IPv4 changed" case: a tunnel broker
  still pointing at the old address). The underlay keeps working. `repair_endpoint_cmd(i)` is
  the repair (the tunnel broker update), as a shell line for a generated script.
- `underlay_down()`: the provider's side of the underlay goes down (no carrier on the router);
  `underlay_up_cmd()` repairs it.
- `recreate_tunnel_cmd(i)`: the router's tunnel device is deleted and created again, so its
  counters restart at 0 (what a `ifdown/ifup` or a rebuild script does).

The same file is also a small command-line tool, run inside a namespace by the tests and by
the generated scripts (stdlib only, started with `python3 -S`):
    netbed.py ping [--count N] [--interval S] [--wait S] [--stats FILE] DST [DST...]
        raw-socket ICMP echo sender; prints {"sent": {dst: n}, "received": {dst: n}} as JSON
    netbed.py record LOG NAME [ARGS...]
        appends one JSON line to LOG: time, name, argv, TUNMON_* / TUN_DOWN_* environment,
        the calling shell's pid and process group (the shell is the script tunmon started)

Everything a bed creates is removed by `close()` (also via `with Bed(...) as bed:`), even
after a failed test: every process living in its namespaces is killed, the namespaces are
deleted. Namespaces left by a killed earlier run (their creator pid is dead) are removed
when the next bed is created.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.abspath(__file__)
PREFIX = "tunmon-e2e-"
UNDERLAY = "eth-wan"
ROUTER_WAN = "10.99.0.1"
PROVIDER_WAN = "10.99.0.2"
WRONG_WAN = "10.99.0.9"      # where a broken provider endpoint sends: nobody is there
ROUTER_WAN_MAC = "02:00:0a:63:00:01"
PROVIDER_WAN_MAC = "02:00:0a:63:00:02"
VXLAN_PORT = "4789"

_counter = [0]


def tunnel_dev(i):
    return "vx%d" % i


def tunnel_addr(i, side):
    """Tunnel address of tunnel i on 'router' (…1) or 'provider' (…2)."""
    return "10.100.%d.%d" % (i, 1 if side == "router" else 2)


def tunnel_mac(i, side):
    return "02:00:0a:64:%02x:%02x" % (i, 1 if side == "router" else 2)


def sh_quote(word):
    word = str(word)
    if word and all(c.isalnum() or c in "-_./=:,@%+" for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def sh_join(words):
    return " ".join(sh_quote(w) for w in words)


def ip(*args, check=True):
    """Run `ip ARGS...`; raise with ip's own message on failure."""
    r = subprocess.run(["ip"] + [str(a) for a in args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(map(str, args)), r.stderr.strip()))
    return r


def namespaces_unavailable():
    """None if network namespaces, veth and vxlan can be created here, else the reason."""
    if os.geteuid() != 0:
        return "not root (uid %d): network namespaces need root" % os.geteuid()
    try:
        subprocess.run(["ip", "-V"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return "the `ip` command (iproute2) is not usable: %s" % e
    name = "%s%d-probe" % (PREFIX, os.getpid())
    r = ip("netns", "add", name, check=False)
    if r.returncode != 0:
        return "cannot create a network namespace: %s" % r.stderr.strip()
    try:
        r = ip("-n", name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
               check=False)
        if r.returncode != 0:
            return "cannot create a veth pair in a namespace: %s" % r.stderr.strip()
        r = ip("-n", name, "link", "add", "vxprobe", "type", "vxlan", "id", "1", "dstport",
               VXLAN_PORT, "nolearning", check=False)
        if r.returncode != 0:
            return "cannot create a vxlan device: %s" % r.stderr.strip()
    finally:
        ip("netns", "del", name, check=False)
    return None


def pid_alive(pid):
    """True if process `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_netns_processes(ns):
    """SIGKILL every process whose network namespace is `ns`; wait until they are gone."""
    deadline = time.monotonic() + 5
    while True:
        r = ip("netns", "pids", ns, check=False)
        pids = [int(p) for p in r.stdout.split()] if r.returncode == 0 else []
        pids = [p for p in pids if p != os.getpid()]
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        time.sleep(0.02)


def remove_stale_namespaces():
    """Delete namespaces left behind by an earlier bed whose process is dead."""
    r = ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            _kill_netns_processes(name)
            ip("netns", "del", name, check=False)


def read_proc_net_dev(text):
    """Parse /proc/net/dev text into {dev: {rx_bytes, rx_packets, tx_bytes, tx_packets}}."""
    out = {}
    for line in text.splitlines()[2:]:
        if ":" not in line:
            continue
        name, rest = line.split(":", 1)
        f = rest.split()
        out[name.strip()] = {"rx_bytes": int(f[0]), "rx_packets": int(f[1]),
                             "tx_bytes": int(f[8]), "tx_packets": int(f[9])}
    return out


class Proc:
    """A process started by the bed: its stderr (and optionally stdout) lines are collected
    by a thread, each with the wall-clock time it was read."""

    def __init__(self, argv, capture_stdout=False, **kw):
        self.argv = argv
        self.lines = []          # (time.time(), line) from stderr
        self.out_lines = []      # (time.time(), line) from stdout when captured
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, **kw)
        self.pid = self.popen.pid
        self.exited_at = None
        self._threads = [threading.Thread(target=self._reader, args=(self.popen.stderr, self.lines),
                                          daemon=True)]
        if capture_stdout:
            self._threads.append(threading.Thread(
                target=self._reader, args=(self.popen.stdout, self.out_lines), daemon=True))
        for t in self._threads:
            t.start()

    def _reader(self, stream, into):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                into.append((time.time(), line))
                self._cond.notify_all()
        stream.close()

    def text(self):
        with self._cond:
            return "\n".join(l for _, l in self.lines)

    def wait_line(self, predicate, timeout, start=0):
        """First (time, line) of stderr, from index `start` on, for which predicate(line) is
        true; None at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.lines[start:]:
                    if predicate(item[1]):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.05))

    def wait(self, timeout):
        """Exit status, or None if still running at the deadline. `exited_at` is then the
        time.monotonic() at which the exit was seen. The output readers get up to 0.5 s more
        to reach the end of the pipes (children that inherited them may hold them open)."""
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        for t in self._threads:
            t.join(0.5)
        return rc

    def kill(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, 9)
            except OSError:
                pass
            try:
                self.popen.kill()
            except OSError:
                pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(2)


class Bed:
    """Router and provider namespaces, underlay veth, `tunnels` VXLAN tunnels over it."""

    def __init__(self, tunnels=1):
        _counter[0] += 1
        base = "%s%d-%d" % (PREFIX, os.getpid(), _counter[0])
        self.router = base + "-router"
        self.provider = base + "-provider"
        self.tunnels = tunnels
        self.procs = []
        self._made = []
        remove_stale_namespaces()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # ---- construction -------------------------------------------------------------------
    def _setup(self):
        for ns in (self.router, self.provider):
            ip("netns", "add", ns)
            self._made.append(ns)
            # no IPv6: no router solicitations, MLD reports or DAD on our devices
            # (/proc/sys/net is the namespace's own once inside it; no need for procps)
            subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && "
                            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
                           check=True, capture_output=True)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", UNDERLAY, "netns", self.router, "address", ROUTER_WAN_MAC,
           "type", "veth", "peer", "name", UNDERLAY, "netns", self.provider,
           "address", PROVIDER_WAN_MAC)
        for ns, addr, peer, peer_mac in ((self.router, ROUTER_WAN, PROVIDER_WAN, PROVIDER_WAN_MAC),
                                         (self.provider, PROVIDER_WAN, ROUTER_WAN, ROUTER_WAN_MAC)):
            ip("-n", ns, "addr", "add", addr + "/24", "dev", UNDERLAY)
            ip("-n", ns, "link", "set", UNDERLAY, "up")
            ip("-n", ns, "neigh", "replace", peer, "lladdr", peer_mac, "dev", UNDERLAY,
               "nud", "permanent")
        for i in range(self.tunnels):
            for side in ("router", "provider"):
                for cmd in self._tunnel_cmds(i, side):
                    ip(*cmd)

    def _tunnel_cmds(self, i, side):
        ns = self.router if side == "router" else self.provider
        other = "provider" if side == "router" else "router"
        local, remote = (ROUTER_WAN, PROVIDER_WAN) if side == "router" else (PROVIDER_WAN, ROUTER_WAN)
        dev = tunnel_dev(i)
        return [
            ["-n", ns, "link", "add", dev, "address", tunnel_mac(i, side), "type", "vxlan",
             "id", str(42 + i), "local", local, "remote", remote, "dstport", VXLAN_PORT,
             "dev", UNDERLAY, "nolearning"],
            ["-n", ns, "addr", "add", tunnel_addr(i, side) + "/24", "dev", dev],
            ["-n", ns, "neigh", "replace", tunnel_addr(i, other), "lladdr", tunnel_mac(i, other),
             "dev", dev, "nud", "permanent"],
            ["-n", ns, "link", "set", dev, "up"],
        ]

    # ---- teardown -------------------------------------------------------------------------
    def close(self):
        """Kill every process started by the bed or living in its namespaces; delete them."""
        for p in self.procs:
            p.kill()
        for ns in self._made:
            _kill_netns_processes(ns)
            ip("netns", "del", ns, check=False)
        self._made = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- running things -------------------------------------------------------------------
    def exec_argv(self, ns, argv):
        """argv that runs `argv` inside namespace `ns`."""
        return ["ip", "netns", "exec", ns] + [str(a) for a in argv]

    def spawn(self, ns, argv, **kw):
        """Start argv in `ns` in its own session; killed at close()."""
        p = Proc(self.exec_argv(ns, argv), **kw)
        self.procs.append(p)
        return p

    def pinger_argv(self, dsts, count=0, interval=0.05, wait=0.5, stats=None):
        argv = [sys.executable, "-S", HERE, "ping", "--count", str(count),
                "--interval", str(interval), "--wait", str(wait)]
        if stats:
            argv += ["--stats", str(stats)]
        return argv + list(dsts)

    def ping(self, ns, dsts, count, interval=0.05, wait=0.5):
        """Send `count` echo requests to each of dsts from `ns`; returns (sent, received)
        dictionaries keyed by destination."""
        r = subprocess.run(self.exec_argv(ns, self.pinger_argv(dsts, count, interval, wait)),
                           capture_output=True, text=True, timeout=count * interval + wait + 30)
        if r.returncode != 0:
            raise RuntimeError("pinger failed: %s" % r.stderr)
        res = json.loads(r.stdout)
        return res["sent"], res["received"]

    def start_traffic(self, dsts=None, interval=0.05, stats=None):
        """Steady background traffic from the router: an echo request to every dst each
        `interval` seconds, for as long as the bed lives (the LAN's users)."""
        if dsts is None:
            dsts = [tunnel_addr(i, "provider") for i in range(self.tunnels)] + [PROVIDER_WAN]
        return self.spawn(self.router, self.pinger_argv(dsts, 0, interval, 0.5, stats))

    def counters(self, ns):
        """/proc/net/dev of namespace `ns`, parsed."""
        r = subprocess.run(self.exec_argv(ns, ["cat", "/proc/net/dev"]), capture_output=True,
                           text=True, check=True)
        return read_proc_net_dev(r.stdout)

    def wait_rx(self, ns, dev, timeout, moving=True, quiet=0.3):
        """moving=True: wait until dev's RX packets grow. moving=False: wait until they have
        not changed for `quiet` seconds. True if that happened before the deadline."""
        deadline = time.monotonic() + timeout
        last = self.counters(ns).get(dev, {}).get("rx_packets")
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.counters(ns).get(dev, {}).get("rx_packets")
            if now != last:
                if moving and now is not None and last is not None and now > last:
                    return True
                last, since = now, time.monotonic()
            elif not moving and time.monotonic() - since >= quiet:
                return True
        return False

    # ---- outages and repairs ---------------------------------------------------------------
    def break_endpoint_cmd(self, i=0, address=WRONG_WAN):
        """Shell line: the provider's end of tunnel i sends to `address` (IPv4 changed)."""
        return sh_join(["ip", "-n", self.provider, "link", "set", tunnel_dev(i), "type", "vxlan",
                        "remote", address])

    def repair_endpoint_cmd(self, i=0):
        """Shell line: the provider's end of tunnel i sends to the router's address again."""
        return self.break_endpoint_cmd(i, ROUTER_WAN)

    def break_endpoint(self, i=0):
        """Cut tunnel i; returns time.time() just after the kernel took the change."""
        subprocess.run(self.break_endpoint_cmd(i), shell=True, check=True)
        return time.time()

    def repair_endpoint(self, i=0):
        subprocess.run(self.repair_endpoint_cmd(i), shell=True, check=True)

    def underlay_down_cmd(self):
        return sh_join(["ip", "-n", self.provider, "link", "set", UNDERLAY, "down"])

    def underlay_up_cmd(self):
        return sh_join(["ip", "-n", self.provider, "link", "set", UNDERLAY, "up"])

    def underlay_down(self):
        subprocess.run(self.underlay_down_cmd(), shell=True, check=True)
        return time.time()

    def underlay_up(self):
        subprocess.run(self.underlay_up_cmd(), shell=True, check=True)

    def recreate_tunnel_cmd(self, i=0, side="router"):
        """Shell lines: delete tunnel i's device on `side` and create it again (counters 0)."""
        ns = self.router if side == "router" else self.provider
        lines = [sh_join(["ip", "-n", ns, "link", "del", tunnel_dev(i)])]
        lines += [sh_join(["ip"] + c) for c in self._tunnel_cmds(i, side)]
        return "\n".join(lines)

    def recreate_tunnel(self, i=0, side="router"):
        subprocess.run(self.recreate_tunnel_cmd(i, side), shell=True, check=True)


# ---- generated scripts -----------------------------------------------------------------------
def write_script(path, log, name=None, body="", exit_code=0):
    """An executable /bin/sh script that first records its call into `log` (see `record`),
    then runs `body`, then exits with `exit_code` (the body's own `exit` wins)."""
    name = name or os.path.basename(str(path))
    text = "#!/bin/sh\n%s record %s %s \"$@\"\n%s\nexit %d\n" % (
        sh_join([sys.executable, "-S", HERE]), sh_quote(log), sh_quote(name), body, exit_code)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return str(path)


def read_records(log):
    """The JSON records appended to `log` by `record`, in order (none if it does not exist)."""
    try:
        with open(log) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def wait_records(log, predicate, timeout, count=1):
    """Poll `log` until at least `count` records satisfy predicate; returns all records that
    do (possibly fewer than count at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in read_records(log) if predicate(r)]
        if len(got) >= count or time.monotonic() >= deadline:
            return got
        time.sleep(0.02)


def wait_until(predicate, timeout, step=0.02):
    """Poll predicate() until true or the deadline; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


# ---- command-line helpers run inside namespaces ----------------------------------------------
def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def _ping_main(args):
    count, interval, wait, stats, dsts = 0, 0.05, 0.5, None, []
    it = iter(args)
    for a in it:
        if a == "--count":
            count = int(next(it))
        elif a == "--interval":
            interval = float(next(it))
        elif a == "--wait":
            wait = float(next(it))
        elif a == "--stats":
            stats = next(it)
        else:
            dsts.append(a)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    sent = dict((d, 0) for d in dsts)
    received = dict((d, 0) for d in dsts)
    seen = set()
    seq = 0
    next_send = time.monotonic()
    end = None

    def drain():
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8:
                continue
            typ, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and addr[0] in received and (addr[0], rseq) not in seen:
                seen.add((addr[0], rseq))
                received[addr[0]] += 1

    def dump():
        if stats:
            tmp = stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"sent": sent, "received": received, "time": time.time()}, f)
            os.rename(tmp, stats)

    while True:
        now = time.monotonic()
        if end is None and now >= next_send:
            seq = (seq + 1) & 0xFFFF
            for d in dsts:
                hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                payload = b"tunmon-e2e" + struct.pack("!d", time.time())
                pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload
                try:
                    sock.sendto(pkt, (d, 0))
                    sent[d] += 1
                except OSError:
                    pass        # device gone or no route: the tunnel is broken, keep going
            next_send += interval
            if next_send < now:
                next_send = now + interval
            if count and seq >= count:
                end = now + wait
            dump()
        if end is not None and now >= end:
            break
        drain()
        time.sleep(0.005)
    drain()
    dump()
    sys.stdout.write(json.dumps({"sent": sent, "received": received}) + "\n")
    return 0


def _record_main(args):
    t = time.time()
    log, name, argv = args[0], args[1], args[2:]
    env = dict((k, v) for k, v in os.environ.items()
               if k.startswith("TUNMON_") or k.startswith("TUN_DOWN_"))
    rec = {"time": t, "name": name, "argv": argv, "env": env, "pid": os.getppid(),
           "pgid": os.getpgid(0)}
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec) + "\n").encode())
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "ping":
        sys.exit(_ping_main(sys.argv[2:]))
    if len(sys.argv) >= 4 and sys.argv[1] == "record":
        sys.exit(_record_main(sys.argv[2:]))
    sys.stderr.write(__doc__)
    sys.exit(2)
