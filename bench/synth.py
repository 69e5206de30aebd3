"""Synthetic inputs for the benchmark: /proc/net/dev files, configs and replay traces.

Everything is deterministic (a seeded generator), so two runs measure the same bytes.
The file format is the kernel's own (net/core/net-procfs.c, dev_seq_printf_stats()):
    "%6s: %7llu %7llu %4llu %4llu %4llu %5llu %10llu %9llu %8llu %7llu %4llu %4llu %4llu %5llu %7llu %10llu\n"
(Older kernels wrote "%6s:%8llu", which glues a name to a counter of 8 digits or more;
tunmon reads both, and the tests hold it to the old one too.)
"""
import random

HEADER = (b"Inter-|   Receive                                                |  Transmit\n"
          b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets"
          b" errs drop fifo colls carrier compressed\n")

FIXED_NAMES = ["lo", "eth0", "eth1", "br-lan", "wlan0", "wlan1", "pppoe-wan", "tun0"]


def interface_names(count):
    """A router's usual devices first, then tunnels tun1, tun2, ... up to `count` names."""
    names = FIXED_NAMES[:count]
    i = 1
    while len(names) < count:
        names.append("tun%d" % i)
        i += 1
    if count >= 4 and "tun0" not in names:
        names[-1] = "tun0"
    return names


def watched_names(names, count):
    """`count` names spread evenly over the file, always including the last line.

    One watched device is the last line: the longest search for a reader that looks names up.
    """
    total = len(names)
    if count >= total:
        return list(names)
    step = total // count
    picked = sorted(total - 1 - j * step for j in range(count))
    return [names[i] for i in picked]


def dev_line(name, rx_bytes, rx_packets, tx_bytes, tx_packets):
    return ("%6s: %7d %7d %4d %4d %4d %5d %10d %9d %8d %7d %4d %4d %4d %5d %7d %10d\n"
            % (name, rx_bytes, rx_packets, 0, 0, 0, 0, 0, 0,
               tx_bytes, tx_packets, 0, 0, 0, 0, 0, 0)).encode()


class Counters:
    """Counters of a set of busy devices; step() adds one tick of traffic to every device."""

    def __init__(self, names, seed=7, bytes_from=0):
        """`bytes_from`: added to the byte counters (2**62 puts them where a 64-bit
        MicroPython needs big ints, as a 32-bit one does past 2**30)."""
        self.rng = random.Random(seed)
        self.names = list(names)
        self.rx_bytes = [self.rng.randrange(10 ** 9, 10 ** 12) for _ in names]
        self.rx_packets = [b // 700 for b in self.rx_bytes]
        self.rx_bytes = [b + bytes_from for b in self.rx_bytes]
        self.tx_bytes = [self.rng.randrange(10 ** 8, 10 ** 11) for _ in names]
        self.tx_packets = [b // 900 for b in self.tx_bytes]

    def step(self, silent=()):
        rng = self.rng
        for i, name in enumerate(self.names):
            if name in silent:
                continue
            packets = rng.randrange(2, 200)
            self.rx_packets[i] += packets
            self.rx_bytes[i] += packets * rng.randrange(60, 1500)
            self.tx_packets[i] += packets
            self.tx_bytes[i] += packets * 80

    def snapshot(self):
        out = [HEADER]
        for i, name in enumerate(self.names):
            out.append(dev_line(name, self.rx_bytes[i], self.rx_packets[i], self.tx_bytes[i],
                                self.tx_packets[i]))
        return b"".join(out)


def proc_pair(count, seed=7, bytes_from=0):
    """Two consecutive snapshots (tick k and k+1, every device received) of `count` devices."""
    counters = Counters(interface_names(count), seed, bytes_from)
    first = counters.snapshot()
    counters.step()
    return first, counters.snapshot(), counters


def xml_escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def config_xml(devices, interval="1", ladder="normal", script="/bin/true", status_file=None,
               status_interval=None):
    """A tunmon config for `devices`.

    ladder "normal": actions at 15 s and 60 s, a retry every 120 s, restore and post-restore
    scripts (the README's example ladder).  "far": the same ladder at 1 day, so a silent
    device never fires within a benchmark (used where the input does not move).
    """
    if ladder == "far":
        times = ("1d", "1d", "1d")
    else:
        times = ("15", "60", "120")
    parts = ["<tun_mon>\n  <net_devices>\n"]
    for name in devices:
        parts.append("    <net_device>%s</net_device>\n" % xml_escape(name))
    parts.append("  </net_devices>\n  <interval>%s</interval>\n" % interval)
    if status_file:
        parts.append("  <status_file>%s</status_file>\n" % xml_escape(status_file))
    if status_interval:
        parts.append("  <status_interval>%s</status_interval>\n" % status_interval)
    parts.append("  <actions>\n"
                 "    <action><time>%s</time><script>%s ping</script></action>\n"
                 "    <action><time>%s</time><script>%s rebuild</script></action>\n"
                 "  </actions>\n" % (times[0], script, times[1], script))
    parts.append("  <retry_actions>\n"
                 "    <retry><interval>%s</interval><script>%s retry</script></retry>\n"
                 "  </retry_actions>\n" % (times[2], script))
    parts.append("  <restore_dev><script>%s restored</script></restore_dev>\n" % script)
    parts.append("  <post_restore_any><script>%s post</script></post_restore_any>\n" % script)
    parts.append("</tun_mon>\n")
    return "".join(parts)


def replay_trace(path, devices, ticks, extra=("lo", "eth0", "br-lan"), seed=11):
    """Write a --replay trace: `ticks` snapshots of `extra` + `devices`, all busy except a few
    outages (some devices silent for a few hundred ticks), so the ladder fires and restores.
    Returns the number of outages."""
    names = list(extra) + list(devices)
    counters = Counters(names, seed)
    outages = []                       # (device, first silent tick, last silent tick)
    for j, name in enumerate(devices[:8]):
        # Outages between 10% and 70% of the trace, long enough for actions and retries.
        start = ticks // 10 + (j * 1237) % max(1, ticks * 6 // 10)
        outages.append((name, start, start + min(150 + 40 * j, ticks // 4)))
    with open(path, "wb") as f:
        for tick in range(ticks):
            silent = [name for name, first, last in outages if first <= tick <= last]
            if tick:
                counters.step(silent)
            f.write(counters.snapshot())
    return len(outages)
