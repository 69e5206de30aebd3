"""The benchmark (bench/bench.py, issue 7) runs on a tiny size and prints its tables.

No timing assertions: the benchmark is a program, these machines are noisy, and the figures
belong in BENCHMARKS.md.  This only keeps `make bench` from rotting when tunmon's code moves.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "bench.py")


def test_quick_benchmark_prints_its_tables(tmp_path):
    out = tmp_path / "bench.md"
    raw = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--out", str(out), "--json", str(raw)],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert text.startswith("# tunmon benchmarks")
    assert out.read_text() == text
    # Every section is there, none failed.
    for title in ("## Targets (issue 7)", "## Per-tick cost, synthetic files",
                  "## Per-tick cost, real kernel", "## Allocations per tick",
                  "## Start-up: import + load config", "## Script launch cost",
                  "## Memory: smallest MicroPython heap", "## Probe traffic",
                  "## Memory: CPython RSS of the live daemon",
                  "## Memory: MicroPython RSS of the live daemon"):
        assert title in text, title
    assert "failed**" not in text, text
    assert "Failures:" not in text, text
    # The per-tick table has a row per synthetic case with numbers in it.
    header = "| interfaces | file | watched | floor | tunmon |"
    assert header in text
    rows = [line for line in text.splitlines() if line.startswith("| 4 |")
            or line.startswith("| 64 |")]
    assert len(rows) >= 5
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert "n/a" not in cells[3:6], row
    # The machine is named, and the raw results are JSON.
    assert "Machine: " in text
    results = json.loads(raw.read_text())
    assert results["machine"]["cpython"]
    assert set(results["ticks"]) >= {"cpython"}
    # The smallest heaps were found for the replay and for the live daemon.
    assert {kind: bool(found["heap"]) for kind, found in results["heap"].items()} == {
        "mpy": True, "py": True, "live": True}
    # The 32-bit MicroPython (make test installs it) ran read + judge on counters it checked,
    # and counted what a tick allocates.
    assert "micropython32" in results["alloc"], "no 32-bit MicroPython: run `make test`"
    assert results["alloc"]["micropython32"]["tunmon"]["per_tick"] >= 0, results["alloc"]
    # Both MicroPython daemons were still running at both readings of their RSS.
    assert set(results["memory"]["micropython"]) == {"shipped", "default collection"}
    for readings in results["memory"]["micropython"].values():
        assert readings["early"] and readings["late"], readings


def bench_modules(*names):
    """Modules of bench/ (synth, bench), imported without leaving bench/ on sys.path."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        return [__import__(name) for name in names]
    finally:
        sys.path.pop(0)


def synthetic_case(tmp_path, interfaces, watched_count, methods):
    """A worker's case: two snapshots of a synthetic /proc/net/dev, a config watching
    `watched_count` of its devices, and the RX bytes the reader must find in each."""
    synth, = bench_modules("synth")
    first, second, counters = synth.proc_pair(interfaces)
    paths = []
    for name, data in (("a", first), ("b", second)):
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    watched = synth.watched_names(counters.names, watched_count)
    config = tmp_path / "cfg.xml"
    config.write_text(synth.config_xml(watched))
    return {"id": "%d/%d" % (interfaces, watched_count), "paths": paths, "size": len(second),
            "watched": watched, "config": str(config), "methods": methods,
            "expect": [rx_bytes(first, watched), rx_bytes(second, watched)]}


def test_tickbench_reads_what_the_file_says(tmp_path):
    """The worker times working code: CounterReader finds the counters the file holds."""
    spec = {"src": ROOT, "mode": "ticks", "target": 0.001, "rounds": 1,
            "cases": [synthetic_case(tmp_path, 16, 3, ["floor", "tunmon", "baseline"])]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "tickbench.py"),
                           str(spec_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    case = json.loads(proc.stdout)["cases"]["16/3"]
    assert set(case) >= {"floor", "tunmon", "baseline"}
    assert "error" not in case, case


def test_a_32_bit_micropython_reads_router_counters_with_little_allocation(tmp_path):
    """Most routers run a 32-bit MicroPython, where an int past 2**30 (1 GiB received) is a
    heap object.  The digit loop made one at every digit past the 9th: 304 B a device and
    tick for counters of 10 to 12 digits.  Now it puts the last 9 digits and the ones before
    together once; and judge() subtracted counters for every busy device (48 B each), where
    comparing them tells whether it received.  Measured by the benchmark's own worker under
    the webassembly port."""
    bench, = bench_modules("bench")
    assert os.path.isdir(bench.MP32_PACKAGE), "make test installs the 32-bit MicroPython"
    case = synthetic_case(tmp_path, 64, 8, ["read", "judge"])
    assert min(case["expect"][0]) > 2 ** 30      # a router's counters, past 1 GiB
    spec = {"src": ROOT, "mode": "alloc", "alloc_ticks": 200, "cases": [case]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(["node", os.path.join(ROOT, "bench", "mp32.mjs"), bench.MP32_PACKAGE,
                           os.path.join(ROOT, "bench", "tickbench.py"), str(spec_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    allocated = json.loads(proc.stdout.splitlines()[-1])["cases"]["64/8"]
    assert allocated["read"]["per_tick"] <= 8 * 128, allocated
    # Deciding compares counters and subtracts none (the trace's totals are off).
    assert allocated["judge"]["per_tick"] == 0, allocated


def rx_bytes(data, names):
    table = {}
    for line in data.decode().splitlines()[2:]:
        name, rest = line.split(":", 1)
        table[name.strip()] = int(rest.split()[0])
    return [table[name] for name in names]
