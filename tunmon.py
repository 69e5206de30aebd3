"""tunmon: run an escalating ladder of scripts when a network interface stops receiving.

It watches the RX counters of chosen interfaces in /proc/net/dev.  While traffic flows it does
nothing but read that file once per interval: no probes.  When a device stays silent, actions
fire at their configured silence (a ping through the tunnel, a rebuild, an alert), retries
repeat at a longer period while the silence lasts, and restore scripts run when traffic returns.

The pieces, each testable alone:
  CounterReader  reads the counters into a fixed buffer and parses them in place;
  Monitor        the decision rules: given counters and elapsed ticks, which events fire.
                 Pure (no clock, no processes), so the live loop, --replay and the tests all
                 drive this one object;
  *Runner        start, poll and signal script processes, one class per platform mechanism;
  ScriptPool     concurrency limit, timeouts, duplicate suppression and exit logging;
  Daemon         the live loop: clock, signals, pidfile.

Runs unchanged on CPython 3.11+ and on the MicroPython unix port.
"""
import os
import sys
import time

import tunmon_xml
from tunmon_xml import (ConfigError, EVENT_ACTION, EVENT_POST_RESTORE, EVENT_RESTORE,
                        EVENT_RETRY, format_seconds, is_tunmon, log, os_error_text, to_ms)

EVENT_PROBE = "probe"
VERSION = "1.0.0"
DEFAULT_CONFIG = "/etc/tunmon.xml"
GENERATED_CONFIG = "/var/etc/tunmon.xml"   # what OpenWrt's init script writes from UCI
DEFAULT_PROC = "/proc/net/dev"
DEFAULT_SYS = "/sys/class/net"
# The environment may name another hotplug-call: a test cannot put one into /sbin.
HOTPLUG_CALL = os.getenv("TUNMON_HOTPLUG_CALL") or "/sbin/hotplug-call"
KILL_GRACE_MS = 5000    # between SIGTERM and SIGKILL for a script
STOP_GRACE_MS = 2000    # how long tunmon waits for scripts on shutdown before SIGKILL
SIGHUP, SIGINT, SIGKILL, SIGTERM = 1, 2, 9, 15
ENOENT = 2
EAGAIN = 11
# /proc/net/dev of some 30,000 interfaces.  A file that keeps filling a buffer this large
# (/dev/zero, a log given by mistake) is no counter file: read on, it would take all memory.
MAX_PROC_BYTES = 4 * 1024 * 1024


# The clock of the live loop, of script timeouts and of the signal wait: integer milliseconds
# of the monotonic clock, as MicroPython's ticks_ms() counts them (they wrap, so two readings
# are compared only through ticks_diff), and the same on CPython.  Integers because on
# MicroPython every float operation allocates, and a small int never does.
try:
    ticks_ms = time.ticks_ms
    ticks_add = time.ticks_add
    ticks_diff = time.ticks_diff
    sleep_ms = time.sleep_ms
except AttributeError:
    def ticks_ms():
        return time.monotonic_ns() // 1000000

    def ticks_add(ticks, delta):
        return ticks + delta

    def ticks_diff(later, earlier):
        return later - earlier

    def sleep_ms(milliseconds):
        time.sleep(milliseconds / 1000.0)


# MicroPython collects its heap only when it is full, and after a collection allocates from
# the lowest free block again.  Collecting after every HEAP_SLACK bytes allocated instead
# keeps tunmon to its live set plus that much:
#  - the few hundred bytes of each status write no longer walk the daemon through its whole
#    heap (1 MiB by default on a 32-bit router) within hours, every page touched staying
#    resident: make bench, "MicroPython RSS";
#  - garbage, such as the config parser's element tree, is gone before it piles up between
#    the objects that stay, so a smaller heap suffices: make bench, "smallest MicroPython
#    heap".
# The price is more collections: a --replay of many ticks takes longer.
HEAP_SLACK = 16384


def collect_early():
    import gc
    if hasattr(gc, "threshold"):    # MicroPython; CPython frees most objects at once
        gc.threshold(HEAP_SLACK)


# ---------------------------------------------------------------------------------------------
# Counters

LINK_UP = "up"
LINK_DOWN = "down"
LINK_UNKNOWN = "unknown"
LINK_ABSENT = "absent"

class Counters:
    """Per-device readings of one tick, in config device order; -1 means absent.

    RX is read every tick, because the rules judge it.  TX is only shown (status, stats),
    so it is read when asked for, with load_tx(), which halves the parsing of a tick.
    """

    failure = ""    # why the last read() failed (it returned False), for the log

    def __init__(self, devices):
        count = len(devices)
        self.rx_bytes = [-1] * count
        self.rx_packets = [-1] * count
        self.tx_bytes = [-1] * count
        self.tx_packets = [-1] * count
        # Filled in by the LinkReader and the Prober when they are in use.
        self.link = [LINK_UNKNOWN] * count
        self.replied = bytearray(count)

    def absent(self, i):
        self.rx_bytes[i] = -1
        self.rx_packets[i] = -1

    def load_tx(self):
        """Fill tx_bytes and tx_packets for the reading just taken."""

    def close(self):
        """Close what the source keeps open."""


class CounterReader(Counters):
    """Counters of the watched devices from a /proc/net/dev style file.

    The file is read into one preallocated buffer (grown only when a file does not fit) and
    parsed in place: no per-line strings.  Lines are found by searching for `name:`, which is
    exact because Linux forbids ':' and whitespace in interface names; the match must start a
    line or follow the padding spaces, so `eth0` never matches `veth0`.  Devices are searched
    in the order they were last found, so all searches together scan the buffer about once.
    A file under /proc/ stays open: reading it again from the start asks the kernel anew.
    """

    source = "proc"

    def __init__(self, path, devices):
        Counters.__init__(self, devices)
        self.path = path
        self.checked = False    # found to be a regular file (a FIFO would block the open)
        self.buf = bytearray(4096)
        self.view = memoryview(self.buf)    # made once: each memoryview allocates
        self.tail = bytearray(256)          # where a read finds the end of the file
        self.parsed_buf = self.buf      # the buffer and length load_tx() reads from
        self.parsed_end = 0
        self.patterns = [name.encode() + b":" for name in devices]
        self.found_at = [0] * len(devices)
        self.rx_end = [0] * len(devices)   # where each line's RX numbers end
        self.scan_order = list(range(len(devices)))
        self.file = None
        self.keep_open = path.startswith("/proc/")

    def read(self):
        """Read the file; returns False (and keeps the old buffer, and says why in `failure`)
        if it cannot be read."""
        f = self.file
        try:
            if f is None:
                if not self.checked:
                    if os.stat(self.path)[0] & 0o170000 != 0o100000:
                        self.failure = "not a regular file"
                        return False
                    self.checked = True
                f = open(self.path, "rb", buffering=0)
            else:
                f.seek(0)
            length = self._fill(f)
            while length == len(self.buf):
                if length >= MAX_PROC_BYTES:
                    self.failure = "larger than %d MiB" % (MAX_PROC_BYTES >> 20)
                    break
                self.buf = bytearray(len(self.buf) * 2)
                self.view = memoryview(self.buf)
                f.seek(0)
                length = self._fill(f)
            if self.keep_open:
                self.file = f
            else:
                f.close()
        except OSError as err:
            self.failure = os_error_text(err)
        except MemoryError:
            self.failure = "out of memory for a file of over %d KiB" % (len(self.buf) >> 10)
        else:
            if length < len(self.buf):
                self.parse(self.buf, length)
                return True
        if f is not self.file:
            close_quietly(f)
        self.close()
        self.checked = False
        return False

    def close(self):
        if self.file is not None:
            close_quietly(self.file)
            self.file = None

    def _fill(self, f):
        # /proc files come in pieces (one page per read), so read until a read returns
        # nothing.  On MicroPython each memoryview slice allocates, so the first read goes
        # straight into the buffer and the next into a small one of its own: for a file of
        # one page, the usual /proc/net/dev, a tick allocates nothing.
        buf = self.buf
        length = f.readinto(buf) or 0
        if 0 < length < len(buf):
            got = f.readinto(self.tail) or 0
            if got:
                fits = min(got, len(buf) - length)
                buf[length:length + fits] = self.tail[:fits]
                length = length + fits if fits == got else len(buf)  # full: the caller grows it
            while got and length < len(buf):
                got = f.readinto(self.view[length:])
                length += got or 0
        return length

    def parse(self, buf, end):
        self.parsed_buf = buf
        self.parsed_end = end
        pos = 0
        out_of_order = False
        for i in self.scan_order:
            pattern = self.patterns[i]
            at = _find_name(buf, pattern, pos, end)
            if at < 0 and pos:
                at = _find_name(buf, pattern, 0, pos)
                out_of_order = at >= 0
            if at < 0:
                self.absent(i)
                continue
            self.found_at[i] = at
            line_end = buf.find(b"\n", at, end)
            if line_end < 0:
                line_end = end
            self.rx_bytes[i] = _number(buf, at + len(pattern), line_end)
            self.rx_packets[i] = _number(buf, _number_end, line_end)
            self.rx_end[i] = _number_end
            if self.rx_bytes[i] < 0 or self.rx_packets[i] < 0:
                self.absent(i)     # a malformed line tells nothing: treat it as missing
            pos = line_end
        if out_of_order:
            self._reorder()

    def _reorder(self):
        # Apart from parse(): on MicroPython a lambda using `self` would allocate a cell for
        # `self` at every call of the function that holds it.
        self.scan_order.sort(key=lambda i: self.found_at[i])

    def load_tx(self):
        """TX bytes and packets are the 9th and 10th numbers: 6 more after RX's two."""
        buf = self.parsed_buf
        end = self.parsed_end
        for i in range(len(self.rx_bytes)):
            tx_bytes = tx_packets = -1
            if self.rx_bytes[i] >= 0:
                line_end = buf.find(b"\n", self.rx_end[i], end)
                if line_end < 0:
                    line_end = end
                pos = self.rx_end[i]
                for _ in range(6):
                    if _number(buf, pos, line_end) < 0:
                        break
                    pos = _number_end
                else:
                    tx_bytes = _number(buf, pos, line_end)
                    tx_packets = _number(buf, _number_end, line_end)
            self.tx_bytes[i] = tx_bytes if tx_packets >= 0 else -1
            self.tx_packets[i] = tx_packets


def _find_name(buf, pattern, start, end):
    while True:
        at = buf.find(pattern, start, end)
        if at <= 0 or buf[at - 1] == 32 or buf[at - 1] == 10:
            return at
        start = at + 1


_number_end = 0   # where the last _number() stopped: saves allocating a tuple per field


if sys.implementation.name == "micropython":
    def _number(buf, pos, end):
        """Parse the decimal number at buf[pos:] after spaces; -1 if there is none (malformed).

        A digit loop, because on MicroPython a slice for int() would allocate every tick.
        (Comparing the byte itself, not byte - 48 against 0 and 9, is 10% faster there.)
        The last 9 digits gather in `low` and the ones before in `high`: on a 32-bit build an
        int past 2**30 is a heap object, and a counter of 12 digits would otherwise make one
        at every digit past the 9th (make bench, "32-bit": 2.4 KiB a tick for 8 devices).
        """
        global _number_end
        while pos < end and buf[pos] == 32:
            pos += 1
        start = pos
        low = 0
        first_nine = start + 9 if start + 9 < end else end
        while pos < first_nine:
            byte = buf[pos]
            if byte < 48 or byte > 57:
                break
            low = low * 10 + byte - 48
            pos += 1
        high = 0
        while pos < end:                # past the 9th digit: low's first moves up to high
            byte = buf[pos]
            if byte < 48 or byte > 57:
                break
            high = high * 10 + low // 100000000
            low = low % 100000000 * 10 + byte - 48
            pos += 1
        _number_end = pos
        # 20 digits hold any 64-bit counter; anything longer, or a sign, is garbage.
        if pos == start or pos - start > 20 or (pos < end and buf[pos] != 32):
            return -1
        return high * 1000000000 + low if high else low
else:
    def _number(buf, pos, end):
        """Parse the decimal number at buf[pos:] after spaces; -1 if there is none (malformed).

        CPython: int() of the field parses in C, 2.5x faster than a digit loop, and CPython
        frees the slice at once.
        """
        global _number_end
        while pos < end and buf[pos] == 32:
            pos += 1
        stop = buf.find(b" ", pos, end)
        if stop < 0:
            stop = end
        _number_end = stop
        digits = buf[pos:stop]
        # 20 digits hold any 64-bit counter; anything longer, or a sign, is garbage.
        if stop - pos > 20 or not digits.isdigit():
            return -1
        return int(digits)


class SysfsValue:
    """One sysfs attribute, kept open while the open-file budget lasts: reading it again from
    offset 0 asks the kernel anew, and skips the open and close that cost most of a read
    (about 10 µs against 1.5 µs, measured by make bench).  A vanished device's file fails
    to read; it is closed and opened again once the device is back.

    This is the MicroPython shape (a file object, seek and readinto: nothing allocated);
    SysfsFd below is CPython's.
    """

    open_files = 0
    OPEN_FILES_MAX = 256        # procd gives a service 1,024 descriptors

    def __init__(self, path):
        self.path = path
        self.file = None

    def read(self, buf):
        """Read into `buf`; the length without the trailing newline, or -1 if unreadable."""
        try:
            f = self.file
            if f is None:
                f = open(self.path, "rb", buffering=0)
                self._keep(f)
            else:
                f.seek(0)
            length = f.readinto(buf)
            if self.file is None:
                f.close()
        except OSError:
            self.close()
            return -1
        return without_newline(buf, length)

    def _keep(self, handle):
        """Keep `handle` open for the next readings if the open-file budget allows."""
        if SysfsValue.open_files < SysfsValue.OPEN_FILES_MAX:
            self.file = handle
            SysfsValue.open_files += 1

    def number(self, buf):
        """The value as a counter (read through `buf`), or -1 if unreadable or malformed."""
        length = self.read(buf)
        return _number(buf, 0, length) if length > 0 else -1

    def close(self):
        if self.file is not None:
            close_quietly(self.file)
            self.file = None
            SysfsValue.open_files -= 1


class SysfsFd(SysfsValue):
    """CPython: a descriptor and os.pread, one system call per reading where seek + readinto
    take two, and int() parses what it returns in C."""

    def read(self, buf):
        fd = self.file
        try:
            data = os.pread(fd, 32, 0) if fd is not None else self._read_once()
        except OSError:
            self.close()
            return -1
        buf[:len(data)] = data
        return without_newline(buf, len(data))

    def number(self, buf):
        fd = self.file
        try:
            # The kept descriptor first: on a healthy tick this line is all the reading.
            data = os.pread(fd, 32, 0) if fd is not None else self._read_once()
            value = int(data)       # sysfs values end with a newline, which int() allows
        except OSError:
            self.close()
            return -1
        except ValueError:
            return -1
        return value if value >= 0 else -1

    def _read_once(self):
        """Open the file, keep it if the budget allows, and read it."""
        fd = os.open(self.path, os.O_RDONLY)
        self._keep(fd)
        try:
            return os.pread(fd, 32, 0)
        finally:
            if self.file is None:
                os.close(fd)

    def close(self):
        if self.file is not None:
            try:
                os.close(self.file)
            except OSError:
                pass
            self.file = None
            SysfsValue.open_files -= 1


sysfs_value = SysfsFd if hasattr(os, "pread") else SysfsValue


class SysfsCounterReader(Counters):
    """Counters from /sys/class/net/<dev>/statistics/: a few µs per watched device, where
    /proc/net/dev costs the kernel time for every interface on the system."""

    source = "sysfs"

    def __init__(self, root, devices):
        Counters.__init__(self, devices)
        self.values = [[sysfs_value("%s/%s/statistics/%s" % (root, name, field))
                        for field in ("rx_bytes", "rx_packets")] for name in devices]
        self.tx_values = [["%s/%s/statistics/%s" % (root, name, field)
                           for field in ("tx_bytes", "tx_packets")] for name in devices]
        self.buf = bytearray(32)
        self.kept_fds = None    # CPython: (rx_bytes, rx_packets) descriptors, all kept open

    def read(self):
        kept_fds = self.kept_fds
        if kept_fds is not None:
            # The healthy tick on CPython: one os.pread and one int() per value, in this loop:
            # the calls per value of the careful reading below cost more than all the rest of
            # what it adds to the system calls (make bench, the real-kernel table).
            rx_bytes = self.rx_bytes
            rx_packets = self.rx_packets
            i = 0
            try:
                for bytes_fd, packets_fd in kept_fds:
                    rx_bytes[i] = int(os.pread(bytes_fd, 32, 0))
                    rx_packets[i] = int(os.pread(packets_fd, 32, 0))
                    if rx_bytes[i] < 0 or rx_packets[i] < 0:
                        raise ValueError("negative counter")
                    i += 1
                return True
            except (OSError, ValueError):
                # A device vanished or a value is odd: the careful reading below says which.
                self.kept_fds = None
        buf = self.buf
        values = self.values
        for i in range(len(values)):
            rx_bytes = values[i][0].number(buf)
            rx_packets = values[i][1].number(buf) if rx_bytes >= 0 else -1
            if rx_packets < 0:
                self.absent(i)
            else:
                self.rx_bytes[i] = rx_bytes
                self.rx_packets[i] = rx_packets
        if sysfs_value is SysfsFd and all(v.file is not None for pair in values for v in pair):
            self.kept_fds = [(pair[0].file, pair[1].file) for pair in values]
        return True

    def load_tx(self):
        buf = self.buf
        for i, paths in enumerate(self.tx_values):
            tx_bytes = tx_packets = -1
            if self.rx_bytes[i] >= 0:
                length = read_small(paths[0], buf)
                tx_bytes = _number(buf, 0, length) if length > 0 else -1
                length = read_small(paths[1], buf)
                tx_packets = _number(buf, 0, length) if length > 0 else -1
            self.tx_bytes[i] = tx_bytes if tx_packets >= 0 else -1
            self.tx_packets[i] = tx_packets

    def close(self):
        self.kept_fds = None    # closed descriptors' numbers are soon another file's
        for pair in self.values:
            for value in pair:
                value.close()


def read_small(path, buf):
    """Read a small sysfs file once into `buf`; its length without the newline, or -1."""
    try:
        with open(path, "rb", buffering=0) as f:
            length = f.readinto(buf)
    except OSError:
        return -1
    return without_newline(buf, length)


def without_newline(buf, length):
    """sysfs values end with a newline; the parsers want just the value."""
    if length and buf[length - 1] == 10:
        length -= 1
    return length or 0


def close_quietly(f):
    try:
        f.close()
    except OSError:
        pass


# operstate words by first letter * 256 + length, which tells them apart without making a
# string or a tuple (either would allocate on MicroPython at every tick).
OPERSTATE_LINK = {ord("u") * 256 + 2: LINK_UP, ord("d") * 256 + 4: LINK_DOWN,
                  ord("l") * 256 + 14: LINK_DOWN, ord("n") * 256 + 10: LINK_DOWN,
                  ord("d") * 256 + 7: LINK_DOWN}  # up, down, lowerlayerdown, notpresent, dormant


class LinkReader:
    """Link state of the watched devices from /sys/class/net/<dev>/operstate and carrier.

    Tunnels report operstate "unknown"; for them the carrier decides.  Read every tick, also
    for devices that receive: link_down_is_silence must catch a driver that keeps counting on
    a down link.  Not for a device the counters did not find: it has no link either, and a
    failing open allocates an OSError on MicroPython, tick after tick of an outage (about
    190 B a device and tick).  A device that is gone has its files closed: a re-created one
    is read through new ones, not through the old device's (which say ENODEV).
    """

    def __init__(self, root, devices):
        self.operstate = [sysfs_value("%s/%s/operstate" % (root, name)) for name in devices]
        self.carrier = [sysfs_value("%s/%s/carrier" % (root, name)) for name in devices]
        self.buf = bytearray(32)

    def read_into(self, links, rx_bytes):
        buf = self.buf
        for i in range(len(links)):
            length = self.operstate[i].read(buf) if rx_bytes[i] >= 0 else -1
            if length < 0:
                self.operstate[i].close()
                self.carrier[i].close()
                links[i] = LINK_ABSENT
                continue
            link = OPERSTATE_LINK.get(buf[0] * 256 + length) if length else None
            if link is None:
                length = self.carrier[i].read(buf)
                link = LINK_UNKNOWN if length != 1 else (LINK_UP if buf[0] == 49 else LINK_DOWN)
            links[i] = link

    def close(self):
        for value in self.operstate + self.carrier:
            value.close()


# ---------------------------------------------------------------------------------------------
# Decisions

# Device states, as trace and status show them.
STATE_UP = "up"
STATE_SILENT = "silent"
STATE_DOWN = "down"
STATE_HELD = "held"
STATE_ABSENT = "absent"
STATE_LINK_DOWN = "link down"


class DeviceState:
    """What the rules remember about one watched device between ticks."""

    def __init__(self, name):
        self.name = name
        self.rx_bytes = -1      # counters at the last reading where it was present
        self.rx_packets = -1
        self.present = False
        self.link = LINK_UNKNOWN
        self.age = 0            # ticks since traffic was last seen
        self.down = False       # an action or retry fired in the current silent spell
        self.held = False       # its underlay is down: its ladder waits
        self.quiet = False      # nothing heard at the last tick (even if age restarted at 0)
        self.state = STATE_UP
        self.state_since = 0    # Monitor.ticks when `state` began
        self.actions = 0        # events fired for it since start, for status
        self.retries = 0
        self.restores = 0
        self.probes = 0
        self.last_event = None  # (event, Monitor.ticks)

    def setup(self, config, ladders):
        """Take this device's settings and ladder from a (new) config.  Devices with the same
        ladder share it through `ladders` (a dict): 220 B a device on a 64-bit MicroPython."""
        settings = config.device[self.name]
        self.target = settings.target
        self.probe = settings.probe
        self.min_rx_bytes = settings.min_rx_bytes
        self.link_down_is_silence = config.link_down_is_silence \
            if settings.link_down_is_silence is None else settings.link_down_is_silence
        action_ticks = tuple((a.ticks, a.step) for a in config.actions if a.applies_to(self.name))
        retry_periods = tuple((r.ticks, r.step) for r in config.retries if r.applies_to(self.name))
        self.action_ticks = ladders.setdefault(action_ticks, action_ticks)
        self.retry_periods = ladders.setdefault(retry_periods, retry_periods)
        self.ladder_end = config.ladder_end(self.name)
        self.underlay = None

    def is_down_for_dependents(self):
        return self.down or not self.present or self.link == LINK_DOWN


class Monitor:
    """The event rules, once.  Feed it readings tick by tick; it says which events fire.

    `judge(elapsed, counters)` takes the number of ticks since the previous reading (more
    than 1 when ticks were skipped or unreadable) and the counters: per-device lists in config
    device order, `rx_bytes` and `rx_packets` (-1 = absent), `link` (LINK_*) and `replied`
    (1 if the built-in probe got an answer).  It returns the events that fire, each
    `(event, step, device, silent_ticks)`; for post_restore_any, `device` is the list of the
    restored devices' names.  No clock, no I/O: time is whatever the caller says it is, which
    is how --replay and the tests drive the very code the daemon runs.
    """

    def __init__(self, config):
        self.devices = [DeviceState(name) for name in config.devices]
        self.configure(config)
        self.baseline_taken = False
        self.ticks = 0          # ticks judged or skipped since start: the status clock
        self.events = []
        self.changes = []       # (device, new state) of the last judge(), for trace
        # What the devices received in the last judge(), summed, for the trace.  Counted only
        # when asked for: on a 32-bit MicroPython a subtraction of counters past 2**30
        # allocates, and without the trace no tick needs to subtract (make bench, "32-bit").
        self.count_totals = False
        self.rx_bytes_delta = 0
        self.rx_packets_delta = 0

    def configure(self, config):
        by_name = {}
        ladders = {}
        for dev in self.devices:
            dev.setup(config, ladders)
            by_name[dev.name] = dev
        for dev in self.devices:
            underlay = config.device[dev.name].depends
            dev.underlay = by_name[underlay] if underlay else None
        # Underlays are judged before the devices riding on them, so a tunnel sees its
        # uplink's state of this very tick.
        # (MicroPython's sort is not stable, so the index breaks ties explicitly.)
        count = len(self.devices)
        self.judge_order = sorted(range(count),
                                  key=lambda i: _depth(self.devices[i]) * count + i)

    def reconfigure(self, config, old_interval):
        """A new config (SIGHUP): devices that stay keep their state, new ones start at age 0.

        If the interval changed, ages are converted so the silence in seconds is kept.
        """
        by_name = {}
        for dev in self.devices:
            by_name[dev.name] = dev
            if old_interval != config.interval:
                # Every device, the dropped ones too: a stop before the next tick shows the
                # old list's silences on the new interval's clock.
                dev.age = int(dev.age * old_interval / config.interval + 0.5)
        self.devices = [by_name.get(name) or DeviceState(name) for name in config.devices]
        self.configure(config)

    def judge(self, elapsed, counters):
        events = self.events
        events.clear()      # (del x[:] allocates on MicroPython; clear() does not)
        self.changes.clear()
        self.rx_bytes_delta = 0
        self.rx_packets_delta = 0
        self.ticks += elapsed
        devices = self.devices
        if not self.baseline_taken:
            self.baseline_taken = True
            for i, dev in enumerate(devices):
                self._take(dev, counters.rx_bytes[i], counters.rx_packets[i])
                dev.link = counters.link[i]
                self._note_state(dev)
            return events
        restored = None
        longest = 0
        rx_bytes = counters.rx_bytes
        rx_packets = counters.rx_packets
        links = counters.link
        replied = counters.replied
        for i in self.judge_order:
            dev = devices[i]
            heard = self._traffic(dev, rx_bytes[i], rx_packets[i])
            link = links[i]
            if link == LINK_DOWN and dev.link_down_is_silence:
                heard = False
            if link == LINK_ABSENT and dev.present:
                link = LINK_UNKNOWN   # counted, but not in sysfs: a fake or foreign source
            dev.link = link
            if replied[i]:
                heard = True     # an answer to our own probe is traffic, whatever its size
            was_held = dev.held
            dev.held = dev.underlay is not None and dev.underlay.is_down_for_dependents()
            dev.quiet = not heard
            if heard:
                if dev.down:
                    events.append((EVENT_RESTORE, 0, dev.name, dev.age))
                    dev.restores += 1
                    dev.last_event = (EVENT_RESTORE, self.ticks)
                    restored = restored or []
                    restored.append(dev.name)
                    longest = max(longest, dev.age)
                dev.age = 0
                dev.down = False
            elif was_held and not dev.held:
                dev.age = 0      # the underlay is back: a full ladder against a working uplink
            else:
                before = dev.age
                dev.age = before + elapsed
                if not dev.held:
                    self._ladder(dev, before)
                    if dev.probe:
                        events.append((EVENT_PROBE, 0, dev.name, dev.age))
                        dev.probes += 1
            self._note_state(dev)
        if restored:
            events.append((EVENT_POST_RESTORE, 0, in_config_order(restored, devices), longest))
        return events

    def _note_state(self, dev):
        """Keep `dev.state` (what trace and status show) and list it in `changes` if it moved.
        (Worked out here, not in a DeviceState method: a call less per device and tick.)"""
        if not dev.present:
            state = STATE_ABSENT
        elif dev.link == LINK_DOWN:
            state = STATE_LINK_DOWN
        elif dev.held:
            state = STATE_HELD
        elif dev.down:
            state = STATE_DOWN
        else:
            state = STATE_SILENT if dev.quiet else STATE_UP
        if state != dev.state:
            dev.state = state
            dev.state_since = self.ticks
            self.changes.append((dev, state))

    def _take(self, dev, rx_bytes, rx_packets):
        """The baseline reading; like the original's first read, it counts as the totals."""
        dev.present = rx_bytes >= 0
        if dev.present:
            dev.rx_bytes = rx_bytes
            dev.rx_packets = rx_packets
            if self.count_totals:
                self.rx_bytes_delta += rx_bytes
                self.rx_packets_delta += rx_packets

    def _traffic(self, dev, rx_bytes, rx_packets):
        """Did the device receive (more than its noise threshold)?  Also moves its baseline."""
        if rx_bytes < 0:
            # Forget the baseline: when the device comes back, the reset rule judges it.
            dev.present = False
            dev.rx_bytes = dev.rx_packets = -1
            return False
        dev.present = True
        old_bytes = dev.rx_bytes
        old_packets = dev.rx_packets
        dev.rx_bytes = rx_bytes
        dev.rx_packets = rx_packets
        if old_bytes < 0 or rx_bytes < old_bytes or rx_packets < old_packets:
            # New device, re-created interface or counter reset: the new values are the
            # baseline, and they only show traffic if packets arrived since the reset.
            if self.count_totals:
                self.rx_bytes_delta += rx_bytes
                self.rx_packets_delta += rx_packets
            return rx_packets > 0 and (not dev.min_rx_bytes or rx_bytes > dev.min_rx_bytes)
        if self.count_totals:
            self.rx_bytes_delta += rx_bytes - old_bytes
            self.rx_packets_delta += rx_packets - old_packets
        if dev.min_rx_bytes:
            return rx_bytes - old_bytes > dev.min_rx_bytes
        return rx_bytes > old_bytes or rx_packets > old_packets

    def _ladder(self, dev, before):
        """Fire what the silence crossed between age `before` and the current age."""
        age = dev.age
        for ticks, step in dev.action_ticks:
            if before < ticks <= age:
                self.events.append((EVENT_ACTION, step, dev.name, age))
                dev.down = True
                dev.actions += 1
                dev.last_event = (EVENT_ACTION, self.ticks)
        end = dev.ladder_end
        if age <= end:
            return
        for period, step in dev.retry_periods:
            done_before = (before - end) // period if before > end else 0
            if (age - end) // period > done_before:
                self.events.append((EVENT_RETRY, step, dev.name, age))
                dev.down = True
                dev.retries += 1
                dev.last_event = (EVENT_RETRY, self.ticks)


def in_config_order(names, devices):
    """`names` in the order of `devices`, whatever order the devices were judged in.

    A function of its own: a comprehension over a local would make MicroPython allocate a
    cell for that local at every judge()."""
    return [dev.name for dev in devices if dev.name in names]


def _depth(dev):
    depth = 0
    underlay = dev.underlay
    while underlay is not None:
        depth += 1
        underlay = underlay.underlay
    return depth


class Dispatcher:
    """Turns Monitor events into the commands to run: argv and environment.

    One place for how events map to scripts, shared by the live loop and --replay.  Probe
    events start no script: the daemon sends the probe itself.
    """

    def __init__(self, config):
        self.config = config
        self.scripts = {EVENT_ACTION: config.actions, EVENT_RETRY: config.retries,
                        EVENT_RESTORE: config.restores, EVENT_POST_RESTORE: config.post_restores}

    def commands(self, event, monitor):
        """[(script_or_None, argv, env)] for one event; None marks the hotplug call."""
        kind, step, device, silent_ticks = event
        if kind == EVENT_PROBE:
            return []
        interval = self.config.interval
        silent = format_seconds(silent_ticks * interval)
        if kind in (EVENT_ACTION, EVENT_RETRY):
            chosen = [(step, self.scripts[kind][step - 1], [device, silent])]
        elif kind == EVENT_RESTORE:
            chosen = [(script.step, script, [device, silent]) for script in self.scripts[kind]
                      if script.applies_to(device)]
        else:
            chosen = []
            for script in self.scripts[kind]:
                names = [name for name in device if script.applies_to(name)]
                if names:
                    chosen.append((script.step, script, names))
        base_env = {}
        state = None
        for dev in monitor.devices:
            base_env["TUN_DOWN_" + env_name(dev.name)] = format_seconds(dev.age * interval)
            if dev.name == device:
                state = dev
        device_text = device if state else " ".join(device)
        if state:
            base_env["TUNMON_TARGET"] = state.target or ""
            base_env["TUNMON_LINK"] = state.link if state.present else LINK_ABSENT
        out = []
        for script_step, script, args in chosen:
            env = dict(base_env)
            env["TUNMON_EVENT"] = kind
            # post_restore_any: the devices this script is given (its device="..." may leave
            # out some of those restored)
            env["TUNMON_DEVICE"] = device if state else " ".join(args)
            env["TUNMON_SILENT"] = silent
            env["TUNMON_STEP"] = str(script_step)
            out.append((script, script.argv + args, env))
        if self.config.hotplug:
            env = dict(base_env)
            env["ACTION"] = kind
            env["DEVICE"] = device_text
            env["SILENT"] = silent
            env["STEP"] = str(step)
            out.append((None, [HOTPLUG_CALL, "tunmon"], env))
        return out


def env_name(device):
    """A device name made safe for an environment variable name (the original's TUN_DOWN_x)."""
    out = []
    for ch in device:
        out.append(ch if (ch.isalpha() or ch.isdigit() or ch == "_") and ord(ch) < 128 else "_")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Starting scripts: one small class per platform mechanism, the same interface for all.
#   spawn(path, argv, env) -> pid    start without waiting; own process group; stdin /dev/null
#   poll(pid) -> None | wait status  reap if finished
#   signal_group(pid, sig)           signal the script and what it forked
#   group_alive(pid)                 does anything of the script's group still run?

def decode_wait_status(status):
    """Exit code, or -N when the process was killed by signal N."""
    if status & 0x7F:
        return -(status & 0x7F)
    return (status >> 8) & 0xFF


class PosixSpawnRunner:
    """CPython: os.posix_spawn, which uses vfork/clone, cheap even for a large process."""

    name = "posix_spawn"

    def spawn(self, path, argv, env):
        full_env = dict(os.environ)
        full_env.update(env)
        return os.posix_spawn(path, argv, full_env, setpgroup=0,
                              file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)])

    def poll(self, pid):
        done, status = os.waitpid(pid, os.WNOHANG)
        return status if done else None

    def signal_group(self, pid, sig):
        try:
            os.killpg(pid, sig)
        except OSError:
            pass

    def group_alive(self, pid):
        try:
            os.killpg(pid, 0)
            return True
        except OSError:
            return False


class FfiRunner:
    """MicroPython with `ffi` (OpenWrt's build): fork, setpgid and execv from libc."""

    name = "ffi"

    def __init__(self, ffi):
        import array
        import uctypes
        self.array = array.array
        self.addressof = uctypes.addressof
        libc = open_libc(ffi)
        self.fork = libc.func("i", "fork", "")
        self.execv = libc.func("i", "execv", "sP")
        self.waitpid = libc.func("i", "waitpid", "iPi")
        self.kill = libc.func("i", "kill", "ii")
        self.setpgid = libc.func("i", "setpgid", "ii")
        self.setenv = libc.func("i", "setenv", "ssi")
        self.open_fd = libc.func("i", "open", "si")
        self.dup2 = libc.func("i", "dup2", "ii")
        self.exit_now = libc.func("v", "_exit", "i")
        self.status = self.array("i", [0])

    def spawn(self, path, argv, env):
        # Everything the child touches is built before fork: the child only makes libc calls.
        words = [word.encode() + b"\0" for word in argv]
        # 'L' (unsigned long) is pointer-sized on every Linux ABI, and both interpreters have it.
        pointers = self.array("L", [self.addressof(word) for word in words] + [0])
        pid = self.fork()
        if pid < 0:
            raise OSError(EAGAIN)
        if pid == 0:
            self.setpgid(0, 0)
            null = self.open_fd("/dev/null", 0)
            if null >= 0:
                self.dup2(null, 0)
            for key in env:
                self.setenv(key, env[key], 1)
            self.execv(path, pointers)
            self.exit_now(127)
        # Set the group from the parent too, so signal_group works even before the child ran.
        self.setpgid(pid, pid)
        return pid

    def poll(self, pid):
        done = self.waitpid(pid, self.status, 1)   # WNOHANG
        if done <= 0:
            return None if done == 0 else 0
        return self.status[0]

    def signal_group(self, pid, sig):
        self.kill(-pid, sig)

    def group_alive(self, pid):
        return self.kill(-pid, 0) == 0



def open_libc(ffi):
    for name in ("libc.so", "libc.so.6", "libc.so.0"):
        try:
            return ffi.open(name)
        except OSError:
            pass
    raise OSError(ENOENT)


class SystemRunner:
    """Fallback without fork (MicroPython built without ffi): os.system of a background job.

    The command goes through /bin/sh only to background it; every word is single-quoted, so
    nothing in it is interpreted.  The job writes the script's pid and, when it ends, its exit
    code into small files that poll() looks at.  If a `setsid` command exists (util-linux,
    or busybox built with it), the script leads a process group of its own and signals reach
    what it forked too; without it only the script itself is signalled.  tunmon cannot catch
    signals in this mode.
    """

    name = "system"

    def __init__(self, state_dir, setsid):
        self.state_dir = state_dir
        self.setsid = setsid    # path of a setsid command, or None
        self.counter = 0
        self.files = {}         # job handle -> base path of the job's files

    def spawn(self, path, argv, env):
        self.counter += 1
        base = "%s/job%d" % (self.state_dir, self.counter)
        assignments = " ".join(key + "=" + shell_quote(env[key]) for key in env)
        words = ([self.setsid] if self.setsid else []) + [path] + argv[1:]
        command = " ".join(shell_quote(word) for word in words)
        # The script inherits tunmon's stdout and stderr, as with the other runners.
        os.system("(%s exec %s </dev/null & echo $! >%s.pid; wait $!; echo $? >%s.tmp; "
                  "mv %s.tmp %s.rc) &"
                  % (assignments, command, base, base, base, base))
        handle = -self.counter     # a pid is not known yet; poll() learns it
        self.files[handle] = base
        return handle

    def poll(self, handle):
        base = self.files[handle]
        try:
            with open(base + ".rc") as f:
                text = f.read().strip()
        except OSError:
            return None
        self._forget(handle)
        if not text.isdigit():
            return 255 << 8     # the code was lost (a full $TMPDIR): not a signal
        code = int(text)
        # The shell reports death by signal N as 128 + N.
        return (code - 128) if code > 128 else (code << 8)

    def signal_group(self, handle, sig):
        pid = self._pid(handle)
        if pid:
            # A background job is no group leader, so setsid made the script one: -pid.
            os.system("kill -%d %s%d 2>/dev/null" % (sig, "-" if self.setsid else "", pid))

    def group_alive(self, handle):
        return False    # the job's files are gone once it ended: nothing left to signal

    def _pid(self, handle):
        try:
            with open(self.files[handle] + ".pid") as f:
                text = f.read().strip()
            return int(text) if text.isdigit() else 0
        except (OSError, KeyError):
            return 0

    def _forget(self, handle):
        base = self.files.pop(handle)
        for suffix in (".pid", ".rc"):
            try:
                os.remove(base + suffix)
            except OSError:
                pass


def shell_quote(word):
    return "'" + word.replace("'", "'\\''") + "'"


def make_runner(choice=None):
    """The best mechanism this interpreter has; TUNMON_RUNNER forces one (tests)."""
    choice = choice or os.getenv("TUNMON_RUNNER") or "auto"
    if choice in ("auto", "posix_spawn") and hasattr(os, "posix_spawn"):
        return PosixSpawnRunner()
    if choice in ("auto", "ffi"):
        try:
            import ffi
            return FfiRunner(ffi)
        except (ImportError, OSError, AttributeError):
            if choice == "ffi":
                raise
    state_dir = "%s/tunmon-%d" % (os.getenv("TMPDIR") or "/tmp", getpid())
    try:
        os.mkdir(state_dir)
    except OSError as err:
        if err.args[0] != 17:   # EEXIST: a stale one of a process that had this pid
            # Without it no script's end would ever be seen, and the slots would run out.
            raise OSError(err.args[0], "cannot make %s for the script runner: %s"
                          % (state_dir, os_error_text(err)))
    return SystemRunner(state_dir, find_program("setsid"))


def getpid():
    try:
        return os.getpid()
    except AttributeError:
        # MicroPython has no getpid; /proc/self is this process.
        with open("/proc/self/stat") as f:
            return int(f.read().split()[0])


def find_program(name):
    """Resolve a script's first word: paths are used as they are, bare names via PATH."""
    if "/" in name:
        return name
    for folder in (os.getenv("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        candidate = (folder or ".") + "/" + name
        if _is_file(candidate):
            return candidate
    return None


def _is_file(path):
    try:
        return os.stat(path)[0] & 0o170000 == 0o100000
    except OSError:
        return False


def _is_executable(path):
    try:
        return os.stat(path)[0] & 0o111 != 0
    except OSError:
        return False


class Job:
    def __init__(self, pid, argv, key, event, started):
        self.pid = pid
        self.argv = argv
        self.key = key          # (script, device): one such job at a time
        self.event = event      # what it runs for, or None for the hotplug call
        self.started = started
        self.term_sent = None


class ScriptPool:
    """Runs commands through a runner: at most max_scripts at once (the rest wait in order),
    never the same script for the same device twice at once, SIGTERM at the timeout and
    SIGKILL KILL_GRACE_MS later, every non-zero exit logged as `<argv> -> <rc>`.  Times
    (`now`) are ticks_ms() readings."""

    def __init__(self, runner, config, trace):
        self.runner = runner
        self.running = []
        self.waiting = []
        self.on_exit = None     # called with (device, event, exit code) when a script ends
        # Process groups of ended scripts whose children still run (`sleep 600 &`): a stop
        # signals them too, so nothing a script started outlives tunmon.
        self.leftover_groups = []
        self.configure(config, trace)

    def configure(self, config, trace):
        self.max_scripts = config.max_scripts
        self.timeout = config.script_timeout
        self.timeout_ms = to_ms(config.script_timeout)
        self.trace = trace

    def submit(self, argv, env, key, event):
        for job in self.running:
            if job.key == key:
                log("warning", "%s is still running; not starting it again" % " ".join(argv))
                return
        for queued in self.waiting:
            if queued[2] == key:
                return
        self.waiting.append((argv, env, key, event))

    def service(self, now):
        """Reap finished scripts, enforce timeouts, start waiting ones.  Cheap when idle."""
        if self.running:
            self._reap(now)
        if self.leftover_groups:
            self._forget_ended_groups()
        while self.waiting and len(self.running) < self.max_scripts:
            argv, env, key, event = self.waiting.pop(0)
            self._start(argv, env, key, event, now)

    def _forget_ended_groups(self):
        # Apart from service(): a comprehension using `self` would make MicroPython allocate
        # a cell for `self` at every call of the function that holds it, idle or not.
        self.leftover_groups = [pid for pid in self.leftover_groups
                                if self.runner.group_alive(pid)]

    def _start(self, argv, env, key, event, now):
        text = " ".join(argv)
        path = find_program(argv[0])
        if path is None or not _is_file(path):
            log("error", "cannot run %s: No such file or directory" % text)
            return
        if not _is_executable(path):
            log("error", "cannot run %s: Permission denied (not executable)" % text)
            return
        try:
            pid = self.runner.spawn(path, argv, env)
        except OSError as err:
            log("error", "cannot run %s: %s" % (text, os_error_text(err)))
            return
        if self.trace:
            log("trace", "run %s" % text)
        self.running.append(Job(pid, argv, key, event, now))

    def _reap(self, now):
        still = []
        for job in self.running:
            try:
                status = self.runner.poll(job.pid)
            except OSError:
                status = 0     # already reaped elsewhere (ECHILD): nothing more to learn
            if status is None:
                self._enforce_timeout(job, now)
                still.append(job)
                continue
            code = decode_wait_status(status)
            text = " ".join(job.argv)
            if code < 0:
                log("warning", "%s -> signal %d" % (text, -code))
            elif code:
                log("warning", "%s -> %d" % (text, code))
            elif self.trace:
                log("trace", "%s -> 0" % text)
            if self.on_exit and job.event:
                self.on_exit(job.key[1], job.event, code)
            if self.runner.group_alive(job.pid):
                self.leftover_groups.append(job.pid)
        self.running = still

    def _enforce_timeout(self, job, now):
        if job.term_sent is None and ticks_diff(now, job.started) >= self.timeout_ms:
            log("warning", "%s still running after %ss: sending SIGTERM"
                % (" ".join(job.argv), format_seconds(self.timeout)))
            self.runner.signal_group(job.pid, SIGTERM)
            job.term_sent = now
        elif job.term_sent is not None and ticks_diff(now, job.term_sent) >= KILL_GRACE_MS:
            log("warning", "%s ignored SIGTERM: sending SIGKILL" % " ".join(job.argv))
            self.runner.signal_group(job.pid, SIGKILL)
            job.term_sent = ticks_add(now, 3600000)   # one SIGKILL is enough: not every tick

    def due_in(self, now):
        """Milliseconds from `now` to the earliest timeout, so the loop can wake for it
        (None while no script runs)."""
        soonest = None
        for job in self.running:
            if job.term_sent is None:
                left = self.timeout_ms - ticks_diff(now, job.started)
            else:
                left = KILL_GRACE_MS - ticks_diff(now, job.term_sent)
            if soonest is None or left < soonest:
                soonest = left
        return soonest

    def stop_all(self):
        """On shutdown: drop waiting scripts, SIGTERM running ones, SIGKILL what outlives
        STOP_GRACE_MS, and reap everything so no script survives tunmon."""
        del self.waiting[:]
        groups = [job.pid for job in self.running] + self.leftover_groups
        for pid in groups:
            self.runner.signal_group(pid, SIGTERM)
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < STOP_GRACE_MS and (self.running or any(
                self.runner.group_alive(pid) for pid in self.leftover_groups)):
            sleep_ms(50)
            self._reap_quietly()
        for pid in [job.pid for job in self.running] + self.leftover_groups:
            self.runner.signal_group(pid, SIGKILL)
        start = ticks_ms()
        while self.running and ticks_diff(ticks_ms(), start) < 1000:
            sleep_ms(20)
            self._reap_quietly()

    def _reap_quietly(self):
        still = []
        for job in self.running:
            try:
                if self.runner.poll(job.pid) is None:
                    still.append(job)
            except OSError:
                pass
        self.running = still


# ---------------------------------------------------------------------------------------------
# Signals: handlers only set flags; the loop acts on them between ticks.

class Signals:
    """Which signals arrived.  Installs handlers through `signal` (CPython) or libc via ffi.

    CPython also gets a wakeup pipe so a signal ends the wait at once; elsewhere the wait is
    cut into short slices, because MicroPython's sleep restarts after a signal.
    """

    SLICE_MS = 200

    def __init__(self, use_ffi=False):
        self.flags = bytearray(32)
        self.wakeup_fd = None
        self.mechanism = "none"
        self._keep = []
        try:
            if use_ffi:
                raise ImportError
            try:
                import _signal as signal   # its C core: `signal` pulls in enum, ~1 MiB of RSS
            except ImportError:
                import signal
            self._install_signal_module(signal)
        except ImportError:
            try:
                import ffi
                self._install_ffi(ffi)
            except (ImportError, OSError, AttributeError):
                pass

    def _install_signal_module(self, signal):
        flags = self.flags

        def handler(signum, frame):
            flags[signum] = 1

        for signum in (SIGTERM, SIGINT, SIGHUP):
            signal.signal(signum, handler)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        os.set_blocking(read_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self.wakeup_fd = read_fd
        self._keep.append(write_fd)
        self.mechanism = "signal"

    def _install_ffi(self, ffi):
        libc = open_libc(ffi)
        install = libc.func("P", "signal", "iC")
        flags = self.flags

        def handler(signum):
            flags[signum] = 1

        callback = ffi.callback("v", handler, "i", lock=True)
        self._keep.append(callback)   # libc holds a pointer to it: it must never be freed
        for signum in (SIGTERM, SIGINT, SIGHUP):
            install(signum, callback)
        self.mechanism = "ffi"

    def take(self, signum):
        if self.flags[signum]:
            self.flags[signum] = 0
            return True
        return False

    def pending(self):
        return self.flags[SIGTERM] or self.flags[SIGINT] or self.flags[SIGHUP]

    def wait_ms(self, milliseconds):
        """Sleep up to `milliseconds`, returning early when a signal arrives."""
        if milliseconds <= 0:
            return
        if self.wakeup_fd is not None:
            import select
            ready = select.select([self.wakeup_fd], [], [], milliseconds / 1000.0)[0]
            if ready:
                try:
                    os.read(self.wakeup_fd, 64)
                except OSError:
                    pass
            return
        start = ticks_ms()
        while not self.pending():
            left = milliseconds - ticks_diff(ticks_ms(), start)
            if left <= 0:
                return
            sleep_ms(left if left < self.SLICE_MS else self.SLICE_MS)


# ---------------------------------------------------------------------------------------------
# The built-in probe

class Prober:
    """One ICMP or ICMPv6 echo request per silent tick, sent by tunmon itself through the
    device (a raw socket bound to it): no fork, no ping binary.  The answer shows up as RX
    traffic; collect() also notes it per device, so an answer counts even below min_rx_bytes.
    Failures (no permission, no route) are logged once per device until a send succeeds.
    """

    def __init__(self, devices):
        self.names = [dev.name for dev in devices]
        self.sockets = {}         # device index -> (socket, is_ipv6)
        self.failing = {}         # device index -> True while its failure is logged
        self.ident = getpid() & 0xFFFF
        self.sequence = 0
        self.packet = bytearray(b"\x08\x00\x00\x00\x00\x00\x00\x00tunmon probe")
        self.reply = bytearray(256)

    def send(self, i, target):
        try:
            sock, ipv6, address = self._socket(i, target)
            packet = self.packet
            self.sequence = (self.sequence + 1) & 0xFFFF
            packet[0] = 128 if ipv6 else 8            # echo request
            packet[2] = packet[3] = 0
            packet[4], packet[5] = self.ident >> 8, self.ident & 0xFF
            packet[6], packet[7] = self.sequence >> 8, self.sequence & 0xFF
            if not ipv6:                              # the kernel sums ICMPv6 itself
                checksum = icmp_checksum(packet)
                packet[2], packet[3] = checksum >> 8, checksum & 0xFF
            sock.sendto(packet, address)
        except OSError as err:
            self._close(i)
            if not self.failing.get(i):
                self.failing[i] = True
                log("warning", "probe to %s through %s failed: %s"
                    % (target, self.names[i], os_error_text(err)))
            return False
        if self.failing.pop(i, None):
            log("info", "probe through %s works again" % self.names[i])
        return True

    def _socket(self, i, target):
        if i not in self.sockets:
            import socket
            info = socket.getaddrinfo(target, 0)[0]
            ipv6 = info[0] == socket.AF_INET6
            sock = socket.socket(info[0], socket.SOCK_RAW, 58 if ipv6 else 1)
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, 25, self.names[i].encode())  # BINDTODEVICE
            except OSError:
                sock.close()
                raise
            self.sockets[i] = (sock, ipv6, info[-1])
        return self.sockets[i]

    def collect(self, replied):
        """Note, per device, whether an echo reply to one of our probes arrived."""
        for i in self.sockets:
            sock, ipv6, address = self.sockets[i]
            while True:
                try:
                    length = sock.recv_into(self.reply) if hasattr(sock, "recv_into") \
                        else self._recv_copy(sock)
                except OSError:
                    break
                if not length:
                    break
                # IPv4 raw sockets deliver the IP header too; its length is in the first byte.
                start = 0 if ipv6 else (self.reply[0] & 0x0F) * 4
                if length >= start + 8 and self.reply[start] == (129 if ipv6 else 0) and \
                        self.reply[start + 4] == self.ident >> 8 and \
                        self.reply[start + 5] == self.ident & 0xFF:
                    replied[i] = 1

    def _recv_copy(self, sock):
        data = sock.recv(len(self.reply))
        self.reply[:len(data)] = data
        return len(data)

    def _close(self, i):
        entry = self.sockets.pop(i, None)
        if entry:
            entry[0].close()

    def close(self):
        for i in list(self.sockets):
            self._close(i)


def icmp_checksum(packet):
    total = 0
    for i in range(0, len(packet) - 1, 2):
        total += (packet[i] << 8) | packet[i + 1]
    if len(packet) & 1:
        total += packet[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---------------------------------------------------------------------------------------------
# pidfile

class AlreadyRunning(Exception):
    pass


def read_pid(path):
    """The pid in a pidfile; 0 if it holds anything else, None if it cannot be read."""
    try:
        with open(path, "rb") as f:     # bytes: garbage must not fail to decode
            text = f.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else 0   # bytes.isdigit(): ASCII digits only


def acquire_pidfile(path, pid):
    """Create the pidfile atomically; refuse if it names a live tunmon; replace a stale one.

    The content is written to an unguessable temporary name first, so a symlink planted in
    a world-writable directory is never written through; link() and rename() replace or
    refuse the final name itself, never what a symlink there points to.
    """
    content = ("%d\n" % pid).encode()
    temp = tunmon_xml.write_temporary(path, lambda f: f.write(content))
    try:
        try:
            os.link(temp, path)   # atomic and exclusive: of two starting at once, one wins
            return
        except AttributeError:
            pass                  # MicroPython has no link(): check, then rename
        except OSError as err:
            if err.args[0] != 17:  # EEXIST
                raise
        owner = read_pid(path)
        if owner and owner != pid and is_tunmon(owner):
            raise AlreadyRunning(owner)
        os.rename(temp, path)     # stale: replace it (a racing twin notices at its first tick)
        temp = None
    finally:
        if temp:
            try:
                os.remove(temp)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# The live daemon

def choose_counter_source(config, proc_path, sys_root):
    """The counter reader for `config.counter_source`.

    `auto` weighs the kernel's cost of each, as make bench measured it: /proc/net/dev formats
    every interface on the system (about 1.7 us each, plus 16 us per read); sysfs is read
    for RX, two files per watched device, about 1.5 us each while they fit the open-file
    budget (counters and link state: four files a device), 10 us each when they must be
    opened every tick.  A --proc file other than the default is a test or a demo feeding
    fake counters, so auto keeps to it.
    """
    source = config.counter_source
    if source == "auto":
        source = "proc"
        if proc_path == DEFAULT_PROC:
            try:
                present = len(os.listdir(sys_root))
            except OSError:
                present = 0
            watched = len(config.devices)
            per_file = 1.5 if 4 * watched <= SysfsValue.OPEN_FILES_MAX else 10.0
            if 2 * per_file * watched < 16 + 1.7 * present:
                source = "sysfs"
    if source == "sysfs":
        return SysfsCounterReader(sys_root, config.devices)
    return CounterReader(proc_path, config.devices)


class Daemon:
    """The live loop: reads on a monotonic schedule, judges, starts scripts, obeys signals."""

    def __init__(self, config, proc_path, trace, sys_root=DEFAULT_SYS, runner=None,
                 signals=None):
        self.proc_path = proc_path
        self.sys_root = sys_root
        self.trace_forced = trace
        self.monitor = Monitor(config)
        self.runner = runner or make_runner()
        self.pool = ScriptPool(self.runner, config, False)
        self.signals = signals or Signals(os.getenv("TUNMON_RUNNER") == "ffi")
        self.pid = getpid()
        self.readable = True
        self.prober = None
        self.reporter = None    # the status file and statistics, once running
        self.reader = None
        self.apply(config)

    def apply(self, config):
        """Build what depends on the config (at start and on every reload)."""
        self.config = config
        self.trace = config.trace if self.trace_forced is None else self.trace_forced
        self.monitor.count_totals = bool(self.trace)
        self.close_sources()
        self.reader = choose_counter_source(config, self.proc_path, self.sys_root)
        self.links = LinkReader(self.sys_root, config.devices)
        self.dispatcher = Dispatcher(config)
        self.pool.configure(config, self.trace)
        if self.prober:
            self.prober.close()
        self.prober = Prober(self.monitor.devices) if any(
            config.device[name].probe for name in config.devices) else None
        if self.reporter:
            self.reporter.configure(config)

    def start_reporter(self):
        """The status file and statistics, from the first tick on (run() calls it just before
        its loop; so do the benchmarks and tests that drive tick() themselves)."""
        import tunmon_status    # here, so --check and --replay never load it
        self.reporter = tunmon_status.Reporter(self.config, self.pid, time.time)
        self.pool.on_exit = self.reporter.script_exited

    def close_sources(self):
        """Close the files the counter and link readers keep open (on reload and stop)."""
        if self.reader:
            self.reader.close()
            self.links.close()

    def run(self):
        config = self.config
        if config.pidfile:
            try:
                acquire_pidfile(config.pidfile, self.pid)
            except AlreadyRunning as running:
                log("error", "already running (pid %d), pidfile %s" % (running.args[0],
                                                                        config.pidfile))
                return 1
            except OSError as err:
                log("error", "cannot write pidfile %s: %s" % (config.pidfile, os_error_text(err)))
                return 1
        self.start_reporter()
        log("info", "tunmon %s watching %s every %ss (counters from %s, %s runner, signals: %s)"
            % (VERSION, ", ".join(config.devices), format_seconds(config.interval),
               self.reader.source, self.runner.name, self.signals.mechanism))
        try:
            self.loop()
        finally:
            self.pool.stop_all()
            self.reporter.close()
            self.close_sources()
            if self.prober:
                self.prober.close()
            if isinstance(self.runner, SystemRunner):
                try:
                    os.rmdir(self.runner.state_dir)
                except OSError:
                    pass
            if self.config.pidfile and read_pid(self.config.pidfile) == self.pid:
                try:
                    os.remove(self.config.pidfile)
                except OSError:
                    pass
        log("info", "stopped")
        return 0

    def loop(self):
        interval_ms = to_ms(self.config.interval)
        due = ticks_ms()        # when the tick about to run was due
        elapsed = 0
        while True:
            self.tick(elapsed)
            if not self.pidfile_still_ours():
                log("info", "pidfile %s removed or taken over: stopping" % self.config.pidfile)
                return
            # Sleep until the next tick, waking for script timeouts and signals on the way.
            due = ticks_add(due, interval_ms)
            while True:
                now = ticks_ms()
                if self.signals.take(SIGTERM) or self.signals.take(SIGINT):
                    log("info", "signal received: stopping")
                    return
                if self.signals.take(SIGHUP):
                    old_interval = self.config.interval
                    self.reload()
                    if self.config.interval != old_interval:
                        # Re-anchor the schedule on the new interval: the next tick is now.
                        interval_ms = to_ms(self.config.interval)
                        due = now
                left = ticks_diff(due, now)
                if left > interval_ms:
                    # Only after a stall of half the clock's period (6 days on a 32-bit
                    # MicroPython: a SIGSTOP, say): the clock wrapped, so tick now.
                    due = now
                    left = 0
                if left <= 0:
                    break
                script_due = self.pool.due_in(now)
                if script_due is not None and script_due < left:
                    left = script_due
                self.signals.wait_ms(left)
                self.pool.service(ticks_ms())
            # Ticks missed while late still count as elapsed: no action is ever skipped.
            skipped = -left // interval_ms
            due = ticks_add(due, skipped * interval_ms)
            elapsed = 1 + skipped

    def tick(self, elapsed):
        reader = self.reader
        readable = reader.read()
        if readable != self.readable:
            self.readable = readable
            where = self.proc_path if reader.source == "proc" else self.sys_root
            if readable:
                log("info", "%s readable again" % where)
            else:
                log("error", "cannot read %s (%s): ticks are not judged until it is back"
                    % (where, reader.failure))
        if readable:
            self.links.read_into(reader.link, reader.rx_bytes)
            if self.prober:
                self.prober.collect(reader.replied)
            monitor = self.monitor
            events = monitor.judge(elapsed, reader)
            if self.prober:
                for i in range(len(reader.replied)):
                    reader.replied[i] = 0
            if self.trace:
                self.trace_tick(elapsed)
            for event in events:
                self.dispatch(event)
            self.reporter.observe(monitor, reader)
        self.pool.service(ticks_ms())

    def dispatch(self, event):
        kind, device = event[0], event[2]
        if kind == EVENT_PROBE:
            i = self.config.devices.index(device)
            self.prober.send(i, self.config.device[device].target)
            return
        for script, argv, env in self.dispatcher.commands(event, self.monitor):
            # Duplicates are judged per script and device: the same rebuild for two
            # tunnels may run at once, the same one for one tunnel may not.
            key = (tuple(script.argv) if script else HOTPLUG_CALL,
                   device if kind != EVENT_POST_RESTORE else "")
            self.pool.submit(argv, env, key, kind if script else None)

    def trace_tick(self, elapsed):
        monitor = self.monitor
        log("trace", "after %ss, bytes %d, packets %d"
            % (format_seconds(elapsed * self.config.interval), monitor.rx_bytes_delta,
               monitor.rx_packets_delta))
        for dev, state in monitor.changes:
            log("trace", "%s: %s" % (dev.name, state))
        for event in monitor.events:
            log("trace", describe_event(event, self.config))

    def pidfile_still_ours(self):
        return not self.config.pidfile or read_pid(self.config.pidfile) == self.pid

    def reload(self):
        try:
            config = tunmon_xml.load_config(self.config.filename)
        except ConfigError as err:
            log("error", "reload failed, keeping the old config: %s" % err)
            return
        for line, message in config.warnings:
            log("warning", "%s:%d: %s" % (config.filename, line, message))
        if config.pidfile != self.config.pidfile:
            log("warning", "a new pidfile takes effect only after a restart")
            config.pidfile = self.config.pidfile
        self.monitor.reconfigure(config, self.config.interval)
        self.apply(config)
        log("info", "config reloaded: watching %s" % ", ".join(config.devices))


def describe_event(event, config):
    """One line for trace output."""
    kind, step, device, silent_ticks = event
    silent = format_seconds(silent_ticks * config.interval)
    if kind == EVENT_POST_RESTORE:
        return "post_restore_any for %s" % " ".join(device)
    if kind == EVENT_RESTORE:
        return "restore for %s after %ss silence" % (device, silent)
    if kind == EVENT_PROBE:
        return "probe %s through %s at %ss silence" % (config.device[device].target, device,
                                                        silent)
    return "%s %d for %s at %ss silence" % (kind, step, device, silent)


# ---------------------------------------------------------------------------------------------
# Replay: the same Monitor and Dispatcher, driven by recorded snapshots instead of a clock.

class ReplaySource:
    """Snapshots of /proc/net/dev concatenated in a file, each starting with `Inter-|`.

    Lines starting with '#' between snapshots: `#unreadable` stands for a tick whose read
    failed, `#tick N` numbers the next snapshot (the ticks in between were skipped),
    `#link DEV up|down|unknown` sets a device's link state from the next snapshot on; any
    other '#' line is a comment.  Yields (tick, length): the snapshot is `buf[:length]` until
    the next one is read, or length is None if unreadable.  One buffer serves every snapshot,
    grown to the largest: a new one per snapshot fragmented a small MicroPython heap.
    """

    def __init__(self, path):
        self.path = path
        self.links = {}         # device name -> link state set by #link
        self.buf = bytearray(4096)

    def snapshots(self):
        tick = -1
        length = None           # of the snapshot being collected in buf
        next_tick = None
        number = 0              # of the line, for errors (enumerate() would make a tuple a line)
        try:
            f = open(self.path, "rb")
        except OSError as err:
            raise ConfigError("cannot read the trace: %s" % os_error_text(err), self.path)
        with f:
            for line in read_lines(f):
                number += 1
                is_header = line.startswith(b"Inter-|")
                words = line[1:].split() if line.startswith(b"#") else None
                is_directive = bool(words) and words[0] in (b"unreadable", b"tick", b"link")
                if words is not None and not is_directive:
                    continue    # a comment, even inside a snapshot
                if length is not None and (is_header or is_directive):
                    yield tick, length
                    length = None
                if is_header or (is_directive and words[0] == b"unreadable"):
                    tick = next_tick if next_tick is not None else tick + 1
                    next_tick = None
                    if is_header:
                        length = self._put(0, line)
                    else:
                        yield tick, None
                elif is_directive:
                    if words[0] == b"tick" and len(words) == 2 and words[1].isdigit():
                        next_tick = int(words[1])
                    elif words[0] == b"link":
                        self._link(words, number)
                elif length is not None:
                    length = self._put(length, line)
        if length is not None:
            yield tick, length

    def _link(self, words, number):
        """`#link DEV STATE`; a typo in it would silently leave the link as it was."""
        state = words[2] if len(words) == 3 else b""
        if state not in (b"up", b"down", b"unknown"):
            raise ConfigError("#link takes a device and up, down or unknown", self.path, number)
        try:
            self.links[words[1].decode()] = state.decode()
        except UnicodeError:
            raise ConfigError("#link: the device name is not UTF-8", self.path, number)

    def _put(self, at, line):
        """Store `line` at `at` in buf; returns where it ends."""
        end = at + len(line)
        if end > len(self.buf):
            grown = bytearray(max(end, 2 * len(self.buf)))
            grown[:at] = memoryview(self.buf)[:at]
            self.buf = grown
        self.buf[at:end] = line
        return end


def read_lines(f, chunk_size=4096):
    """The lines of a binary file, read in chunks: MicroPython's files are unbuffered, and
    iterating over one reads a byte at a time.  One window serves every chunk, where the part
    of a line that a read cut off moves to the front (grown only for a line longer than it):
    a new chunk per read fragmented a small MicroPython heap."""
    window = bytearray(chunk_size)
    kept = 0                # bytes at the window's start: a line not ended yet
    while True:
        got = f.readinto(memoryview(window)[kept:])
        if not got:
            break
        end = kept + got
        start = 0
        while True:
            newline = window.find(b"\n", start, end)
            if newline < 0:
                break
            yield window[start:newline + 1]
            start = newline + 1
        kept = end - start
        window[:kept] = window[start:end]
        if kept == len(window):
            window.extend(bytes(len(window)))
    if kept:
        yield window[:kept]


def replay(config, trace_path, out, trace=False):
    """Print `t=<seconds> <event> <argv...>` for every script the ladder would run."""
    reader = CounterReader(trace_path, config.devices)
    monitor = Monitor(config)
    dispatcher = Dispatcher(config)
    source = ReplaySource(trace_path)
    last_tick = 0
    for tick, length in source.snapshots():
        if tick < last_tick:
            raise ConfigError("snapshot numbered %d comes after tick %d" % (tick, last_tick),
                              trace_path)
        elapsed = tick - last_tick
        last_tick = tick
        if length is None:
            continue
        reader.parse(source.buf, length)
        for i, name in enumerate(config.devices):
            reader.link[i] = source.links.get(name, LINK_UNKNOWN)
        when = format_seconds(tick * config.interval)
        for event in monitor.judge(elapsed, reader):
            if event[0] == EVENT_PROBE:
                out.write("t=%s probe %s %s\n" % (when, event[2],
                                                   config.device[event[2]].target))
            for script, argv, env in dispatcher.commands(event, monitor):
                out.write("t=%s %s %s\n" % (when, event[0], " ".join(argv)))
        if trace:
            for dev, state in monitor.changes:
                log("trace", "t=%s %s: %s" % (when, dev.name, state))


# ---------------------------------------------------------------------------------------------
# --check

def check(config, out):
    """Print the effective ladder; return the number of problems found with scripts."""
    interval = config.interval
    out.write("%s: valid\n" % config.filename)
    out.write("interval %ss; watching %s\n" % (format_seconds(interval), ", ".join(config.devices)))
    out.write("pidfile %s; script_timeout %ss; max_scripts %d; trace %s; hotplug %s\n"
              % (config.pidfile or "(none)", format_seconds(config.script_timeout),
                 config.max_scripts, on_off(config.trace), on_off(config.hotplug)))
    out.write("counters %s; link down is silence %s; status %s every %ss\n"
              % (config.counter_source, on_off(config.link_down_is_silence), config.status_file,
                 format_seconds(config.status_interval)))
    for name in config.devices:
        settings = describe_device(config.device[name])
        if settings:
            out.write("device %s: %s\n" % (name, settings))
    for line, message in config.warnings:
        log("warning", "%s:%d: %s" % (config.filename, line, message))
    for script, seconds in config.raised:
        log("warning", "%s:%d: %s %d: %ss is less than half the interval; raised to 1 tick (%ss)"
            % (config.filename, script.line, script.event, script.step, format_seconds(seconds),
               format_seconds(interval)))
    for action in config.actions:
        out.write("action %d at %ss silence (%s): %s%s\n"
                  % (action.step, format_seconds(action.ticks * interval), plural(action.ticks),
                     " ".join(action.argv), limited_to(action)))
    for retry in config.retries:
        # Retries count from the end of each device's own ladder: group devices by it.
        ends = {}
        for name in config.devices:
            if retry.applies_to(name):
                ends.setdefault(config.ladder_end(name), []).append(name)
        for end in sorted(ends):
            only = "" if len(ends) == 1 else " [for %s]" % ", ".join(ends[end])
            out.write("retry %d every %ss (%s) after %ss, first at %ss: %s%s\n"
                      % (retry.step, format_seconds(retry.ticks * interval), plural(retry.ticks),
                         format_seconds(end * interval),
                         format_seconds((end + retry.ticks) * interval), " ".join(retry.argv),
                         only or limited_to(retry)))
    for script in config.restores:
        out.write("restore %d: %s%s\n" % (script.step, " ".join(script.argv), limited_to(script)))
    for script in config.post_restores:
        out.write("post_restore_any %d: %s%s\n" % (script.step, " ".join(script.argv),
                                                   limited_to(script)))
    if not config.actions and not config.retries and not any(
            config.device[name].probe for name in config.devices):
        log("warning", "%s: no actions, retries or probes: tunmon will only watch"
            % config.filename)
    as_root = running_as_root()
    problems = 0
    if as_root and writable_by_others(config.filename):
        log("warning", "%s is %s, and tunmon runs as root"
            % (config.filename, writable_by_others(config.filename)))
        problems += 1
    for script in config.actions + config.retries + config.restores + config.post_restores:
        where = "%s:%d" % (config.filename, script.line)
        path = find_program(script.argv[0])
        if path is None or not _is_file(path):
            log("warning", "%s: %s does not exist" % (where, script.argv[0]))
            problems += 1
        elif not _is_executable(path):
            log("warning", "%s: %s is not executable" % (where, path))
            problems += 1
        elif as_root and writable_by_others(path):
            log("warning", "%s: %s is %s, and tunmon runs it as root"
                % (where, path, writable_by_others(path)))
            problems += 1
    return problems


def writable_by_others(path):
    """Who other than root may change `path`: a phrase for a warning, or '' if nobody."""
    try:
        status = os.stat(path)
    except OSError:
        return ""
    mode, uid = status[0], status[4]
    if mode & 0o002:
        return "writable by everyone"
    if mode & 0o020:
        return "writable by its group"
    if uid != 0 and mode & 0o200:
        return "writable by its owner, uid %d" % uid
    return ""


def running_as_root():
    try:
        return os.geteuid() == 0
    except AttributeError:
        # MicroPython: the effective uid is the second number of the Uid: line.
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return line.split()[2] == "0"
        return False


def describe_device(device):
    parts = []
    if device.probe:
        parts.append("probe %s to %s" % (device.probe, device.target))
    elif device.target:
        parts.append("target %s" % device.target)
    if device.depends:
        parts.append("depends on %s" % device.depends)
    if device.min_rx_bytes:
        parts.append("min_rx_bytes %d" % device.min_rx_bytes)
    if device.link_down_is_silence is not None:
        parts.append("link down is silence %s" % on_off(device.link_down_is_silence))
    return ", ".join(parts)


def limited_to(script):
    return " [for %s]" % ", ".join(script.devices) if script.devices else ""


def on_off(flag):
    return "on" if flag else "off"


def plural(ticks):
    return "1 tick" if ticks == 1 else "%d ticks" % ticks


# ---------------------------------------------------------------------------------------------
# Command line

USAGE = """usage: tunmon [-c FILE] [--proc PATH] [--trace 0|1]
       tunmon -c FILE --check
       tunmon -c FILE --replay TRACE
       tunmon [-c FILE] --status [--json]
       tunmon --plot STATSFILE > graph.svg
       tunmon --uci-to-xml [FILE|-] [--output PATH]
       tunmon --version | --help

Watch the RX counters of network interfaces and run escalating scripts when one stays silent.

  -c, --config FILE   XML config (default %s)
  --proc PATH         read counters from PATH instead of %s
  --sys PATH          where the interfaces' sysfs folders are (default %s)
  --trace 0|1         log every tick's traffic, state changes and script runs
  --check             validate the config, show the ladder; exit 0 if valid, 2 if not
  --replay TRACE      print what the ladder would have run on recorded /proc/net/dev snapshots
  --status [--json]   what each device is doing, from the running daemon's status file
  --plot STATSFILE    an SVG graph of a statistics file (JSON lines) on stdout
  --uci-to-xml        translate UCI (/etc/config/tunmon or `uci export tunmon`) to the XML config
  --version           print the version

Exit codes: 0 clean stop, 1 runtime failure, 2 usage or config error.
""" % (DEFAULT_CONFIG, DEFAULT_PROC, DEFAULT_SYS)


class UsageError(Exception):
    pass


OPTIONS_WITH_VALUE = ("-c", "--config", "--proc", "--sys", "--trace", "--replay", "--plot")


def parse_args(argv):
    options = {"config": DEFAULT_CONFIG, "proc": DEFAULT_PROC, "sys": DEFAULT_SYS, "trace": None,
               "mode": "run", "replay": None, "json": False, "plot": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        elif arg in OPTIONS_WITH_VALUE:
            i += 1
            if i >= len(argv):
                raise UsageError("%s needs a value" % arg)
            value = argv[i]
        else:
            value = None
        if value is not None and arg not in OPTIONS_WITH_VALUE:
            raise UsageError("%s takes no value" % arg)

        if arg in ("-c", "--config"):
            options["config"] = value
        elif arg == "--proc":
            options["proc"] = value
        elif arg == "--sys":
            options["sys"] = value
        elif arg == "--trace":
            word = value
            if word not in ("0", "1"):
                raise UsageError("--trace takes 0 or 1")
            options["trace"] = word == "1"
        elif arg == "--check":
            options["mode"] = "check"
        elif arg == "--status":
            options["mode"] = "status"
        elif arg == "--json":
            options["json"] = True
        elif arg == "--plot":
            options["mode"] = "plot"
            options["plot"] = value
        elif arg == "--replay":
            options["mode"] = "replay"
            options["replay"] = value
        elif arg in ("-h", "--help"):
            options["mode"] = "help"
        elif arg in ("-V", "--version"):
            options["mode"] = "version"
        else:
            raise UsageError("unknown argument %s" % arg)
        i += 1
    return options


def main(argv):
    collect_early()
    if argv[:1] == ["--uci-to-xml"]:
        return uci_to_xml(argv[1:])
    try:
        options = parse_args(argv)
    except UsageError as err:
        log("error", "%s (see --help)" % err)
        return 2
    mode = options["mode"]
    if mode == "help":
        sys.stdout.write(USAGE)
        return 0
    if mode == "version":
        sys.stdout.write("tunmon %s\n" % VERSION)
        return 0
    if mode == "plot":
        import tunmon_plot
        return tunmon_plot.plot(options["plot"], sys.stdout)
    if mode == "status":
        return show_status(options)
    try:
        config = tunmon_xml.load_config(options["config"])
        if mode == "check":
            check(config, sys.stdout)
            return 0
        for line, message in config.warnings:
            log("warning", "%s:%d: %s" % (config.filename, line, message))
        if mode == "replay":
            replay(config, options["replay"], sys.stdout, bool(options["trace"]))
            return 0
    except ConfigError as err:
        log("error", str(err))
        return 2
    except OSError as err:      # the trace's own errors are ConfigErrors: this is stdout
        log("error", "cannot write the output: %s" % os_error_text(err))
        return 2
    try:
        daemon = Daemon(config, options["proc"], options["trace"], options["sys"])
    except OSError as err:
        log("error", "cannot start: %s" % os_error_text(err))
        return 1
    return daemon.run()


def show_status(options):
    """--status: the status file named by the config; on OpenWrt the config tunmon runs with
    is the one the init script generated, so that is tried when the default is missing."""
    import tunmon_status
    status_file = tunmon_xml.Config(None).status_file
    for path in (options["config"], GENERATED_CONFIG):
        try:
            status_file = tunmon_xml.load_config(path).status_file
            break
        except ConfigError as err:
            if path != DEFAULT_CONFIG:
                if path == options["config"]:   # named with -c: say what is shown instead
                    log("warning", "%s; showing %s" % (err, status_file))
                break
    return tunmon_status.show_status(status_file, options["json"], sys.stdout)


def uci_to_xml(argv):
    here = tunmon_xml.__file__.rsplit("/", 1)[0] if "/" in tunmon_xml.__file__ else "."
    for folder in (here, here + "/uci"):
        if folder not in sys.path:
            sys.path.append(folder)
    import tunmon_uci
    return tunmon_uci.main(argv)


def run(argv):
    """main() for the command line: whatever goes wrong ends in one line, not a traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return 130
    except MemoryError:
        log("error", "out of memory")
        return 1
    except Exception as err:   # a bug: say where in one line, and let procd restart us
        log("error", "internal error: %s: %s" % (type(err).__name__, err))
        return 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
