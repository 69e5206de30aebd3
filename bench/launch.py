"""Script launch cost worker (CPython): tunmon's runners vs subprocess.Popen, and what a fork
of a large process costs vs posix_spawn.  Started by bench.py in a process of its own, so the
ballast it allocates never bloats the benchmark.  Prints one JSON object.

    launch.py SRC SHIM_DIR COUNT BALLAST_MB[,BALLAST_MB...]
"""
import json
import os
import subprocess
import sys
import tempfile
import time


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(ways, count):
    """ways: {name: (start, reap)}, start() -> pid.  The ways take turns, so a noisy moment
    on the machine hits each alike.  Per way, the best (and the median) in µs of: wall time
    until start returns, the parent's CPU time in it, and wall time until the child exited."""
    samples = dict((name, ([], [], [])) for name in ways)
    for _ in range(count):
        for name, (start, reap) in ways.items():
            launch, cpu, done = samples[name]
            t0 = time.perf_counter()
            c0 = time.process_time()
            pid = start()
            t1 = time.perf_counter()
            c1 = time.process_time()
            reap(pid)
            t2 = time.perf_counter()
            launch.append((t1 - t0) * 1e6)
            cpu.append((c1 - c0) * 1e6)
            done.append((t2 - t0) * 1e6)
    return dict((name, {"launch": min(launch), "cpu": min(cpu), "done": min(done),
                        "launch_median": median(launch), "done_median": median(done),
                        "n": count}) for name, (launch, cpu, done) in samples.items())


def waitpid(pid):
    os.waitpid(pid, 0)


def main(argv):
    src, shim, count, ballasts = argv[1], argv[2], int(argv[3]), argv[4]
    sys.path.insert(0, src)
    import tunmon
    out = {"runners": {}, "fork": []}
    work = tempfile.mkdtemp(prefix="tunmon-bench-launch-")
    script = os.path.join(work, "action.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o755)
    argv_ = [script, "tun0", "15"]
    env = {"TUNMON_EVENT": "action", "TUNMON_DEVICE": "tun0", "TUNMON_SILENT": "15",
           "TUNMON_STEP": "1", "TUN_DOWN_tun0": "15"}

    runner = tunmon.PosixSpawnRunner()
    ways = {"PosixSpawnRunner": (lambda: runner.spawn(script, argv_, env), waitpid)}

    def popen():
        return subprocess.Popen(argv_, env=dict(os.environ, **env), stdin=subprocess.DEVNULL,
                                process_group=0)

    ways["subprocess.Popen"] = (popen, lambda proc: proc.wait())
    ffi_name = "FfiRunner (ctypes ffi stand-in)"
    try:
        sys.path.insert(0, shim)
        import ffi
        ffi_runner = tunmon.FfiRunner(ffi)
        ways[ffi_name] = (lambda: ffi_runner.spawn(script, argv_, env), waitpid)
    except Exception as err:  # noqa: BLE001 - report, do not die
        out["runners"][ffi_name] = {"error": "%s: %s" % (type(err).__name__, err)}
    out["runners"].update(measure(ways, count))

    # fork vs posix_spawn as the parent grows.
    ballast = None
    for mb in [int(x) for x in ballasts.split(",")]:
        ballast = None
        ballast = b"\x01" * (mb << 20)      # touched pages: they are in RSS and page tables

        def fork():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            return pid

        def spawn():
            return os.posix_spawn("/bin/true", ["/bin/true"], os.environ)

        def popen_true():
            return subprocess.Popen(["/bin/true"])

        entry = {"ballast_mb": mb, "rss_kib": rss_kib()}
        entry.update(measure({"fork": (fork, waitpid), "posix_spawn": (spawn, waitpid),
                              "popen": (popen_true, lambda proc: proc.wait())},
                             max(5, count // 4)))
        out["fork"].append(entry)
    del ballast
    os.remove(script)
    os.rmdir(work)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
