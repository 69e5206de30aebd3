"""Hotplug events (issue 3): with <hotplug>1</hotplug> every event also runs
`hotplug-call tunmon` with ACTION, DEVICE, SILENT and STEP in its environment."""
import json
import os
import subprocess
import sys
import time

from conftest import TUNMON, run_tunmon

HEADER = "Inter-|\n face |\n"
LINE = "  tun0: %d %d 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n"
CONFIG = """<tun_mon><interval>%s</interval><hotplug>1</hotplug>
<net_devices><net_device>tun0</net_device></net_devices>
<actions><action><time>%s</time><script>/bin/true</script></action></actions>
</tun_mon>
"""


def test_replay_shows_the_hotplug_call_for_every_event(interp, tmp_path):
    config = tmp_path / "c.xml"
    config.write_text(CONFIG % (5, 10))
    trace = tmp_path / "trace"
    trace.write_text(HEADER + LINE % (100, 1) + (HEADER + LINE % (100, 1)) * 2
                     + HEADER + LINE % (200, 2))
    result = run_tunmon(interp, "-c", config, "--replay", trace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "t=10 action /bin/true tun0 10",
        "t=10 action /sbin/hotplug-call tunmon",
        "t=15 restore /sbin/hotplug-call tunmon",
        "t=15 post_restore_any /sbin/hotplug-call tunmon",
    ]


def test_the_live_daemon_runs_hotplug_call_with_the_event_in_its_environment(tmp_path):
    log = tmp_path / "hotplug.log"
    hotplug = tmp_path / "hotplug-call"
    hotplug.write_text("#!%s\nimport json, os, sys\nwith open(%r, 'a') as f:\n"
                       "    f.write(json.dumps([sys.argv[1:], dict((k, os.environ.get(k)) for k"
                       " in ('ACTION', 'DEVICE', 'SILENT', 'STEP'))]) + '\\n')\n"
                       % (sys.executable, str(log)))
    hotplug.chmod(0o755)
    config = tmp_path / "c.xml"
    config.write_text(CONFIG % (0.1, 0.3))
    proc_file = tmp_path / "dev"
    proc_file.write_text(HEADER + LINE % (100, 1))
    env = dict(os.environ, TUNMON_HOTPLUG_CALL=str(hotplug))
    daemon = subprocess.Popen([sys.executable, TUNMON, "-c", str(config), "--proc",
                               str(proc_file)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc_file.write_text(HEADER + LINE % (900, 9))
        while time.monotonic() < deadline and len(log.read_text().splitlines()) < 3:
            time.sleep(0.05)
    finally:
        daemon.terminate()
        assert daemon.wait(5) == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == [["tunmon"], {"ACTION": "action", "DEVICE": "tun0", "SILENT": "0.3",
                                     "STEP": "1"}]
    # restore and post_restore_any start at the same tick and run concurrently.
    assert sorted((call[1]["ACTION"], call[1]["DEVICE"]) for call in calls[1:]) == [
        ("post_restore_any", "tun0"), ("restore", "tun0")]
    assert "Traceback" not in daemon.stderr.read()
