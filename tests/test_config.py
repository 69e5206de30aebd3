"""Config tests for issue 2: the XML loader as seen through `tunmon.py --check` and `--replay`.

Black-box, under CPython and MicroPython (the `interp` fixture). Errors must be one line,
`error: FILE:LINE:COL: message`, exit 2, never a traceback.
"""
import os
import re

import pytest

from conftest import run_tunmon
from test_replay import QUIET, Trace, replay, tm_config, write

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def check(interp, path, *extra):
    res = run_tunmon(interp, "-c", str(path), "--check", *extra)
    assert "Traceback" not in res.stderr, res.stderr
    assert "Traceback" not in res.stdout, res.stdout
    assert "internal error" not in res.stderr, res.stderr
    return res


def warnings(res):
    return [l for l in res.stderr.splitlines() if l.startswith("warning: ")]


def assert_config_error(res, path, line=None, col=None, *words):
    """Exit 2, exactly one stderr line `error: PATH:LINE:COL: ...` containing every word."""
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    msg = lines[0]
    assert msg.startswith("error: "), msg
    m = re.match(r"^error: (.+?):(\d+):(\d+): (.+)$", msg)
    assert m, msg
    assert m.group(1) == str(path), msg
    if line is not None:
        assert int(m.group(2)) == line, msg
    if col is not None:
        assert int(m.group(3)) == col, msg
    for w in words:
        assert w in m.group(4), (w, msg)
    return msg


def make_exec(path, body="#!/bin/sh\nexit 0\n", mode=0o755):
    path = str(path)
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path, "w") as f:
        f.write(body)
    os.chmod(path, mode)
    return path


SEED_CONFIG = """<tun_mon>
  <net_devices>
    <net_device>tun0</net_device>
    <net_device>tun1</net_device>
  </net_devices>
  <interval>5</interval>
  <pidfile>./tunmon.pid</pidfile>
  <actions>
    <action><time>15</time><script>./script/ping.sh</script></action>
  </actions>
  <retry_actions>
    <action><interval>120</interval><script>./script/retry.sh</script></action>
  </retry_actions>
  <restore_dev>
    <script>./script/restored.sh</script>
  </restore_dev>
  <post_restore_any>
    <script>./script/post_restored.sh</script>
  </post_restore_any>
</tun_mon>
"""


def seed_setup(tmp_path, text):
    for name in ("ping.sh", "retry.sh", "restored.sh", "post_restored.sh"):
        make_exec(tmp_path / "script" / name)
    return write(tmp_path / "tunmon.xml", text)


def seed_trace():
    tr = Trace()
    for k in range(29):                       # tun0 silent until tick 28; tun1 busy throughout
        tr.snap({"tun0": (1000, 10) if k < 28 else (1500, 15), "tun1": (7000 + 10 * k, 70 + k)})
    return tr


def normalized(lines):
    """`./script/x.sh` resolved against /dir may print as /dir/./script/x.sh or /dir/script/x.sh:
    both name the same file, the issue does not say which; compare normalized argv[0]."""
    out = []
    for l in lines:
        words = l.split(" ")
        words[2] = os.path.normpath(words[2])
        out.append(" ".join(words))
    return out


def seed_expected(tmp_path):
    d = str(tmp_path) + "/script/"
    return [
        "t=15 action %sping.sh tun0 15" % d,
        "t=135 retry %sretry.sh tun0 135" % d,
        "t=140 restore %srestored.sh tun0 135" % d,
        "t=140 post_restore_any %spost_restored.sh tun0" % d,
    ]


# ---------------------------------------------------------------------------------------------
# The seed README's example

def test_seed_readme_example_checks_clean(interp, tmp_path):
    cfg = seed_setup(tmp_path, SEED_CONFIG)
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr
    assert warnings(res) == [], res.stderr
    assert not [l for l in res.stderr.splitlines() if l.startswith("error: ")], res.stderr


def test_seed_readme_example_replay(interp, tmp_path):
    """`<retry_actions><action><interval>` (README form) is loaded, not silently ignored."""
    seed_setup(tmp_path, SEED_CONFIG)
    lines, _ = replay(interp, tmp_path, SEED_CONFIG, seed_trace())
    assert normalized(lines) == seed_expected(tmp_path)


@pytest.mark.parametrize("tag,time_tag", [("retry", "interval"), ("retry", "time"), ("action", "time")])
def test_retry_entry_forms_are_equivalent(interp, tmp_path, tag, time_tag):
    text = SEED_CONFIG.replace("<action><interval>120</interval><script>./script/retry.sh</script></action>",
                               "<%s><%s>120</%s><script>./script/retry.sh</script></%s>" % (tag, time_tag, time_tag, tag))
    assert text != SEED_CONFIG
    seed_setup(tmp_path, text)
    lines, _ = replay(interp, tmp_path, text, seed_trace())
    assert normalized(lines) == seed_expected(tmp_path)
    assert check(interp, tmp_path / "tunmon.xml").returncode == 0


def test_prolog_comments_whitespace_and_all_optional_elements(interp, tmp_path):
    text = """<?xml version="1.0" encoding="UTF-8"?>
<!-- tunmon configuration -->
<tun_mon>
  <!-- the tunnels -->
  <net_devices>
    <net_device>
      tun0
    </net_device>
  </net_devices>
  <interval> 5 </interval>
  <pidfile>%s</pidfile>
  <script_timeout>2m</script_timeout>
  <max_scripts>3</max_scripts>
  <trace>no</trace>
  <hotplug>off</hotplug>
  <actions>
    <action>
      <script>/s/a.sh</script>
      <time> 10 </time>
    </action>
  </actions>
</tun_mon>
<!-- trailing comment -->
""" % (tmp_path / "t.pid")
    write(tmp_path / "tunmon.xml", text)
    res = check(interp, tmp_path / "tunmon.xml")
    assert res.returncode == 0, res.stderr
    lines, _ = replay(interp, tmp_path, text, Trace().same(3, QUIET))
    assert lines == ["t=10 action /s/a.sh tun0 10"]


@pytest.mark.parametrize("trace,hotplug", [("0", "yes"), ("1", "no"), ("on", "false"), ("off", "true")])
def test_booleans_accepted(interp, tmp_path, trace, hotplug):
    cfg = write(tmp_path / "t.xml", tm_config(["tun0"], 5, extra="<trace>%s</trace><hotplug>%s</hotplug>" % (trace, hotplug)))
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr


def test_default_interval_is_one_second(interp, tmp_path):
    text = tm_config(["tun0"], 5, actions=[(3, "/s/a.sh")]).replace("  <interval>5</interval>\n", "")
    assert "<interval>" not in text
    lines, _ = replay(interp, tmp_path, text, Trace().same(5, QUIET))
    assert lines == ["t=3 action /s/a.sh tun0 3"]


# ---------------------------------------------------------------------------------------------
# --check: the ladder, round trip, rounding notes, warnings

def test_check_round_trip(interp, tmp_path):
    """--check shows what was loaded: interval, devices in config order, pidfile, tick counts."""
    a = make_exec(tmp_path / "a.sh")
    r = make_exec(tmp_path / "r.sh")
    pid = str(tmp_path / "run" / "tunmon.pid")
    text = tm_config(["wg_x", "eth0.2", "br-lan"], 2, actions=[(5, a)], retries=[(15, r)],
                     extra="<pidfile>%s</pidfile>" % pid)
    cfg = write(tmp_path / "t.xml", text)
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.index("wg_x") < out.index("eth0.2") < out.index("br-lan"), out
    assert pid in out, out
    assert a in out and r in out, out
    aline = [l for l in out.splitlines() if a in l]
    rline = [l for l in out.splitlines() if r in l]
    assert len(aline) == 1 and len(rline) == 1, out
    assert re.search(r"\b3 ticks?\b", aline[0]) and re.search(r"\b6(\.0)? ?s\b|\b6 seconds\b", aline[0]), aline
    assert re.search(r"\b8 ticks?\b", rline[0]) and re.search(r"\b16(\.0)? ?s\b|\b16 seconds\b", rline[0]), rline


def test_check_notes_time_raised_to_one_tick(interp, tmp_path):
    """2 s at interval 5 rounds to 0 ticks: raised to 1, and --check says so (once, for that
    action only); 3 s rounds to 1 tick normally: no note."""
    a = make_exec(tmp_path / "a.sh")
    b = make_exec(tmp_path / "b.sh")
    cfg = write(tmp_path / "t.xml", tm_config(["tun0"], 5, actions=[(2, a), (3, b)]))
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr
    both = (res.stdout + res.stderr).replace(str(tmp_path), "DIR")
    notes = [l for l in both.splitlines() if re.search(r"raised|at least 1 tick|rounded up", l)]
    assert len(notes) == 1, both
    assert re.search(r"\b2 ?s\b", notes[0]) and ("action 1" in notes[0] or "a.sh" in notes[0]), notes


def test_check_warns_missing_and_non_executable_scripts(interp, tmp_path):
    good = make_exec(tmp_path / "good.sh")
    plain = make_exec(tmp_path / "plain.sh", mode=0o644)
    missing = str(tmp_path / "missing.sh")
    cfg = write(tmp_path / "t.xml", tm_config(["tun0"], 5, actions=[(5, good), (10, plain)],
                                              retries=[(60, missing + " arg")], restore=["true"]))
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr
    w = warnings(res)
    assert len([l for l in w if missing in l]) == 1, res.stderr
    assert len([l for l in w if plain in l]) == 1, res.stderr
    assert not [l for l in w if good in l], res.stderr
    assert not [l for l in w if "true" in l.split()], res.stderr     # on PATH
    assert len(w) == 2, res.stderr


def test_check_warns_missing_bare_command(interp, tmp_path):
    """A bare word is looked up on PATH; one that is nowhere on PATH deserves the same warning."""
    cfg = write(tmp_path / "t.xml", tm_config(["tun0"], 5, actions=[(5, "no-such-command-tunmon-x arg")]))
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr
    assert [l for l in warnings(res) if "no-such-command-tunmon-x" in l], res.stderr


def test_check_warns_relative_script_resolved_against_config_dir(interp, tmp_path):
    """Scripts relative to the config dir exist there, not in the cwd: no warning."""
    sub = tmp_path / "etc"
    make_exec(sub / "scripts" / "a.sh")
    cfg = write(sub / "t.xml", tm_config(["tun0"], 5, actions=[(5, "scripts/a.sh")]))
    res = run_tunmon(interp, "-c", cfg, "--check", cwd="/")
    assert "Traceback" not in res.stderr
    assert res.returncode == 0, res.stderr
    assert warnings(res) == [], res.stderr


def test_relative_script_paths_in_replay(interp, tmp_path):
    """`scripts/a.sh` -> CONFIGDIR/scripts/a.sh, `../b.sh` -> the parent's b.sh, a bare word
    stays a bare word (PATH lookup at spawn), an absolute path stays as written."""
    sub = tmp_path / "etc"
    os.makedirs(str(sub))
    text = tm_config(["tun0"], 5, actions=[(5, "scripts/a.sh x"), (5, "../b.sh"), (5, "logger -t tm"),
                                          (5, "/usr/bin/env")])
    cfg = write(sub / "t.xml", text)
    tr = write(tmp_path / "trace", Trace().same(2, QUIET).text())
    res = run_tunmon(interp, "-c", cfg, "--replay", tr, cwd="/")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 4, lines
    assert lines[0] == "t=5 action %s/scripts/a.sh x tun0 5" % sub
    w = lines[1].split(" ")
    assert w[:2] == ["t=5", "action"] and w[3:] == ["tun0", "5"], lines[1]
    assert w[2].startswith("/") and os.path.normpath(w[2]) == str(tmp_path / "b.sh"), lines[1]
    assert lines[2] == "t=5 action logger -t tm tun0 5"
    assert lines[3] == "t=5 action /usr/bin/env tun0 5"


def test_relative_config_path_resolves_scripts_against_its_dir(interp, tmp_path):
    """-c sub/t.xml given relative to the cwd: the script is CWD/sub/bin/x.sh whatever the
    daemon's later cwd is; the printed argv[0] names that file."""
    sub = tmp_path / "sub"
    os.makedirs(str(sub))
    write(sub / "t.xml", tm_config(["tun0"], 5, actions=[(5, "bin/x.sh")]))
    write(tmp_path / "trace", Trace().same(2, QUIET).text())
    res = run_tunmon(interp, "-c", "sub/t.xml", "--replay", "trace", cwd=str(tmp_path))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    w = lines[0].split(" ")
    assert os.path.normpath(os.path.join(str(tmp_path), w[2])) == str(sub / "bin" / "x.sh"), lines


# ---------------------------------------------------------------------------------------------
# legacy and unknown elements

def test_legacy_on_restore_warns_and_acts_as_restore_dev(interp, tmp_path):
    text = tm_config(["tun0"], 5, actions=[(5, "/s/a.sh")], extra="  <on_restore><script>/s/old.sh</script></on_restore>")
    cfg = write(tmp_path / "tunmon.xml", text)
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr
    assert [l for l in warnings(res) if "on_restore" in l], res.stderr
    lines, err = replay(interp, tmp_path, text, Trace().same(2, QUIET).snap({"tun0": (1100, 11)}))
    assert lines == ["t=5 action /s/a.sh tun0 5", "t=10 restore /s/old.sh tun0 5"]


def test_unknown_top_level_element(interp, tmp_path):
    text = "<tun_mon>\n  <net_devices><net_device>tun0</net_device></net_devices>\n  <intervall>5</intervall>\n</tun_mon>\n"
    cfg = write(tmp_path / "t.xml", text)
    msg = assert_config_error(check(interp, cfg), cfg, 3, None, "unknown element <intervall>", "tun_mon")
    col = int(msg.split(":")[3])
    assert col in (3, 4), msg                       # the `<` (3) or the name (4), 1-based


def test_unknown_nested_element_names_its_path(interp, tmp_path):
    text = ("<tun_mon>\n  <net_devices><net_device>tun0</net_device></net_devices>\n  <actions>\n"
            "    <action>\n      <tim>15</tim><script>/s/a.sh</script>\n    </action>\n  </actions>\n</tun_mon>\n")
    cfg = write(tmp_path / "t.xml", text)
    msg = assert_config_error(check(interp, cfg), cfg, 5, None, "unknown element <tim>", "tun_mon/actions/action")
    assert int(msg.split(":")[3]) in (7, 8), msg


def test_unknown_element_also_refused_by_replay(interp, tmp_path):
    text = tm_config(["tun0"], 5, extra="  <max_script>3</max_script>")
    cfg = write(tmp_path / "tunmon.xml", text)
    tr = write(tmp_path / "trace", Trace().same(2, QUIET).text())
    res = run_tunmon(interp, "-c", cfg, "--replay", tr)
    assert_config_error(res, cfg, text.splitlines().index("  <max_script>3</max_script>") + 1, None, "max_script")


def test_wrong_root_element(interp, tmp_path):
    cfg = write(tmp_path / "t.xml", "<tunmon>\n<net_devices><net_device>tun0</net_device></net_devices>\n</tunmon>\n")
    assert_config_error(check(interp, cfg), cfg, 1, None, "tunmon")


# ---------------------------------------------------------------------------------------------
# values

# "\u0661\u0662" is 12 in Arabic-Indic digits, which CPython's float() and int() take: a config
# must mean the same to both interpreters.
@pytest.mark.parametrize("value", ["0", "0.05", "abc", "-1", "", "nan", "inf", "2d", "86401",
                                   "\u0661\u0662", "\u00b2", "+5", "1_0"])
def test_bad_interval_refused(interp, tmp_path, value):
    text = tm_config(["tun0"], value)
    cfg = write(tmp_path / "t.xml", text)
    line = text.splitlines().index("  <interval>%s</interval>" % value) + 1
    assert_config_error(check(interp, cfg), cfg, line, None, "interval")


@pytest.mark.parametrize("value,shown", [("0.1", "0.1s"), ("1m", "60s"), ("1d", "86400s"),
                                         ("0.1504", "0.15s"), ("2.0006", "2.001s")])
def test_good_interval_accepted(interp, tmp_path, value, shown):
    """Taken in whole milliseconds, as the live loop keeps time."""
    cfg = write(tmp_path / "t.xml", tm_config(["tun0"], value))
    res = check(interp, cfg)
    assert res.returncode == 0, res.stderr
    assert "interval %s;" % shown in res.stdout, res.stdout


@pytest.mark.parametrize("value", ["abc", "-5", "4x"])
def test_bad_action_time_refused(interp, tmp_path, value):
    text = tm_config(["tun0"], 5, actions=[(value, "/s/a.sh")])
    cfg = write(tmp_path / "t.xml", text)
    line = [i for i, l in enumerate(text.splitlines()) if "<time>" in l][0] + 1
    assert_config_error(check(interp, cfg), cfg, line, None)


@pytest.mark.parametrize("elem,value", [("max_scripts", "0"), ("max_scripts", "abc"), ("max_scripts", "1.5"),
                                        ("max_scripts", "\u0664"), ("max_scripts", "\u00b2"),
                                        ("trace", "maybe"), ("hotplug", "2"), ("script_timeout", "abc"),
                                        ("script_timeout", "25h")])
def test_bad_scalar_values(interp, tmp_path, elem, value):
    text = tm_config(["tun0"], 5, extra="  <%s>%s</%s>" % (elem, value, elem))
    cfg = write(tmp_path / "t.xml", text)
    line = len(text.splitlines()) - 1
    assert_config_error(check(interp, cfg), cfg, line, None, elem)


@pytest.mark.parametrize("ref", ["#\u0661\u0662\u0663", "#+65", "#6_5", "# 65", "#x4_1", "#x"])
def test_character_references_take_ascii_digits_only(interp, tmp_path, ref):
    text = tm_config(["tun0"], 5, actions=[("15", "/bin/echo aREFb")]).replace("REF", "&%s;" % ref)
    cfg = write(tmp_path / "t.xml", text)
    line = [i for i, l in enumerate(text.splitlines()) if "<script>" in l][0] + 1
    assert_config_error(check(interp, cfg), cfg, line, None, "bad character reference")


def test_character_references_may_have_leading_zeros(interp, tmp_path):
    text = tm_config(["tun0"], 5, actions=[("15", "/bin/echo aREFbREFc")])
    text = text.replace("REF", "&#x000000041;", 1).replace("REF", "&#0000000066;")
    res = check(interp, write(tmp_path / "t.xml", text))
    assert res.returncode == 0, res.stderr
    assert "/bin/echo aAbBc" in res.stdout


def test_a_udp_port_takes_ascii_digits_only(interp, tmp_path):
    text = tm_config(["tun0"], 5, extra="  <stats><udp>127.0.0.1:\u0668\u0660</udp></stats>")
    cfg = write(tmp_path / "t.xml", text)
    assert_config_error(check(interp, cfg), cfg, len(text.splitlines()) - 1, None, "host:port")


def test_missing_net_devices(interp, tmp_path):
    cfg = write(tmp_path / "t.xml", "<tun_mon>\n  <interval>5</interval>\n</tun_mon>\n")
    assert_config_error(check(interp, cfg), cfg, None, None, "net_device")


def test_empty_net_devices(interp, tmp_path):
    cfg = write(tmp_path / "t.xml", "<tun_mon>\n  <net_devices>\n  </net_devices>\n</tun_mon>\n")
    assert_config_error(check(interp, cfg), cfg, None, None, "net_device")


def test_action_without_script(interp, tmp_path):
    text = "<tun_mon>\n<net_devices><net_device>tun0</net_device></net_devices>\n<actions>\n<action><time>5</time></action>\n</actions>\n</tun_mon>\n"
    cfg = write(tmp_path / "t.xml", text)
    assert_config_error(check(interp, cfg), cfg, 4, None, "script")


def test_action_without_time(interp, tmp_path):
    text = "<tun_mon>\n<net_devices><net_device>tun0</net_device></net_devices>\n<actions>\n<action><script>/s/a.sh</script></action>\n</actions>\n</tun_mon>\n"
    cfg = write(tmp_path / "t.xml", text)
    assert_config_error(check(interp, cfg), cfg, 4, None, "time")


def test_empty_script(interp, tmp_path):
    text = "<tun_mon>\n<net_devices><net_device>tun0</net_device></net_devices>\n<restore_dev>\n<script>  </script>\n</restore_dev>\n</tun_mon>\n"
    cfg = write(tmp_path / "t.xml", text)
    assert_config_error(check(interp, cfg), cfg, 4, None)


def test_unbalanced_quote_in_script(interp, tmp_path):
    text = "<tun_mon>\n<net_devices><net_device>tun0</net_device></net_devices>\n<restore_dev>\n<script>/s/a.sh 'oops</script>\n</restore_dev>\n</tun_mon>\n"
    cfg = write(tmp_path / "t.xml", text)
    assert_config_error(check(interp, cfg), cfg, 4, None)


# ---------------------------------------------------------------------------------------------
# malformed XML

GOOD_HEAD = "<tun_mon>\n  <net_devices><net_device>tun0</net_device></net_devices>\n"


@pytest.mark.parametrize("name,text,line,word", [
    ("unclosed", GOOD_HEAD + "  <interval>5</interval>\n", None, "tun_mon"),
    ("unclosed_inner", GOOD_HEAD + "  <actions>\n</tun_mon>\n", None, "actions"),
    ("mismatched", GOOD_HEAD + "  <interval>5</intervl>\n</tun_mon>\n", 3, None),
    ("bad_entity", GOOD_HEAD + "  <pidfile>/tmp/a&nbsp;b</pidfile>\n</tun_mon>\n", 3, None),
    ("bare_ampersand", GOOD_HEAD + "  <pidfile>/tmp/a & b</pidfile>\n</tun_mon>\n", 3, None),
    ("lt_in_text", GOOD_HEAD + "  <pidfile>/tmp/a < b</pidfile>\n</tun_mon>\n", 3, None),
    ("unterminated_comment", GOOD_HEAD + "  <!-- oops\n</tun_mon>\n", 3, None),
    ("unterminated_cdata", GOOD_HEAD + "  <pidfile><![CDATA[x</pidfile>\n</tun_mon>\n", 3, None),
    ("bad_charref", GOOD_HEAD + "  <pidfile>/tmp/&#xZZ;</pidfile>\n</tun_mon>\n", 3, None),
    ("two_roots", GOOD_HEAD + "</tun_mon>\n<tun_mon/>\n", 4, None),
    ("text_after_root", GOOD_HEAD + "</tun_mon>\ngarbage\n", 4, None),
    ("doctype", '<?xml version="1.0"?>\n<!DOCTYPE tun_mon>\n' + GOOD_HEAD + "</tun_mon>\n", 2, "DOCTYPE"),
    ("entity_decl", '<?xml version="1.0"?>\n<!DOCTYPE tun_mon [\n<!ENTITY x "tun0">\n]>\n' + GOOD_HEAD + "</tun_mon>\n", 2, None),
    ("empty_file", "", None, None),
    ("bad_attr", '<tun_mon a=b>\n  <net_devices><net_device>tun0</net_device></net_devices>\n</tun_mon>\n', 1, None),
])
def test_malformed_xml(interp, tmp_path, name, text, line, word):
    cfg = write(tmp_path / "t.xml", text)
    words = (word,) if word else ()
    assert_config_error(check(interp, cfg), cfg, line, None, *words)


def test_billion_laughs_refused_quickly(interp, tmp_path):
    lol = ['<!ENTITY lol "lol">'] + ['<!ENTITY lol%d "%s">' % (i, ("&lol%d;" % (i - 1) if i > 1 else "&lol;") * 10) for i in range(1, 10)]
    text = '<?xml version="1.0"?>\n<!DOCTYPE tun_mon [\n' + "\n".join(lol) + "\n]>\n" + \
        "<tun_mon><net_devices><net_device>&lol9;</net_device></net_devices></tun_mon>\n"
    cfg = write(tmp_path / "t.xml", text)
    res = run_tunmon(interp, "-c", cfg, "--check", timeout=10)
    assert "Traceback" not in res.stderr
    assert_config_error(res, cfg, 2, None)


def test_file_over_one_mib_refused(interp, tmp_path):
    pad = "<!-- " + "x" * (1024 * 1024) + " -->\n"
    cfg = write(tmp_path / "t.xml", pad + tm_config(["tun0"], 5))
    assert os.path.getsize(cfg) > 1024 * 1024
    res = check(interp, cfg)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and cfg in lines[0], res.stderr


def test_file_just_under_one_mib_accepted(interp, tmp_path):
    """Under the limit the file loads on CPython; MicroPython's small heap may not hold it, but
    then it must still fail cleanly (one error line, exit 2, no traceback)."""
    body = tm_config(["tun0"], 5)
    pad = "<!-- " + "x" * (1024 * 1024 - len(body) - 100) + " -->\n"
    cfg = write(tmp_path / "t.xml", pad + body)
    assert os.path.getsize(cfg) < 1024 * 1024
    res = check(interp, cfg)
    if "micropython" in os.path.basename(interp[0]) and res.returncode != 0:
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    else:
        assert res.returncode == 0, res.stderr


def test_non_ascii_utf8_text_accepted(interp, tmp_path):
    text = tm_config(["tun0"], 5, actions=[(5, "/s/a.sh caf\u00e9")]).replace("<tun_mon>", "<tun_mon><!-- r\u00e9seau -->")
    with open(str(tmp_path / "tunmon.xml"), "w", encoding="utf-8") as f:
        f.write(text)
    lines, _ = replay(interp, tmp_path, text, Trace().same(2, QUIET))
    assert lines == ["t=5 action /s/a.sh caf\u00e9 tun0 5"]


# ---------------------------------------------------------------------------------------------
# command line

def test_missing_config_file(interp, tmp_path):
    res = run_tunmon(interp, "-c", str(tmp_path / "none.xml"), "--check")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "none.xml" in lines[0], res.stderr


def test_config_is_a_directory(interp, tmp_path):
    res = run_tunmon(interp, "-c", str(tmp_path), "--check")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: "), res.stderr


@pytest.mark.parametrize("bad", [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"],
                         ids=["overlong-slash-2", "overlong-slash-3", "surrogate", "past-U+10FFFF"])
def test_invalid_utf8_is_refused_on_both_interpreters(interp, tmp_path, bad):
    # MicroPython's own decoder takes these; CPython's refuses them, and so does tunmon.
    xml = tmp_path / "tunmon.xml"
    xml.write_bytes(b"<tun_mon>\n<net_devices><net_device>a" + bad
                    + b"</net_device></net_devices>\n</tun_mon>\n")
    res = run_tunmon(interp, "-c", str(xml), "--check")
    assert (res.returncode, res.stderr) == (2, "error: %s:2: not valid UTF-8\n" % xml)
    uci = tmp_path / "tunmon.uci"
    uci.write_bytes(b"config device\n\toption name 'a" + bad + b"'\n")
    res = run_tunmon(interp, "--uci-to-xml", str(uci))
    assert (res.returncode, res.stderr) == (2, "error: %s: not UTF-8 text\n" % uci)


def test_config_is_a_fifo(interp, tmp_path):
    # Opening a FIFO waits for a writer: at a reload that would stop the whole loop.
    fifo = tmp_path / "tunmon.xml"
    os.mkfifo(str(fifo))
    res = run_tunmon(interp, "-c", str(fifo), "--check", timeout=20)
    assert (res.returncode, res.stderr) == (2, "error: %s: not a regular file\n" % fifo)


@pytest.mark.parametrize("args", [["--bogus"], ["--trace", "2", "--check"], ["-c"]])
def test_usage_errors_exit_2(interp, tmp_path, args):
    res = run_tunmon(interp, *args)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stderr.strip(), "a usage error must say something"


def test_version_and_help(interp):
    res = run_tunmon(interp, "--version")
    assert res.returncode == 0 and res.stdout.strip() and "Traceback" not in res.stderr, res
    res = run_tunmon(interp, "--help")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res
    for opt in ("-c", "--proc", "--trace", "--check", "--replay"):
        assert opt in res.stdout, opt


def test_default_config_path(interp, tmp_path):
    """Without -c the config is /etc/tunmon.xml (absent here -> error naming it, exit 2)."""
    if os.path.exists("/etc/tunmon.xml"):
        pytest.skip("/etc/tunmon.xml exists on this machine")
    res = run_tunmon(interp, "--check")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "/etc/tunmon.xml" in res.stderr
