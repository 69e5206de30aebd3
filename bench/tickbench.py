"""Per-tick cost and allocation worker; runs under CPython and the MicroPython unix port.

bench.py writes a spec (JSON) and starts this file as a separate process under each
interpreter (inside a network namespace for the real-kernel cases).  It imports the real
CounterReader and Monitor from the tunmon sources named in the spec, so what is timed is the
code the daemon runs.  Prints one JSON object on stdout.

Methods (one call = one tick; `paths` alternate between two snapshots so every watched device
receives traffic on every tick, the healthy steady state):
  floor       bare cost of reading the file into a preallocated buffer (the cheapest way
              the interpreter has: os.open + os.readv on CPython, open + readinto on MicroPython)
  tunmon      CounterReader.read() + Monitor.judge(): what the daemon does per tick
  read        CounterReader.read() alone;  judge: Monitor.judge() alone on ready counters
  baseline    the straightforward way: read text, split lines, split fields, dict per tick,
              then the same healthy/silent bookkeeping per watched device
  sysfs       open + read + close of statistics/rx_bytes and rx_packets per watched device
  sysfs_kept  the same two files per device kept open, re-read from offset 0 (pread)
  sysfs_source  sysfs_kept + int() into counter lists + Monitor.judge(): a sketch of a sysfs
              counter source, to project what issue 5's source would cost
  split_sketch  the cheapest parse pure Python has (CPython only): the file read as in floor,
              bytes.split() of its lines, int() of the watched RX columns, no decisions: a
              lower bound for any reader written in Python
  netlink     RTM_GETSTATS (IFLA_STATS_LINK_64) one request per watched device (CPython only)
  netlink_dump  RTM_GETSTATS dump of every device, picking the watched ones (CPython only)
"""
import gc
import json
import sys
import time

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os

CPYTHON = sys.implementation.name == "cpython"

if CPYTHON:
    _cpu_ns = time.process_time_ns

    def clock():
        return _cpu_ns()

    def elapsed_us(start):
        return (_cpu_ns() - start) / 1000.0
else:
    def clock():
        return time.ticks_us()

    def elapsed_us(start):
        return float(time.ticks_diff(time.ticks_us(), start))


INFO = {}      # what the last factory call wants to tell: its reader, its counter source


class Toggle:
    def __init__(self):
        self.i = 0


# ---------------------------------------------------------------------------------------------
# The methods: each factory returns a function that performs one tick.

def make_floor(case, tm):
    # The files stay open, as the daemon keeps /proc/net/dev open: only the reading is timed.
    buf = bytearray(case["size"] + 65536)
    view = memoryview(buf)
    state = Toggle()
    if CPYTHON:
        preadv = os.preadv
        files = [os.open(path, os.O_RDONLY) for path in case["paths"]]
        whole = [buf]

        def tick():
            state.i ^= 1
            fd = files[state.i]
            got = preadv(fd, whole, 0)
            total = got
            while got:
                got = preadv(fd, [view[total:]], total)
                total += got
            return total
    else:
        files = [open(path, "rb", buffering=0) for path in case["paths"]]

        def tick():
            state.i ^= 1
            f = files[state.i]
            f.seek(0)
            got = f.readinto(buf)
            total = got
            while got:
                got = f.readinto(view[total:])
                total += got
            return total
    return tick


def kept_readers(case, tm):
    """A CounterReader per snapshot file, each keeping its file open as the daemon keeps
    /proc/net/dev open (a synthetic file is not under /proc/, so the reader would reopen it)."""
    readers = []
    for path in case["paths"]:
        reader = tm.CounterReader(path, case["watched"])
        reader.keep_open = True
        reader.read()
        readers.append(reader)
    return readers


def make_tunmon(case, tm):
    readers = kept_readers(case, tm)
    monitor = tm.Monitor(load_config(tm, case))
    monitor.judge(0, readers[0])
    state = Toggle()

    def tick():
        state.i ^= 1
        reader = readers[state.i]
        if reader.read():
            monitor.judge(1, reader)
    INFO["reader"] = readers[0]
    return tick


def make_read(case, tm):
    readers = kept_readers(case, tm)
    state = Toggle()

    def tick():
        state.i ^= 1
        readers[state.i].read()
    return tick


class Readings:
    def __init__(self, rx_bytes, rx_packets):
        self.rx_bytes = rx_bytes
        self.rx_packets = rx_packets


def make_judge(case, tm):
    # Two readers, each holding one snapshot's counters: judge alternates between them.
    readings = []
    for path in case["paths"]:
        reader = tm.CounterReader(path, case["watched"])
        reader.read()
        readings.append(reader)
    monitor = tm.Monitor(load_config(tm, case))
    monitor.judge(0, readings[0])
    state = Toggle()

    def tick():
        state.i ^= 1
        monitor.judge(1, readings[state.i & (len(readings) - 1)])
    return tick


class QuietRunner:
    """Stands in for the script runner: the benchmark's ladders never fire."""
    name = "none"

    def spawn(self, path, argv, env):
        raise OSError(1)

    def poll(self, pid):
        return 0

    def signal_group(self, pid, sig):
        pass


class QuietSignals:
    mechanism = "none"
    wakeup_fd = None

    def take(self, signum):
        return False

    def pending(self):
        return False

    def wait_ms(self, milliseconds):
        pass


def make_daemon(case, tm):
    """Daemon.tick(): everything the live loop does per tick (counters from the source its
    config chooses, link state, judge, script service), without sleeping."""
    paths = case["paths"]
    config = load_config(tm, case)
    sys_root = case.get("sys_root") or "/sys/class/net"
    daemon = tm.Daemon(config, paths[0], False, sys_root=sys_root, runner=QuietRunner(),
                       signals=QuietSignals())
    if getattr(daemon, "reporter", 0) is None:
        daemon.start_reporter()     # as Daemon.run() does just before its loop
    daemon.tick(0)
    reader = daemon.reader
    alternate = len(paths) > 1 and getattr(reader, "path", None) == paths[0]
    if alternate:
        # Both snapshots kept open, handed to the reader in turn: the daemon keeps
        # /proc/net/dev open, and a synthetic file would be opened anew at every tick.
        reader.keep_open = True
        files = [open(path, "rb", buffering=0) for path in paths]
    state = Toggle()

    def tick():
        if alternate:
            state.i ^= 1
            reader.file = files[state.i]
        daemon.tick(1)
    INFO["source"] = getattr(reader, "source", "?")
    return tick


def make_sysfs_reader(case, tm):
    """tunmon's own sysfs counter source + judge (where tunmon has one)."""
    reader = tm.SysfsCounterReader(case.get("sys_root") or "/sys/class/net", case["watched"])
    monitor = tm.Monitor(load_config(tm, case))
    reader.read()
    monitor.judge(0, reader)

    def tick():
        if reader.read():
            monitor.judge(1, reader)
    return tick


def make_baseline(case, tm):
    paths = case["paths"]
    watched = case["watched"]
    last = {}
    age = {}
    for name in watched:
        last[name] = None
        age[name] = 0
    state = Toggle()

    def tick():
        state.i ^= 1
        with open(paths[state.i]) as f:
            text = f.read()
        table = {}
        for line in text.splitlines()[2:]:
            name, rest = line.split(":", 1)
            fields = rest.split()
            table[name.strip()] = (int(fields[0]), int(fields[1]))
        for name in watched:
            now = table.get(name)
            if now is not None and now != last[name]:
                age[name] = 0
            else:
                age[name] += 1
            last[name] = now
    return tick


def make_split_sketch(case, tm):
    buf = bytearray(case["size"] + 65536)
    view = memoryview(buf)
    files = [os.open(path, os.O_RDONLY) for path in case["paths"]]
    state = Toggle()
    columns = []

    def tick():
        state.i ^= 1
        end = os.preadv(files[state.i], [buf], 0)
        header_end = buf.find(b"\n", buf.find(b"\n") + 1) + 1
        tokens = bytes(view[header_end:end]).split()
        if not columns:      # where each watched device is: its line's first token
            names = tokens[0::17]
            columns.extend(names.index(name.encode() + b":") for name in case["watched"])
        rx_bytes = tokens[1::17]
        rx_packets = tokens[2::17]
        return (list(map(int, map(rx_bytes.__getitem__, columns))),
                list(map(int, map(rx_packets.__getitem__, columns))))
    return tick


def sysfs_paths(case):
    out = []
    for name in case["watched"]:
        base = "/sys/class/net/%s/statistics/" % name
        out.append(base + "rx_bytes")
        out.append(base + "rx_packets")
    return out


def make_sysfs(case, tm):
    paths = sysfs_paths(case)
    if CPYTHON:
        open_ = os.open
        read = os.read
        close = os.close
        flags = os.O_RDONLY

        def tick():
            for path in paths:
                fd = open_(path, flags)
                read(fd, 32)
                close(fd)
    else:
        buf = bytearray(32)

        def tick():
            for path in paths:
                f = open(path, "rb", buffering=0)
                f.readinto(buf)
                f.close()
    return tick


def _open_kept(case):
    if CPYTHON:
        return [os.open(path, os.O_RDONLY) for path in sysfs_paths(case)]
    return [open(path, "rb", buffering=0) for path in sysfs_paths(case)]


def make_sysfs_kept(case, tm):
    files = _open_kept(case)
    if CPYTHON:
        pread = os.pread

        def tick():
            for fd in files:
                pread(fd, 32, 0)
    else:
        buf = bytearray(32)

        def tick():
            for f in files:
                f.seek(0)
                f.readinto(buf)
    return tick


def make_sysfs_source(case, tm):
    files = _open_kept(case)
    count = len(case["watched"])
    if hasattr(tm, "Counters"):
        counters = tm.Counters(case["watched"])
    else:
        counters = Readings([-1] * count, [-1] * count)
    monitor = tm.Monitor(load_config(tm, case))
    if CPYTHON:
        pread = os.pread

        def fill():
            rx_bytes = counters.rx_bytes
            rx_packets = counters.rx_packets
            for i in range(count):
                rx_bytes[i] = int(pread(files[2 * i], 32, 0))
                rx_packets[i] = int(pread(files[2 * i + 1], 32, 0))
    else:
        buf = bytearray(32)
        view = memoryview(buf)

        def fill():
            rx_bytes = counters.rx_bytes
            rx_packets = counters.rx_packets
            for i in range(count):
                f = files[2 * i]
                f.seek(0)
                rx_bytes[i] = int(view[:f.readinto(buf)])
                f = files[2 * i + 1]
                f.seek(0)
                rx_packets[i] = int(view[:f.readinto(buf)])
    fill()
    monitor.judge(0, counters)

    def tick():
        fill()
        monitor.judge(1, counters)
    return tick


RTM_NEWSTATS = 92      # the reply's type
RTM_GETSTATS = 94
NLM_F_REQUEST = 1
NLM_F_DUMP = 0x300
NLMSG_DONE = 3
NLMSG_ERROR = 2


def _netlink_socket():
    import socket
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)   # NETLINK_ROUTE
    sock.bind((0, 0))
    return sock


def _stats_request(ifindex, flags, seq=1):
    import struct
    # nlmsghdr (len, type, flags, seq, pid) + if_stats_msg (family, pad, pad, ifindex,
    # filter_mask = IFLA_STATS_LINK_64)
    return struct.pack("=IHHIIBBHII", 28, RTM_GETSTATS, flags, seq, 0, 0, 0, 0, ifindex, 1)


def make_netlink(case, tm):
    import socket
    import struct
    sock = _netlink_socket()
    requests = [_stats_request(socket.if_nametoindex(name), NLM_F_REQUEST)
                for name in case["watched"]]
    buf = bytearray(8192)
    unpack = struct.unpack_from
    send = sock.send
    recv_into = sock.recv_into
    count = len(requests)
    rx_bytes = [0] * count
    rx_packets = [0] * count

    def tick():
        for i in range(count):
            send(requests[i])
            recv_into(buf)
            # nlmsghdr 16 + if_stats_msg 12 + nlattr 4: rtnl_link_stats64 starts at 32
            rx_packets[i], _tx, rx_bytes[i] = unpack("=QQQ", buf, 32)
    tick()
    if unpack("=H", buf, 4)[0] != RTM_NEWSTATS or unpack("=H", buf, 30)[0] != 1:
        raise RuntimeError("unexpected RTM_GETSTATS reply")
    return tick


def make_netlink_dump(case, tm):
    import socket
    import struct
    sock = _netlink_socket()
    wanted = {}
    for i, name in enumerate(case["watched"]):
        wanted[socket.if_nametoindex(name)] = i
    request = _stats_request(0, NLM_F_REQUEST | NLM_F_DUMP)
    buf = bytearray(65536)
    unpack = struct.unpack_from
    count = len(case["watched"])
    rx_bytes = [0] * count
    rx_packets = [0] * count

    def tick():
        sock.send(request)
        while True:
            got = sock.recv_into(buf)
            pos = 0
            while pos < got:
                length, kind = unpack("=IH", buf, pos)
                if kind == NLMSG_DONE or kind == NLMSG_ERROR:
                    return
                i = wanted.get(unpack("=I", buf, pos + 20)[0])
                if i is not None:
                    rx_packets[i], _tx, rx_bytes[i] = unpack("=QQQ", buf, pos + 32)
                pos += (length + 3) & ~3
    tick()
    return tick


FACTORIES = {"floor": make_floor, "tunmon": make_tunmon, "read": make_read,
             "judge": make_judge, "daemon": make_daemon,
             "sysfs_reader": make_sysfs_reader, "baseline": make_baseline, "sysfs": make_sysfs,
             "sysfs_kept": make_sysfs_kept, "split_sketch": make_split_sketch, "sysfs_source": make_sysfs_source,
             "netlink": make_netlink, "netlink_dump": make_netlink_dump}

CPYTHON_ONLY = ("netlink", "netlink_dump", "split_sketch")

_configs = {}


def load_config(tm, case):
    path = case["config"]
    if path not in _configs:
        import tunmon_xml
        _configs[path] = tunmon_xml.load_config(path)
    return _configs[path]


# ---------------------------------------------------------------------------------------------
# Timing

def run(tick, n):
    start = clock()
    for _ in range(n):
        tick()
    return elapsed_us(start)


def calibrate(tick, target_us):
    n = 1
    while True:
        took = run(tick, n)
        if took >= target_us * 0.2 or n >= 1 << 22:
            return max(1, int(n * target_us / max(took, 1.0)))
        n *= 4 if took < target_us * 0.02 else 2


def time_case(case, tm, spec):
    target_us = spec["target"] * 1e6
    ticks = {}
    counts = {}
    failed = {}
    INFO.clear()
    for method in case["methods"]:
        if method in CPYTHON_ONLY and not CPYTHON:
            continue
        try:
            tick = FACTORIES[method](case, tm)
            counts[method] = calibrate(tick, target_us)
            ticks[method] = tick
        except Exception as err:     # one method broken (an API change) spoils only its cell
            failed[method] = {"error": "%s: %s" % (type(err).__name__, err)}
    samples = {}
    for method in ticks:
        samples[method] = []
    for _ in range(spec["rounds"]):
        for method in ticks:           # interleaved: a noisy moment hits every method
            gc.collect()
            n = counts[method]
            samples[method].append(run(ticks[method], n) / n)
    out = failed
    for method in samples:
        values = sorted(samples[method])
        out[method] = {"min": values[0], "median": values[len(values) // 2],
                       "iterations": counts[method]}
        if method == "daemon" and "source" in INFO:
            out[method]["source"] = INFO["source"]
    check(case, ticks, out)
    return out


def check(case, ticks, out):
    """The timed readers must agree with the expected counters (the benchmark measures
    working code, not a parser that silently found nothing)."""
    expect = case.get("expect")
    reader = INFO.get("reader")
    if not expect or "tunmon" not in ticks or reader is None:
        return
    # After an even number of ticks the reader holds paths[0] or paths[1]: accept either.
    got = list(reader.rx_bytes)
    if got != expect[0] and got != expect[1]:
        out["error"] = "tunmon read wrong counters: %r..." % (got[:3],)


# ---------------------------------------------------------------------------------------------
# Allocations

def alloc_case(case, tm, spec):
    out = {}
    for method in case["methods"]:
        if method == "loop":
            try:
                out[method] = loop_allocations(case, tm, spec["loop_ticks"])
            except Exception as err:
                out[method] = {"error": "%s: %s" % (type(err).__name__, err)}
            continue
        try:
            tick = FACTORIES[method](case, tm)
            for _ in range(200):
                tick()
            ticks = spec["alloc_ticks"]
            if method not in spec.get("alloc_long", (method,)):
                ticks = min(ticks, 1000)        # breakdown rows: a shorter run is enough
            if CPYTHON:
                out[method] = _alloc_cpython(tick, ticks)
            else:
                out[method] = _alloc_micropython(tick, ticks)
            if method == "tunmon":
                # As for the timings: a reader that found nothing would allocate nothing.
                check(case, {method: tick}, out)
                if "error" in out:
                    out[method] = {"error": out.pop("error")}
        except Exception as err:
            out[method] = {"error": "%s: %s" % (type(err).__name__, err)}
        except MemoryError:
            out[method] = {"error": "MemoryError"}
        tick = None
        gc.collect()
    return out


class _LoopDone(Exception):
    pass


def loop_allocations(case, tm, ticks):
    """The live loop itself, `Daemon.loop()` with its sleeps and signal waits, at the
    interval of `case["loop_config"]` (MicroPython: `gc.mem_alloc()` before each tick, the
    collector off).  Returns each tick's bytes, sorted, as in _each_tick()."""
    config = load_config(tm, dict(case, config=case["loop_config"]))
    daemon = tm.Daemon(config, case["paths"][0], False, sys_root=case["sys_root"],
                       runner=QuietRunner(), signals=tm.Signals())
    daemon.start_reporter()
    daemon.reader.keep_open = True      # as the daemon keeps /proc/net/dev open
    files = [open(path, "rb", buffering=0) for path in case["paths"]]
    marks = [0] * (ticks + 1)           # filled with small ints: nothing allocated to measure
    count = [0]
    real_tick = daemon.tick

    def tick(elapsed):
        i = count[0]
        if i == 20:                     # after warming up: the collector off, then count
            gc.collect()
            gc.disable()
        if i >= 20:
            marks[i - 20] = gc.mem_alloc()
            if i - 20 == ticks:
                raise _LoopDone()
        count[0] = i + 1
        daemon.reader.file = files[i & 1]
        real_tick(elapsed)

    daemon.tick = tick
    try:
        daemon.loop()
    except _LoopDone:
        pass
    finally:
        gc.enable()
    each = sorted(marks[i + 1] - marks[i] for i in range(ticks))
    return {"ticks": ticks, "interval": config.interval, "median_tick": each[len(each) // 2],
            "max_tick": each[-1], "per_tick": sum(each) / float(ticks)}


def _alloc_cpython(tick, ticks):
    import tracemalloc
    tracemalloc.start()
    for _ in range(100):
        tick()
    # The harness itself keeps a few ints alive: measure it with an empty tick and subtract.
    empty = _traced_run(lambda: None, ticks, tracemalloc)
    # Two consecutive runs: the first may still settle (one-off caches, a list reaching its
    # size); the second is the steady state, and that is the growth reported.
    first_run = _traced_run(tick, min(ticks, 1000), tracemalloc)
    # The steady run in two halves: a leak grows in both; a few replaced objects (a float
    # rate, a status text of another length) move the level by tens of bytes either way.
    halves = [_traced_run(tick, ticks // 2, tracemalloc) for _ in range(2)]
    growths = [half[0] - empty[0] for half in halves]
    run = (growths[0] + growths[1], (halves[0][1] + halves[1][1]) / 2.0,
           max(halves[0][2], halves[1][2]))
    growth = run[0]
    where = []
    if min(growths) > 0:
        # Find what grows: a second run between two snapshots, tracemalloc's own lines left out.
        own = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
        tracemalloc.take_snapshot().filter_traces(own)     # compiles the filters' patterns
        first = tracemalloc.take_snapshot().filter_traces(own)
        for _ in range(ticks):
            tick()
        gc.collect()
        second = tracemalloc.take_snapshot().filter_traces(own)
        for stat in second.compare_to(first, "lineno")[:3]:
            if stat.size_diff > 0:
                where.append("%s: %+d B" % (stat.traceback[0], stat.size_diff))
    tracemalloc.stop()
    return {"ticks": ticks, "growth": growth, "halves": growths,
            "first_growth": first_run[0] - empty[0],
            "peak_mean": run[1] - empty[1], "peak_max": run[2], "where": where}


def _traced_run(tick, ticks, tracemalloc):
    """(growth of traced memory, mean and max per-tick peak above the level before it)."""
    import array
    get = tracemalloc.get_traced_memory
    reset_peak = tracemalloc.reset_peak
    sums = array.array("d", [0.0, 0.0])    # total, worst: C doubles, no int objects kept alive
    gc.collect()
    start = get()[0]
    for _ in range(ticks):
        reset_peak()
        before = get()[0]
        tick()
        peak = get()[1] - before
        sums[0] += peak
        if peak > sums[1]:
            sums[1] = peak
    before = peak = None
    gc.collect()
    return get()[0] - start, sums[0] / ticks, sums[1]


def _alloc_micropython(tick, ticks):
    # Bytes allocated per tick: with the collector off nothing is freed, so the heap's
    # allocated count rises by exactly what the ticks allocate (in 16-byte blocks).
    sample = 100
    empty = _mem_delta(lambda: None, sample)
    per_tick = (_mem_delta(tick, sample) - empty) / float(sample)
    each = _each_tick(tick, sample)
    growths = []
    # As on CPython: a first run that may still settle, then the steady run in two halves.
    for n in (min(ticks, 1000), ticks // 2, ticks // 2):
        gc.collect()
        start = gc.mem_alloc()
        for _ in range(n):
            tick()
        gc.collect()
        growths.append(gc.mem_alloc() - start)
    return {"ticks": ticks, "growth": growths[1] + growths[2], "halves": growths[1:],
            "first_growth": growths[0], "per_tick": per_tick,
            "median_tick": each[len(each) // 2], "max_tick": each[-1]}


def _each_tick(tick, n):
    """Bytes allocated by each of `n` ticks, sorted: the typical tick and the costliest (a
    status write) apart, where the mean mixes them."""
    each = [0] * n          # filled with small ints: nothing allocated while measuring
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            start = gc.mem_alloc()
            tick()
            each[i] = gc.mem_alloc() - start
    finally:
        gc.enable()
    each.sort()
    return each


def _mem_delta(tick, n):
    gc.collect()
    gc.disable()
    try:
        start = gc.mem_alloc()
        for _ in range(n):
            tick()
        return gc.mem_alloc() - start
    finally:
        gc.enable()


# ---------------------------------------------------------------------------------------------

def main(argv):
    with open(argv[1]) as f:
        spec = json.load(f)
    sys.path.insert(0, spec["src"])
    import tunmon as tm
    results = {"interpreter": interpreter_label(), "cases": {}}
    for case in spec["cases"]:
        try:
            if spec["mode"] == "alloc":
                results["cases"][case["id"]] = alloc_case(case, tm, spec)
            else:
                results["cases"][case["id"]] = time_case(case, tm, spec)
        except MemoryError:
            results["cases"][case["id"]] = {"error": "MemoryError"}
        except OSError as err:
            results["cases"][case["id"]] = {"error": "OSError %s" % (err.args[0],)}
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


def interpreter_label():
    impl = sys.implementation
    version = ".".join([str(v) for v in impl.version[:3]])
    if CPYTHON:
        return "CPython " + version
    return "MicroPython " + version


if __name__ == "__main__":
    sys.exit(main(sys.argv))
