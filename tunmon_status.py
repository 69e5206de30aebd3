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
                        is_tunmon, os_error_text)

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
    sys.stderr.write("warning: " + message + "\n")


def info(message):
    sys.stderr.write("info: " + message + "\n")


def error(message):
    sys.stderr.write("error: " + message + "\n")


# ---------------------------------------------------------------------------------------------
# JSON with a fixed key order

def dumps(value):
    """JSON text of `value`, where a tuple of (key, value) pairs stands for an object."""
    out = []
    dump_into(out, value)
    return "".join(out)


def dump_into(out, value):
    """Append the JSON of `value` to the list `out`, piece by piece, for one join at the end:
    joining and concatenating at every level made a status write allocate 30x its size on
    MicroPython.  The separators are constants and key texts are made once, so the pieces
    allocated are the values' own texts."""
    if isinstance(value, dict):
        value = tuple(value.items())
    if isinstance(value, tuple):
        out.append("{")
        separator = ""
        for key, item in value:
            out.append(separator)
            out.append(key_text(key))
            dump_into(out, item)
            separator = ", "
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        dump_items_into(out, value, ", ")
        out.append("]")
    elif isinstance(value, float):
        out.append(number_text(value))
    else:
        out.append(json_scalar(value))


def dump_items_into(out, items, separator):
    between = ""
    for item in items:
        out.append(between)
        dump_into(out, item)
        between = separator


_key_texts = {}     # the JSON of each object key with its colon: a fixed set of field names


def key_text(key):
    text = _key_texts.get(key)
    if text is None:
        text = _key_texts[key] = json_scalar(key) + ": "
    return text


JSON_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _json_scalar(value):
    """JSON of a string, int, bool or None.  CPython's: MicroPython uses its json.dumps in C
    (and has no str.isprintable)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
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


def number_text(value):
    """A float with at most 3 decimals (ms, 0.001 B/s), rounded through an integer:
    MicroPython's round() and repr() differ from CPython's in the last digits, this way both
    interpreters write the same bytes."""
    thousandths = int(abs(value) * 1000 + 0.5)
    text = ("%d.%03d" % (thousandths // 1000, thousandths % 1000)).rstrip("0")
    if text.endswith("."):
        text += "0"
    return "-" + text if value < 0 and thousandths else text


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


def write_atomically(path, make_chunks):
    """Readers see the old file or the new one, never a part (tunmon_xml's temp + rename),
    creating /var/run/tunmon after a reboot.  `make_chunks()` gives the strings to write; it
    is called again for the second try, as a generator cannot start over."""
    try:
        tunmon_xml.write_atomically(path, make_chunks())
    except OSError as err:
        if err.args[0] != ENOENT:
            raise
        make_dirs(parent_dir(path))
        tunmon_xml.write_atomically(path, make_chunks())


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


def per_second(amount, seconds):
    return None if amount is None or seconds <= 0 else amount / seconds


def smoothed(previous, rate, seconds):
    """Exponentially weighted moving average with time constant SMOOTHING_SECONDS.

    `rate` is the average over the last `seconds`; the weight 1 - exp(-seconds/tau) makes the
    result independent of how often it is updated (it is the continuous-time average of a
    rate that is constant between updates).
    """
    if rate is None:
        return None
    if previous is None:
        return rate
    return previous + (1.0 - math.exp(-seconds / SMOOTHING_SECONDS)) * (rate - previous)


# ---------------------------------------------------------------------------------------------
# The reporter, inside the daemon

class DeviceReport:
    """What status and statistics remember about one device between observations.

    Counter quadruples are [rx bytes, rx packets, tx bytes, tx packets], -1 for absent.
    Times are in monitor-clock seconds (Reporter.clock).
    """

    def __init__(self, name):
        self.name = name
        self.first_tick = None        # Monitor.ticks when first observed; None before
        self.state = None
        self.since = 0.0              # when `state` began
        # The counters when they were last loaded (a status write or a statistics line, see
        # Reporter.measure), and when: the base of `rate` and of the update of `avg`.
        self.last = [-1, -1, -1, -1]
        self.last_clock = 0.0
        self.rate = [None] * 4        # per second between the last two loads
        self.avg = [None] * 4         # smoothed per-second rates
        self.stats_base = [-1] * 4    # counters at the last statistics line
        self.stats_clock = 0.0
        self.events = []              # (kind, step or state, clock, silent seconds) since then
        self.last_event = None        # (kind, step, clock)
        self.last_exit = None         # (event, exit code, clock)


class Reporter:
    """Writes the status file and emits the statistics stream; see the module docstring."""

    def __init__(self, config, pid, wall_clock):
        self.pid = pid
        # Wall time, asked for only when a write is due (a float allocates on MicroPython):
        # time.time in the daemon, a simulated clock in the tests.
        self.wall_clock = wall_clock
        self.wall_at = None         # (wall time, monitor clock) at the last write
        self.devices = []           # DeviceReport per watched device, in config order
        self.by_name = {}
        self.unseen = []            # indices in `devices` of those not observed yet
        self.ticks = None           # Monitor.ticks of the last observe(); None before the first
        # The monitor clock in seconds is base_seconds + (ticks - base_ticks) * interval;
        # the base moves on every reload, so a changed interval keeps the seconds right.
        self.base_ticks = 0
        self.base_seconds = 0.0
        self.interval = config.interval
        self.status_due = 0.0       # clock seconds; the matching tick numbers are below
        self.status_due_tick = 0
        self.stats_due = 0.0
        self.stats_due_tick = 0
        self.dirty = True           # something worth writing happened since the last write
        self.monitor = None         # the last observe()'s monitor and counters, for close()
        self.counters = None
        self.post_restore = None    # (clock of the last post_restore_any, exit code or None)
        self.failing = {}           # what failed to be written -> True, until it works again
        self.sock = None
        self.udp_address = None
        self.stats = None
        self.configure(config)

    # -- configuration ------------------------------------------------------------------------

    def configure(self, config):
        """Start or reload: devices that stay keep their history, new ones start afresh."""
        if self.ticks is not None:
            self.base_seconds = self.clock(self.ticks)
            self.base_ticks = self.ticks
        self.interval = config.interval
        self.status_file = config.status_file
        self.status_interval = config.status_interval
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
        if old is None or self.stats is None or old.udp != self.stats.udp:
            self.close_socket()
        if self.stats is None:
            for report in devices:
                del report.events[:]    # kept for the stream only
        if self.stats is not None and (old is None or old.interval != self.stats.interval):
            self.stats_due = self.clock(self.ticks or 0) + self.stats.interval
        self.status_due = min(self.status_due, self.clock(self.ticks or 0) + self.status_interval)
        self.status_due_tick = self.tick_at(self.status_due)
        self.stats_due_tick = self.tick_at(self.stats_due)
        self.dirty = True

    def write_period(self):
        """How often the file is rewritten at the least: ticks longer than status_interval
        make it once a tick."""
        return max(self.status_interval, self.interval)

    def clock(self, ticks):
        return self.base_seconds + (ticks - self.base_ticks) * self.interval

    def tick_at(self, seconds):
        """The first tick whose clock reaches `seconds`."""
        ticks = (seconds - self.base_seconds) / self.interval
        whole = int(ticks)
        if whole < ticks - 1e-9:
            whole += 1
        return self.base_ticks + whole

    # -- every tick ---------------------------------------------------------------------------

    def observe(self, monitor, counters):
        """Take the tick just judged by `monitor`; write and emit what is due.

        A quiet tick must not loop over the devices nor allocate (a float allocates on
        MicroPython): everything per device below is behind a test of a list that is empty
        on such a tick, or of a write being due.
        """
        ticks = monitor.ticks
        # First: if a write below fails (out of memory), close() still has a whole tick.
        self.ticks = ticks
        self.monitor = monitor
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
            now = self.wall_clock()
            self.wall_at = (now, self.clock(ticks))
            if emit_stats:
                self.emit_stats(now, ticks, monitor, counters)
            if write_status:
                self.write_status(now, ticks, monitor, counters, STATE_RUNNING)

    def first_seen(self, report, dev, ticks, counters, i):
        """A device observed for the first time (at start, or added by a reload): the Monitor
        reports changes of state only, so its state is taken here, and every base starts now."""
        clock = self.clock(ticks)
        current = current_counters(counters, i)
        report.first_tick = ticks
        report.state = dev.state
        report.since = clock
        report.last = current       # zero seconds to this tick's measure(): its rates are None
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
                    report.events.append((kind, step, clock, silent_ticks * self.interval))
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
        for i in range(len(self.devices)):
            report = self.devices[i]
            current = current_counters(counters, i)
            seconds = clock - report.last_clock    # 0 for a device first seen at this tick
            last = report.last
            rate = report.rate
            avg = report.avg
            for k in range(4):
                rate[k] = per_second(counted(current[k], last[k]), seconds)
                if seconds > 0:
                    avg[k] = smoothed(avg[k], rate[k], seconds)
                last[k] = current[k]
            report.last_clock = clock

    # -- status file --------------------------------------------------------------------------

    def write_status(self, now, ticks, monitor, counters, state):
        clock = self.clock(ticks)

        def wall(at):
            return now - (clock - at)

        post_restore = None
        if self.post_restore:
            post_restore = (("time", wall(self.post_restore[0])), ("exit", self.post_restore[1]))
        head = (("version", SCHEMA_VERSION), ("pid", self.pid), ("state", state),
                ("started", wall(0.0)), ("updated", now),
                ("expires", now + STALE_AFTER * self.write_period()),
                ("interval", self.interval), ("status_interval", self.status_interval),
                ("post_restore_any", post_restore))

        def make_chunks():
            # One device at a time: 50 devices held at once needed a 650K MicroPython heap.
            return status_chunks(head, (self.device_status(self.devices[i], monitor.devices[i],
                                                           counters, i, wall)
                                        for i in range(len(self.devices))))

        try:
            write_atomically(self.status_file, make_chunks)
            self.worked("status file " + self.status_file)
        except OSError as err:
            self.failed("status file " + self.status_file, err)
        # After a failure too: the next try comes when due, not on every tick.
        self.dirty = False
        self.status_due = clock + self.status_interval
        self.status_due_tick = self.tick_at(self.status_due)

    def device_status(self, report, dev, counters, i, wall):
        current = current_counters(counters, i)
        rate = report.rate
        avg = report.avg
        event = report.last_event
        exit_ = report.last_exit
        return (
            ("name", report.name), ("state", dev.state), ("since", wall(report.since)),
            ("silent", dev.age * self.interval), ("link", dev.link),
            ("rx", direction(current[RX_BYTES], current[RX_PACKETS], rate[RX_BYTES],
                             rate[RX_PACKETS], avg[RX_BYTES], avg[RX_PACKETS])),
            ("tx", direction(current[TX_BYTES], current[TX_PACKETS], rate[TX_BYTES],
                             rate[TX_PACKETS], avg[TX_BYTES], avg[TX_PACKETS])),
            ("actions", dev.actions), ("retries", dev.retries), ("restores", dev.restores),
            ("probes", dev.probes),
            ("last_event", event and (("event", event[0]), ("step", event[1]),
                                      ("time", wall(event[2])))),
            ("last_exit", exit_ and (("event", exit_[0]), ("code", exit_[1]),
                                     ("time", wall(exit_[2])))))

    # -- statistics stream --------------------------------------------------------------------

    def emit_stats(self, now, ticks, monitor, counters):
        clock = self.clock(ticks)
        stats = self.stats
        influx = stats.format == "influx"
        lines = []
        for i in range(len(self.devices)):
            report = self.devices[i]
            period = clock - report.stats_clock
            if period <= 0:
                continue    # appeared at this very tick: nothing measured yet
            record = self.stats_record(report, monitor.devices[i], counters, i, now, clock,
                                       period)
            if influx:
                lines.extend(influx_lines(record, report.events, now, clock))
            else:
                lines.append(dumps(record))
            report.stats_base = current_counters(counters, i)
            report.stats_clock = clock
            del report.events[:]
        self.stats_due = clock + stats.interval
        self.stats_due_tick = self.tick_at(self.stats_due)
        if stats.file and lines:
            try:
                append_capped(stats.file, "".join(line + "\n" for line in lines).encode(),
                              stats.max_size)
                self.worked("stats file " + stats.file)
            except OSError as err:
                self.failed("stats file " + stats.file, err)
        if stats.udp and lines:
            self.send_udp(lines)

    def stats_record(self, report, dev, counters, i, now, clock, period):
        current = current_counters(counters, i)
        amounts = [counted(current[k], report.stats_base[k]) for k in range(4)]
        events = []
        for kind, detail, at, silent in report.events:
            when = now - (clock - at)
            if kind == "state":
                events.append((("event", kind), ("state", detail), ("time", when)))
            elif kind == EVENT_RESTORE:
                events.append((("event", kind), ("time", when), ("silent", silent)))
            else:
                events.append((("event", kind), ("step", detail), ("time", when),
                               ("silent", silent)))
        return (("time", now), ("device", report.name), ("state", dev.state),
                ("period", period), ("silent", dev.age * self.interval),
                ("rx_bytes", amounts[RX_BYTES]), ("rx_packets", amounts[RX_PACKETS]),
                ("tx_bytes", amounts[TX_BYTES]), ("tx_packets", amounts[TX_PACKETS]),
                ("rx_rate", per_second(amounts[RX_BYTES], period)),
                ("rx_pps", per_second(amounts[RX_PACKETS], period)),
                ("tx_rate", per_second(amounts[TX_BYTES], period)),
                ("tx_pps", per_second(amounts[TX_PACKETS], period)),
                ("events", events))

    def send_udp(self, lines):
        host, port = self.stats.udp
        what = "stats to %s port %d (udp)" % (host, port)
        try:
            if self.sock is None:
                import socket
                # Resolved here, not at start: at boot the resolver may not be up yet.
                found = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
                self.sock = socket.socket(found[0], socket.SOCK_DGRAM)
                self.sock.setblocking(False)
                self.udp_address = found[-1]
            for line in lines:
                # One datagram per line: every receiver takes a line, and it stays far
                # below any MTU.
                self.sock.sendto((line + "\n").encode(), self.udp_address)
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
        if self.wall_at is not None:      # observed at least once (its first tick writes)
            # Times stay those of the last tick, whose counters these are: its wall time is
            # the last write's, moved on by the monitor's clock.
            written, written_clock = self.wall_at
            now = written + (self.clock(self.ticks) - written_clock)
            if self.stats is not None:
                self.emit_stats(now, self.ticks, self.monitor, self.counters)
            self.write_status(now, self.ticks, self.monitor, self.counters, STATE_STOPPED)
        self.close_socket()


def status_chunks(head, devices):
    """The status file's layout, in chunks of one device each: every top-level field on the
    first line (the rpcd plugin reads them there), then one line per device."""
    out = []
    dump_into(out, head)
    out[-1] = ', "devices": [\n'        # in place of the head's closing brace
    separator = ""
    for device in devices:
        out.append(separator)
        dump_into(out, device)
        yield "".join(out)
        out.clear()
        separator = ",\n"
    out.append("\n]}\n")
    yield "".join(out)


def current_counters(counters, i):
    return [counters.rx_bytes[i], counters.rx_packets[i], counters.tx_bytes[i],
            counters.tx_packets[i]]


def direction(total_bytes, total_packets, rate, pps, rate_avg, pps_avg):
    return (("bytes", total_bytes if total_bytes >= 0 else None),
            ("packets", total_packets if total_packets >= 0 else None),
            ("rate", rate), ("pps", pps), ("rate_avg", rate_avg), ("pps_avg", pps_avg))


# ---------------------------------------------------------------------------------------------
# InfluxDB line protocol

def influx_tag(text):
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def influx_value(value):
    if isinstance(value, int):
        return "%di" % value
    if isinstance(value, float):
        return number_text(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influx_fields(pairs):
    return ",".join(key + "=" + influx_value(value) for key, value in pairs if value is not None)


def influx_timestamp(seconds):
    """Nanoseconds, from whole milliseconds: a float cannot hold 19 exact digits."""
    return "%d000000" % int(seconds * 1000 + 0.5)


def influx_lines(record, events, now, clock):
    """Measurement `tunmon` (one line per device), and `tunmon_event` per event."""
    device = influx_tag(record[1][1])
    fields = [pair for pair in record[2:] if pair[0] != "events"]
    lines = ["tunmon,device=%s %s %s" % (device, influx_fields(fields),
                                         influx_timestamp(record[0][1]))]
    for kind, detail, at, silent in events:
        if kind == "state":
            pairs = (("state", detail),)
        elif kind == EVENT_RESTORE:
            pairs = (("silent", silent),)
        else:
            pairs = (("step", detail), ("silent", silent))
        lines.append("tunmon_event,device=%s,event=%s %s %s"
                     % (device, kind, influx_fields(pairs), influx_timestamp(now - (clock - at))))
    return lines


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
        with open(path) as f:
            text = f.read()
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
        status = json.loads(text)
        version = status["version"]
        if version != SCHEMA_VERSION:
            error("%s: status schema version %s; this tunmon reads version %d"
                  % (path, version, SCHEMA_VERSION))
            return 2
        stale = staleness(status, now)
        table = None if as_json else format_table(status, now, stale)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        error("%s: not a tunmon status file (corrupt or truncated)" % path)
        return 2
    out.write(text if as_json else table)
    if stale:
        warning(stale[1])
        return 1
    return 0
