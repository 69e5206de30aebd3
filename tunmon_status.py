"""tunmon's status file, statistics stream and the `--status` table.

Reporter lives inside the daemon.  observe() is called on every tick whose counters were read;
a quiet tick (no state change, no event, nothing due) costs the same however many devices are
watched, and allocates nothing: state changes come from the Monitor's list of them, devices
not observed yet from a list that only a start or a reload fills, and no device is looked at
otherwise until a write is due.  The status file is written when a device changed state, an
event fired, a script exited or the config was reloaded, and otherwise every
`status_interval`; statistics lines go out every `<stats><interval>`.  Failed writes are
logged once and never raise: a full /var/run must not stop the monitor.

Rates: the counters are "loaded" (TX read with load_tx(), all four kept as the base of the
next rates) only when they are shown: at a status write or a statistics line.  The
status file's "rate" and "pps", RX and TX alike, are per second over the time since the
previous load, that is since the previous status write or statistics line, whichever came
last (null for a device first seen at this write, or absent now).  The smoothed rates
("rate_avg", "pps_avg") are brought up to date at the same moments, from the same amounts.
A statistics line's own rates cover its `period`, since the previous line.

Times: rates and the "since" of states are measured on the monitor's own clock (ticks x
interval, immune to wall clock jumps such as the first NTP sync of a router without an RTC)
and turned into wall time only when written.

show_status() reads the file back for `tunmon --status`.  The JSON schema, the stats record
and the table are documented in README.md, "Status and statistics".

Runs on CPython 3.11+ and the MicroPython unix port: no os.path, re or datetime; JSON objects
are written by a small encoder with a fixed key order, because MicroPython's dicts have none.
"""
import math
import os
import sys
import time

import tunmon_xml
from tunmon_xml import (EVENT_ACTION, EVENT_POST_RESTORE, EVENT_RESTORE, EVENT_RETRY,
                        is_tunmon, log, os_error_text, to_ms)

SCHEMA_VERSION = 1
SMOOTHING_SECONDS = 60.0   # time constant of the smoothed ("_avg") rates
STALE_AFTER = 3            # write periods without a write before the file counts as stale
STATE_RUNNING = "running"
STATE_STOPPED = "stopped"
ENOENT = 2

# Positions in the per-device counter quadruples.
RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS = 0, 1, 2, 3
SCRIPT_EVENTS = (EVENT_ACTION, EVENT_RETRY, EVENT_RESTORE)


def warning(message):
    log("warning", message)


def info(message):
    log("info", message)


def error(message):
    log("error", message)


# ---------------------------------------------------------------------------------------------
# JSON with a fixed key order, written into a reusable buffer

class JsonBuffer:
    """JSON text built in one bytearray that is kept from write to write.

    Numbers are written digit by digit and strings come pre-encoded (quoted()), so a value
    allocates nothing on MicroPython: building the status file out of strings allocated
    52 KiB for 8 devices there, 16 times the text.  Times and rates are kept as integers of
    thousandths (milli()) for the same reason: every float is a heap object on MicroPython.
    """

    def __init__(self, size=256):
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.end = 0

    def take(self):
        """The text written since the last take(), as a view into the buffer (valid until the
        next write), and start over."""
        text = self.view[:self.end]
        self.end = 0
        return text

    def room(self, size):
        """Make room for `size` more bytes; rare, so the copy may allocate."""
        need = self.end + size
        if need > len(self.buf):
            bigger = bytearray(max(need, 2 * len(self.buf)))
            bigger[:self.end] = self.view[:self.end]
            self.buf = bigger
            self.view = memoryview(bigger)

    def raw(self, data):
        end = self.end + len(data)
        if end > len(self.buf):
            self.room(len(data))
        self.buf[self.end:end] = data
        self.end = end

    def integer(self, value):
        """An int, or null for None."""
        if value is None:
            self.raw(b"null")
        elif value < 0:
            self.raw(b"-")
            self.digits(-value)
        else:
            self.digits(value)

    if sys.implementation.name == "micropython":
        def digits(self, value):
            """The digits of an int >= 0, one by one: nothing allocated."""
            if value >= 10000000000000000000:
                self.raw(str(value).encode())   # 20 digits or more: rare enough to allocate
                return
            self.room(19)
            buf = self.buf
            start = pos = self.end
            while True:         # the digits backwards, then turned around in place
                buf[pos] = 48 + value % 10
                value //= 10
                pos += 1
                if not value:
                    break
            self.end = pos
            pos -= 1
            while start < pos:
                buf[start], buf[pos] = buf[pos], buf[start]
                start += 1
                pos -= 1
    else:
        def digits(self, value):
            """CPython: formatted in C, 4x faster than the loop above, and CPython frees the
            bytes at once (a status write of 50 devices took 2.1 ms with the loop, 1.4 before
            the buffer)."""
            self.raw(b"%d" % value)

    def milli(self, thousandths):
        """A number given in thousandths, with at most 3 decimals and at least one: 1500 is
        written 1.5, 2000 is 2.0, 1234 is 1.234.  None is null."""
        if thousandths is None:
            self.raw(b"null")
            return
        if thousandths < 0:
            self.raw(b"-")
            thousandths = -thousandths
        self.digits(thousandths // 1000)
        fraction = thousandths % 1000
        self.room(4)
        buf = self.buf
        end = self.end
        buf[end] = 46       # "."
        buf[end + 1] = 48 + fraction // 100
        buf[end + 2] = 48 + fraction // 10 % 10
        buf[end + 3] = 48 + fraction % 10
        end += 4
        while buf[end - 1] == 48 and buf[end - 2] != 46:
            end -= 1
        self.end = end

_quoted = {}    # str -> its JSON bytes


def quoted(text):
    """The JSON string of `text`, encoded, made once: for the fixed set of field names,
    states, links and events (device names are encoded by their DeviceReport)."""
    data = _quoted.get(text)
    if data is None:
        data = _quoted[text] = json_scalar(text).encode()
    return data


JSON_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _json_scalar(value):
    """JSON of a string.  CPython's: MicroPython uses its json.dumps in C (and has no
    str.isprintable)."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return '"' + value + '"'    # nothing to escape: the usual case, without a loop
    out = ['"']
    for ch in value:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ord(ch) < 32:
            out.append(JSON_ESCAPES.get(ch) or "\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


if sys.implementation.name == "micropython":
    from json import dumps as json_scalar   # built in, in C: faster than the loop above
else:
    json_scalar = _json_scalar   # CPython's json package would cost ~1.4 MiB of RSS


# ---------------------------------------------------------------------------------------------
# Files

def make_dirs(path):
    """mkdir -p."""
    prefix = ""
    for part in path.split("/"):
        prefix = prefix + part + "/" if prefix or part else "/"
        if part:
            try:
                os.mkdir(prefix)
            except OSError:
                pass    # exists already, or the open that follows reports the real problem


def parent_dir(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else ("/" if i == 0 else ".")


def open_creating(path, mode):
    """open(), creating the missing parent directories (/var/run/tunmon after a reboot)."""
    try:
        return open(path, mode)
    except OSError as err:
        if err.args[0] != ENOENT:
            raise
    make_dirs(parent_dir(path))
    return open(path, mode)


def write_atomically(path, write):
    """Readers see the old file or the new one, never a part (tunmon_xml's temp + rename),
    creating /var/run/tunmon after a reboot.  `write(f)` writes the content: for the second
    try it is called again."""
    try:
        tunmon_xml.write_atomically(path, write)
    except OSError as err:
        if err.args[0] != ENOENT:
            raise
        make_dirs(parent_dir(path))
        tunmon_xml.write_atomically(path, write)


def append_capped(path, data, max_size):
    """Append `data` (bytes); a file that would grow past max_size first moves to path.1."""
    try:
        size = os.stat(path)[6]
    except OSError:
        size = 0
    if size and size + len(data) > max_size:
        os.rename(path, path + ".1")
    with open_creating(path, "ab") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# Arithmetic

def counted(current, base):
    """Units counted from `base` to `current`; None when the device is absent now.

    A counter below its base was reset (the interface was re-created), and a base of -1 means
    the device was absent: either way everything counted now is new since then.
    """
    if current < 0:
        return None
    if base < 0 or current < base:
        return current
    return current - base


def divided(numerator, denominator):
    """numerator / denominator rounded to the nearest integer (halves up), for denominator > 0:
    integer arithmetic, so that both interpreters get the same digits and nothing allocates."""
    return (2 * numerator + denominator) // (2 * denominator)


def per_second_scaled(amount, milliseconds, scale):
    """`amount` counted over `milliseconds`, per second, in units of 1/scale (rounded once);
    None if unknown."""
    if amount is None or milliseconds <= 0:
        return None
    return divided(amount * scale * 1000, milliseconds)


WEIGHT_ONE = 1000000000     # weights are in billionths


def smoothing_weight(milliseconds):
    """1 - exp(-t / SMOOTHING_SECONDS), in billionths: the weight of a rate measured over t in
    the smoothed rate.  The weight makes the result independent of how often it is updated
    (it is the continuous-time average of a rate that is constant between updates)."""
    return int((1.0 - math.exp(-milliseconds / (SMOOTHING_SECONDS * 1000))) * WEIGHT_ONE + 0.5)


def smoothed(previous, rate, weight):
    """Exponentially weighted moving average with time constant SMOOTHING_SECONDS: `rate`, the
    average over the last t, moves `previous` by `weight` = smoothing_weight(t).  Integers, so
    both interpreters agree to the last digit and nothing allocates."""
    if rate is None:
        return None
    if previous is None:
        return rate
    change = rate - previous
    # change * weight / WEIGHT_ONE, in two parts: one product past 2^62 would be a big int,
    # an allocation, on 64-bit MicroPython (up to 10 GB/s in millionths stays below).
    whole = change // WEIGHT_ONE
    part = change - whole * WEIGHT_ONE
    return previous + whole * weight + divided(part * weight, WEIGHT_ONE)


# ---------------------------------------------------------------------------------------------
# The reporter, inside the daemon

class DeviceReport:
    """What status and statistics remember about one device between observations.

    Counter quadruples are [rx bytes, rx packets, tx bytes, tx packets], -1 for absent.
    Times are monitor-clock milliseconds (Reporter.clock); rates are integers too (below).
    """

    def __init__(self, name):
        self.name = name
        self.json_name = json_scalar(name).encode()
        self.influx_name = influx_tag(name).encode()
        self.first_tick = None        # Monitor.ticks when first observed; None before
        self.state = None
        self.since = 0                # when `state` began
        # The counters when they were last loaded (a status write or a statistics line, see
        # Reporter.measure), and when: the base of `rate` and of the update of `avg`.
        self.last = [-1, -1, -1, -1]
        self.last_clock = 0
        self.rate = [None] * 4        # per second between the last two loads, in thousandths
        self.avg = [None] * 4         # smoothed per-second rates, in millionths
        self.stats_base = [-1] * 4    # counters at the last statistics line
        self.stats_clock = 0
        self.events = []              # (kind, step or state, clock, silent ms) since then
        self.last_event = None        # (kind, step, clock)
        self.last_exit = None         # (event, exit code, clock)


class Reporter:
    """Writes the status file and emits the statistics stream; see the module docstring.

    Its clock is the monitor's, in integer milliseconds (ticks x interval): on MicroPython
    every float is a heap object, and a status write must not allocate per device.
    """

    def __init__(self, config, pid, wall_clock):
        self.pid = pid
        # Wall time in seconds, asked for only when a write is due: time.time in the daemon,
        # a simulated clock in the tests.
        self.wall_clock = wall_clock
        self.written_wall = None    # wall ms and monitor clock ms at the last write
        self.written_clock = 0
        self.devices = []           # DeviceReport per watched device, in config order
        self.by_name = {}
        self.unseen = []            # indices in `devices` of those not observed yet
        self.ticks = None           # Monitor.ticks of the last observe(); None before the first
        # The monitor clock is base_ms + (ticks - base_ticks) * interval_ms; the base moves
        # on every reload, so a changed interval keeps the clock right.
        self.base_ticks = 0
        self.base_ms = 0
        self.interval_ms = clock_ms(config.interval)
        self.status_due = 0         # clock ms; the matching tick numbers are below
        self.status_due_tick = 0
        self.stats_due = 0
        self.stats_due_tick = 0
        self.dirty = True           # something worth writing happened since the last write
        # The last observe()'s device states (Monitor.devices: a reload makes the monitor a
        # new list, this one stays in the order of `devices`) and counters.
        self.states = None
        self.counters = None
        self.post_restore = None    # (clock of the last post_restore_any, exit code or None)
        self.failing = {}           # what failed to be written -> True, until it works again
        self.sock = None
        self.udp_address = None
        self.stats = None
        self.out = JsonBuffer(2 * FLUSH_AT)
        self.amounts = [None] * 4   # a statistics line's counts, see count_period()
        # smoothing_weight() of the last period measured: writes come at a steady period,
        # so its float arithmetic runs once, not once per device and write.
        self.weight_ms = 0
        self.weight = 0
        self.reloaded = None        # a config to take at the next observe()
        self.take_config(config)

    # -- configuration ------------------------------------------------------------------------

    def configure(self, config):
        """A reload.  The clock takes the new interval at once, as the monitor's ages do; the
        rest waits for the next observe(): until then the status, a stop's last write too,
        stays that of the last tick, whose counters are in the old config's order."""
        if self.ticks is None:
            self.take_config(config)
        else:
            self.set_clock(config)
            self.reloaded = config

    def set_clock(self, config):
        """The clock goes on from the last observed tick at `config`'s interval.  (Again at
        take_config() after a reload, which changes nothing: the tick is the same.)"""
        if self.ticks is not None:
            self.base_ms = self.clock(self.ticks)
            self.base_ticks = self.ticks
        self.interval_ms = clock_ms(config.interval)

    def take_config(self, config):
        """Devices that stay keep their history, new ones start afresh."""
        self.set_clock(config)
        self.status_file = config.status_file
        self.status_label = "status file " + config.status_file    # for the log, made once
        self.status_interval_ms = clock_ms(config.status_interval)
        devices = []
        by_name = {}
        unseen = []
        for name in config.devices:
            report = self.by_name.get(name) or DeviceReport(name)
            if report.first_tick is None:
                unseen.append(len(devices))
            devices.append(report)
            by_name[name] = report
        self.devices = devices
        self.by_name = by_name
        self.unseen = unseen
        old = self.stats
        self.stats = config.stats
        if self.stats is not None:
            # For the log, made once
            self.stats_label = "stats file %s" % self.stats.file
            if self.stats.udp:
                self.udp_label = "stats to %s port %d (udp)" % self.stats.udp
        if old is None or self.stats is None or old.udp != self.stats.udp:
            self.close_socket()
        if self.stats is None:
            for report in devices:
                del report.events[:]    # kept for the stream only
        now = self.clock(self.ticks or 0)
        if self.stats is not None and (old is None or old.interval != self.stats.interval):
            self.stats_due = now + clock_ms(self.stats.interval)
        self.status_due = min(self.status_due, now + self.status_interval_ms)
        self.status_due_tick = self.tick_at(self.status_due)
        self.stats_due_tick = self.tick_at(self.stats_due)
        self.dirty = True

    def write_period(self):
        """How often the file is rewritten at the least, in ms: ticks longer than
        status_interval make it once a tick."""
        return max(self.status_interval_ms, self.interval_ms)

    def clock(self, ticks):
        return self.base_ms + (ticks - self.base_ticks) * self.interval_ms

    def tick_at(self, milliseconds):
        """The first tick whose clock reaches `milliseconds`."""
        return self.base_ticks - (self.base_ms - milliseconds) // self.interval_ms

    # -- every tick ---------------------------------------------------------------------------

    def observe(self, monitor, counters):
        """Take the tick just judged by `monitor`; write and emit what is due.

        A quiet tick must not loop over the devices nor allocate: everything per device below
        is behind a test of a list that is empty on such a tick, or of a write being due.
        """
        if self.reloaded is not None:
            self.take_config(self.reloaded)     # while self.ticks is still the reload's tick
            self.reloaded = None
        ticks = monitor.ticks
        # First: if a write below fails (out of memory), close() still has a whole tick.
        self.ticks = ticks
        self.states = monitor.devices
        self.counters = counters
        loaded = False              # load_tx() done at this tick
        if self.unseen:
            # Their bases take all four counters.  (No extra read: a first sighting makes the
            # tick dirty, so the status write below would load TX anyway.)
            counters.load_tx()
            loaded = True
            for i in self.unseen:
                self.first_seen(self.devices[i], monitor.devices[i], ticks, counters, i)
            self.unseen.clear()     # (del x[:] allocates on MicroPython; clear() does not)
        if monitor.changes:
            self.note_changes(monitor.changes, ticks)
        if monitor.events:
            self.note_events(monitor, ticks)

        write_status = self.dirty or ticks >= self.status_due_tick
        emit_stats = self.stats is not None and ticks >= self.stats_due_tick
        if write_status or emit_stats:
            # The counters are loaded only when they are shown: TX is read from the kernel's
            # text here, and all rates cover the time since the previous load.
            if not loaded:
                counters.load_tx()
            self.measure(ticks, counters)
            now = to_ms(self.wall_clock())
            self.written_wall = now
            self.written_clock = self.clock(ticks)
            if emit_stats:
                self.emit_stats(now)
            if write_status:
                self.write_status(now, STATE_RUNNING)

    def first_seen(self, report, dev, ticks, counters, i):
        """A device observed for the first time (at start, or added by a reload): the Monitor
        reports changes of state only, so its state is taken here, and every base starts now."""
        clock = self.clock(ticks)
        current = current_counters(counters, i)
        report.first_tick = ticks
        report.state = dev.state
        report.since = clock
        report.last = current       # zero time to this tick's measure(): its rates are None
        report.last_clock = clock
        report.stats_base = list(current)
        report.stats_clock = clock
        self.dirty = True

    def note_changes(self, changes, ticks):
        """The states Monitor.judge() changed at this tick: (DeviceState, new state) pairs."""
        clock = self.clock(ticks)
        for dev, state in changes:
            report = self.by_name.get(dev.name)
            # Skipped: a device first seen at this tick (first_seen() took its state already).
            if report is not None and report.state != state:
                report.state = state
                report.since = clock
                if self.stats is not None:
                    report.events.append(("state", state, clock, None))
                self.dirty = True

    def note_events(self, monitor, ticks):
        """Remember the script events of this tick (probes are only counted, by the monitor)."""
        clock = self.clock(ticks)
        for kind, step, device, silent_ticks in monitor.events:
            if kind == EVENT_POST_RESTORE:
                self.post_restore = (clock, None)
                self.dirty = True
            elif kind in SCRIPT_EVENTS and device in self.by_name:
                report = self.by_name[device]
                report.last_event = (kind, step if kind != EVENT_RESTORE else None, clock)
                if self.stats is not None:
                    report.events.append((kind, step, clock, silent_ticks * self.interval_ms))
                self.dirty = True

    def script_exited(self, device, event, code):
        """A script finished with `code` (negative: killed by that signal).  `device` is ""
        for post_restore_any.  Shown in the next status write."""
        clock = self.clock(self.ticks or 0)
        if not device:
            self.post_restore = ((self.post_restore or (clock, None))[0], code)
        else:
            report = self.by_name.get(device)
            if report is None:
                return
            report.last_exit = (event, code, clock)
        self.dirty = True

    def measure(self, ticks, counters):
        """At a load of the counters: the rates since the previous load, the smoothed rates
        brought up to this tick, and this load as the base of the next."""
        clock = self.clock(ticks)
        columns = (counters.rx_bytes, counters.rx_packets, counters.tx_bytes,
                   counters.tx_packets)
        for i in range(len(self.devices)):
            report = self.devices[i]
            elapsed = clock - report.last_clock    # 0 for a device first seen at this tick
            if elapsed > 0 and elapsed != self.weight_ms:
                self.weight_ms = elapsed
                self.weight = smoothing_weight(elapsed)
            last = report.last
            rate = report.rate
            avg = report.avg
            for k in range(4):
                current = columns[k][i]
                amount = counted(current, last[k])
                rate[k] = per_second_scaled(amount, elapsed, 1000)
                if elapsed > 0:
                    avg[k] = smoothed(avg[k], per_second_scaled(amount, elapsed, 1000000),
                                      self.weight)
                last[k] = current
            report.last_clock = clock

    # -- status file --------------------------------------------------------------------------

    def write_status(self, now, state):
        """Write the status of the last observed tick, at wall time `now` (ms)."""
        clock = self.clock(self.ticks)
        self.wall_offset = now - clock      # wall ms = monitor clock ms + this
        self.run_state = state
        try:
            write_atomically(self.status_file, self.write_status_file)
            self.worked(self.status_label)
        except OSError as err:
            self.failed(self.status_label, err)
        # After a failure too: the next try comes when due, not on every tick.
        self.dirty = False
        self.status_due = clock + self.status_interval_ms
        self.status_due_tick = self.tick_at(self.status_due)

    def write_status_file(self, f):
        """The status file's layout: every top-level field on the first line (the rpcd plugin
        reads them there), then one line per device.  Written out every FLUSH_AT bytes: the
        text of many devices is never held whole."""
        out = self.out
        out.end = 0         # whatever a failed write left behind
        offset = self.wall_offset
        updated = self.clock(self.ticks) + offset
        out.raw(b'{"version": ')
        out.integer(SCHEMA_VERSION)
        out.raw(b', "pid": ')
        out.integer(self.pid)
        out.raw(b', "state": ')
        out.raw(quoted(self.run_state))
        out.raw(b', "started": ')
        out.milli(offset)                   # the wall time of clock 0
        out.raw(b', "updated": ')
        out.milli(updated)
        out.raw(b', "expires": ')
        out.milli(updated + STALE_AFTER * self.write_period())
        out.raw(b', "interval": ')
        out.milli(self.interval_ms)
        out.raw(b', "status_interval": ')
        out.milli(self.status_interval_ms)
        out.raw(b', "post_restore_any": ')
        if self.post_restore is None:
            out.raw(b"null")
        else:
            at, code = self.post_restore
            out.raw(b'{"time": ')
            out.milli(at + offset)
            out.raw(b', "exit": ')
            out.integer(code)
            out.raw(b"}")
        out.raw(b', "devices": [\n')
        for i in range(len(self.devices)):
            if i:
                out.raw(b",\n")
            self.write_device(out, self.devices[i], self.states[i], i, offset)
            if out.end >= FLUSH_AT:
                f.write(out.take())
        out.raw(b"\n]}\n")
        f.write(out.take())

    def write_device(self, out, report, dev, i, offset):
        counters = self.counters
        out.raw(b'{"name": ')
        out.raw(report.json_name)
        out.raw(b', "state": ')
        out.raw(quoted(dev.state))
        out.raw(b', "since": ')
        out.milli(report.since + offset)
        out.raw(b', "silent": ')
        out.milli(dev.age * self.interval_ms)
        out.raw(b', "link": ')
        out.raw(quoted(dev.link))
        out.raw(b', "rx": ')
        write_direction(out, counters.rx_bytes[i], counters.rx_packets[i], report, RX_BYTES)
        out.raw(b', "tx": ')
        write_direction(out, counters.tx_bytes[i], counters.tx_packets[i], report, TX_BYTES)
        out.raw(b', "actions": ')
        out.integer(dev.actions)
        out.raw(b', "retries": ')
        out.integer(dev.retries)
        out.raw(b', "restores": ')
        out.integer(dev.restores)
        out.raw(b', "probes": ')
        out.integer(dev.probes)
        out.raw(b', "last_event": ')
        write_last(out, report.last_event, b', "step": ', offset)
        out.raw(b', "last_exit": ')
        write_last(out, report.last_exit, b', "code": ', offset)
        out.raw(b"}")

    # -- statistics stream --------------------------------------------------------------------

    def emit_stats(self, now):
        """Statistics lines for the last observed tick, at wall time `now` (ms): written into
        the reporter's buffer like the status file, then appended to the file and sent."""
        clock = self.clock(self.ticks)
        stats = self.stats
        counters = self.counters
        out = self.out
        out.end = 0
        for i in range(len(self.devices)):
            report = self.devices[i]
            period = clock - report.stats_clock
            if period <= 0:
                continue    # appeared at this very tick: nothing measured yet
            self.count_period(report, i)
            if stats.format == "influx":
                self.write_influx_lines(out, report, self.states[i], now - clock,
                                        period)
            else:
                self.write_stats_line(out, report, self.states[i], now - clock,
                                      period)
            base = report.stats_base
            base[RX_BYTES] = counters.rx_bytes[i]
            base[RX_PACKETS] = counters.rx_packets[i]
            base[TX_BYTES] = counters.tx_bytes[i]
            base[TX_PACKETS] = counters.tx_packets[i]
            report.stats_clock = clock
            if report.events:
                report.events.clear()
        self.stats_due = clock + clock_ms(stats.interval)
        self.stats_due_tick = self.tick_at(self.stats_due)
        if not out.end:
            return
        # The round goes out whole: the file turns over to FILE.1 before a round, never within
        # one, and a failure is logged once.  (So the buffer grows to the size of a round, and
        # stays: about 230 B a device, where building the lines anew allocated 6 KiB.)
        length = out.end
        text = out.take()
        if stats.file:
            try:
                append_capped(stats.file, text, stats.max_size)
                self.worked(self.stats_label)
            except OSError as err:
                self.failed(self.stats_label, err)
        if stats.udp:
            self.send_udp(out, length)

    def count_period(self, report, i):
        """What each counter counted since the device's last statistics line, into
        self.amounts (None for an absent device)."""
        counters = self.counters
        base = report.stats_base
        amounts = self.amounts
        amounts[RX_BYTES] = counted(counters.rx_bytes[i], base[RX_BYTES])
        amounts[RX_PACKETS] = counted(counters.rx_packets[i], base[RX_PACKETS])
        amounts[TX_BYTES] = counted(counters.tx_bytes[i], base[TX_BYTES])
        amounts[TX_PACKETS] = counted(counters.tx_packets[i], base[TX_PACKETS])

    def write_stats_line(self, out, report, dev, offset, period):
        """One JSON line: the period's amounts and rates, and its events.  `offset` turns the
        monitor clock into wall ms."""
        amounts = self.amounts
        out.raw(b'{"time": ')
        out.milli(self.clock(self.ticks) + offset)
        out.raw(b', "device": ')
        out.raw(report.json_name)
        out.raw(b', "state": ')
        out.raw(quoted(dev.state))
        out.raw(b', "period": ')
        out.milli(period)
        out.raw(b', "silent": ')
        out.milli(dev.age * self.interval_ms)
        for k in range(4):
            out.raw(STATS_AMOUNT_KEYS[k])
            out.integer(amounts[k])
        for k in range(4):
            out.raw(STATS_RATE_KEYS[k])
            out.milli(per_second_scaled(amounts[k], period, 1000))
        out.raw(b', "events": [')
        for j in range(len(report.events)):
            kind, detail, at, silent = report.events[j]
            out.raw(b'{"event": ' if not j else b', {"event": ')
            out.raw(quoted(kind))
            if kind == "state":
                out.raw(b', "state": ')
                out.raw(quoted(detail))
            elif kind != EVENT_RESTORE:
                out.raw(b', "step": ')
                out.integer(detail)
            out.raw(b', "time": ')
            out.milli(at + offset)
            if kind != "state":
                out.raw(b', "silent": ')
                out.milli(silent)
            out.raw(b"}")
        out.raw(b"]}\n")

    def write_influx_lines(self, out, report, dev, offset, period):
        """InfluxDB line protocol: measurement `tunmon` (one line per device), and
        `tunmon_event` per event.  Fields without a value (an absent device) are left out."""
        amounts = self.amounts
        out.raw(b"tunmon,device=")
        out.raw(report.influx_name)
        out.raw(b" state=")
        out.raw(influx_string(dev.state))
        out.raw(b",period=")
        out.milli(period)
        out.raw(b",silent=")
        out.milli(dev.age * self.interval_ms)
        for k in range(4):
            if amounts[k] is not None:
                out.raw(INFLUX_AMOUNT_KEYS[k])
                out.integer(amounts[k])
                out.raw(b"i")
        for k in range(4):
            if amounts[k] is not None:
                out.raw(INFLUX_RATE_KEYS[k])
                out.milli(per_second_scaled(amounts[k], period, 1000))
        influx_time(out, self.clock(self.ticks) + offset)
        for kind, detail, at, silent in report.events:
            out.raw(b"tunmon_event,device=")
            out.raw(report.influx_name)
            out.raw(b",event=")
            out.raw(INFLUX_EVENT_TAGS[kind])
            if kind == "state":
                out.raw(b" state=")
                out.raw(influx_string(detail))
            else:
                if kind != EVENT_RESTORE:
                    out.raw(b" step=")
                    out.integer(detail)
                    out.raw(b"i,silent=")
                else:
                    out.raw(b" silent=")
                out.milli(silent)
            influx_time(out, at + offset)

    def send_udp(self, out, length):
        """Send the `length` bytes of lines in `out`, one datagram per line; a failure drops
        the rest of this round's lines."""
        what = self.udp_label
        try:
            if self.sock is None:
                import socket
                # Resolved here, not at start: at boot the resolver may not be up yet.
                host, port = self.stats.udp
                found = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
                self.sock = socket.socket(found[0], socket.SOCK_DGRAM)
                self.sock.setblocking(False)
                self.udp_address = found[-1]
            # One datagram per line: every receiver takes a line, and it stays far below any
            # MTU.
            start = 0
            while start < length:
                end = out.buf.find(b"\n", start, length) + 1
                self.sock.sendto(out.view[start:end], self.udp_address)
                start = end
        except OSError as err:
            self.close_socket()
            self.failed(what, err, "send")
            return
        self.worked(what, "sent")

    def close_socket(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.udp_address = None

    # -- errors and shutdown ------------------------------------------------------------------

    def failed(self, what, err, verb="write"):
        if not self.failing.get(what):
            self.failing[what] = True
            warning("cannot %s %s: %s" % (verb, what, os_error_text(err)))

    def worked(self, what, done="written"):
        if self.failing.pop(what, None):
            info("%s %s again" % (what, done))

    def close(self):
        """At a clean stop: the last statistics lines, and the status as "stopped"."""
        if self.written_wall is not None:      # observed at least once (its first tick writes)
            # Times stay those of the last tick, whose counters these are: its wall time is
            # the last write's, moved on by the monitor's clock.
            now = self.written_wall + (self.clock(self.ticks) - self.written_clock)
            if self.stats is not None:
                self.emit_stats(now)
            self.write_status(now, STATE_STOPPED)
        self.close_socket()


FLUSH_AT = 1024     # bytes of status text held before they are written out


def clock_ms(seconds):
    """A config time in whole milliseconds, at least 1: the reporter's clock counts them."""
    return max(1, to_ms(seconds))


def current_counters(counters, i):
    return [counters.rx_bytes[i], counters.rx_packets[i], counters.tx_bytes[i],
            counters.tx_packets[i]]


def write_direction(out, total_bytes, total_packets, report, k):
    """The "rx" or "tx" object: k is RX_BYTES or TX_BYTES, its packets come next."""
    out.raw(b'{"bytes": ')
    out.integer(total_bytes if total_bytes >= 0 else None)
    out.raw(b', "packets": ')
    out.integer(total_packets if total_packets >= 0 else None)
    out.raw(b', "rate": ')
    out.milli(report.rate[k])
    out.raw(b', "pps": ')
    out.milli(report.rate[k + 1])
    out.raw(b', "rate_avg": ')
    out.milli(in_thousandths(report.avg[k]))
    out.raw(b', "pps_avg": ')
    out.milli(in_thousandths(report.avg[k + 1]))
    out.raw(b"}")


def write_last(out, last, key, offset):
    """A device's "last_event" or "last_exit": null, or its event, `key` (the step or the exit
    code) and time, from (event, step or code, clock)."""
    if last is None:
        out.raw(b"null")
        return
    out.raw(b'{"event": ')
    out.raw(quoted(last[0]))
    out.raw(key)
    out.integer(last[1])
    out.raw(b', "time": ')
    out.milli(last[2] + offset)
    out.raw(b"}")


def in_thousandths(millionths):
    return None if millionths is None else divided(millionths, 1000)


# ---------------------------------------------------------------------------------------------
# The statistics lines' texts

STATS_AMOUNT_KEYS = (b', "rx_bytes": ', b', "rx_packets": ', b', "tx_bytes": ',
                     b', "tx_packets": ')
STATS_RATE_KEYS = (b', "rx_rate": ', b', "rx_pps": ', b', "tx_rate": ', b', "tx_pps": ')
INFLUX_AMOUNT_KEYS = (b",rx_bytes=", b",rx_packets=", b",tx_bytes=", b",tx_packets=")
INFLUX_RATE_KEYS = (b",rx_rate=", b",rx_pps=", b",tx_rate=", b",tx_pps=")
INFLUX_EVENT_TAGS = {"state": b"state", EVENT_ACTION: b"action", EVENT_RETRY: b"retry",
                     EVENT_RESTORE: b"restore"}


def influx_tag(text):
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


_influx_strings = {}    # str -> its InfluxDB string field value: the fixed set of states


def influx_string(text):
    data = _influx_strings.get(text)
    if data is None:
        data = _influx_strings[text] = \
            ('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"').encode()
    return data


def influx_time(out, milliseconds):
    """A line's timestamp, in nanoseconds from whole milliseconds, and its end."""
    out.raw(b" ")
    out.integer(milliseconds)
    out.raw(b"000000\n")


# ---------------------------------------------------------------------------------------------
# tunmon --status

def format_duration(seconds):
    """45s, 3m12s, 2h05m, 4d07h."""
    whole = int(seconds + 0.5) if seconds > 0 else 0
    if whole < 60:
        return "%ds" % whole
    if whole < 3600:
        return "%dm%02ds" % (whole // 60, whole % 60)
    if whole < 86400:
        return "%dh%02dm" % (whole // 3600, whole % 3600 // 60)
    return "%dd%02dh" % (whole // 86400, whole % 86400 // 3600)


def format_amount(value, unit):
    """Decimal units: 950 B, 1.2 kB, 34.5 MB (with unit "B/s": 1.2 kB/s)."""
    if value is None:
        return "-"
    if value < 999.5:
        return "%d %s" % (int(value + 0.5), unit)
    for prefix in ("k", "M", "G", "T"):
        value /= 1000.0
        if value < 999.95 or prefix == "T":
            tenths = int(value * 10 + 0.5)    # not %.1f: the same digits on both interpreters
            return "%d.%d %s%s" % (tenths // 10, tenths % 10, prefix, unit)


def format_seconds_short(seconds):
    """10 -> '10', 2.5 -> '2.5' (intervals in the header)."""
    return ("%.3f" % seconds).rstrip("0").rstrip(".")


def staleness(status, now):
    """None if a live daemon keeps the file fresh, else (word for the table, message)."""
    updated = status["updated"]
    ago = format_duration(now - updated)
    if status["state"] != STATE_RUNNING:
        return "stopped", "tunmon is not running: it stopped %s ago" % ago
    if not isinstance(status["pid"], int) or not is_tunmon(status["pid"]):
        return "not running", ("tunmon is not running: pid %s is gone; last status %s ago"
                               % (status["pid"], ago))
    if now > status["expires"]:
        return "stale", ("stale status: last written %s ago, due every %ss (is tunmon stuck?)"
                         % (ago, format_seconds_short(max(status["status_interval"],
                                                          status["interval"]))))
    return None


COLUMNS = ("DEVICE", "STATE", "FOR", "SILENT", "RX RATE", "TX RATE", "RX TOTAL", "TX TOTAL",
           "ACT/RET/RES", "PROBES", "LAST EVENT")
LEFT_ALIGNED = ("DEVICE", "STATE", "LAST EVENT")


def format_table(status, now, stale):
    """The human view: a header line, then one line per device."""
    live = stale is None
    updated = status["updated"]
    # A live daemon rewrites the file on every state change, so states still hold now and
    # silences have grown since; a dead one's figures are as of its last write.
    reference = now if live else updated
    header = "tunmon pid %s %s, updated %s ago, interval %ss, status every %ss\n" % (
        status["pid"], STATE_RUNNING if live else stale[0].upper(),
        format_duration(now - updated), format_seconds_short(status["interval"]),
        format_seconds_short(status["status_interval"]))
    rows = [COLUMNS]
    for dev in status["devices"]:
        silent = dev["silent"]
        if live and dev["state"] != "up":
            silent += now - updated
        rx, tx = dev["rx"], dev["tx"]
        rows.append((dev["name"], dev["state"], format_duration(reference - dev["since"]),
                     format_duration(silent), format_amount(rx["rate"], "B/s"),
                     format_amount(tx["rate"], "B/s"), format_amount(rx["bytes"], "B"),
                     format_amount(tx["bytes"], "B"),
                     "%d/%d/%d" % (dev["actions"], dev["retries"], dev["restores"]),
                     "%d" % dev["probes"], describe_last(dev, reference)))
    widths = [max(len(row[k]) for row in rows) for k in range(len(COLUMNS))]
    lines = [header]
    for row in rows:
        cells = []
        for k in range(len(COLUMNS)):
            pad = " " * (widths[k] - len(row[k]))
            cells.append(row[k] + pad if COLUMNS[k] in LEFT_ALIGNED else pad + row[k])
        lines.append("  ".join(cells).rstrip() + "\n")
    return "".join(lines)


def describe_last(dev, reference):
    """'retry 1 2m10s ago, exit 0' from last_event and last_exit."""
    event, exit_ = dev["last_event"], dev["last_exit"]
    if not event:
        return "-"
    text = event["event"] + ("" if event["step"] is None else " %d" % event["step"])
    text += " %s ago" % format_duration(reference - event["time"])
    # An exit older than the event belongs to an earlier run; this one has not ended yet.
    if exit_ and exit_["time"] >= event["time"]:
        code = exit_["code"]
        text += ", " + ("signal %d" % -code if code < 0 else "exit %d" % code)
    return text


def show_status(path, as_json, out, now=None):
    """`tunmon --status [--json]`: 0 fresh, 1 stale or missing, 2 unreadable or corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        if err.args[0] == ENOENT:
            error("no status file %s: tunmon is not running, or writes its status elsewhere"
                  % path)
            return 1
        error("cannot read %s: %s" % (path, os_error_text(err)))
        return 2
    if now is None:
        now = time.time()
    try:
        import json     # only --status reads JSON: the daemon never loads the package
        text = data.decode("utf-8")
        status = json.loads(text)
        version = status["version"]
        if version != SCHEMA_VERSION:
            error("%s: status schema version %s; this tunmon reads version %d"
                  % (path, version, SCHEMA_VERSION))
            return 2
        stale = staleness(status, now)
        table = None if as_json else format_table(status, now, stale)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError,
            RuntimeError, MemoryError):
        # (RuntimeError: JSON nested past the recursion limit; MicroPython: out of memory.
        # OverflowError: a time of 1e999.)
        error("%s: not a tunmon status file (corrupt or truncated)" % path)
        return 2
    out.write(text if as_json else table)
    if stale:
        warning(stale[1])
        return 1
    return 0
