"""Model-based tests (issue 8): tunmon's replay must print exactly what tests/model.py says.

Hypothesis generates random configs (interval, actions with equal and out-of-order times,
retries, restore and post_restore_any scripts, hotplug, several devices with awkward names) and
random /proc/net/dev traces (traffic, silence, counter resets and wraps, absences, unreadable
ticks, skipped ticks, comments, shuffled lines, decoy devices whose names contain the watched
ones), writes them as files and runs `tunmon.py -c CFG --replay TRACE`.  CPython runs tunmon
in-process (fast); a smaller set runs the real command under the test MicroPython.

Example counts come from a settings profile: `make test` uses a few thousand; `make soak` sets
TUNMON_SOAK=1 for far more (TUNMON_MODEL_EXAMPLES overrides both).
"""
import contextlib
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import ROOT, TUNMON, example_count, micropython_path  # noqa: E402
import model  # noqa: E402
from model import Model, ModelConfig, Snapshot, Unreadable, check_invariants  # noqa: E402

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import tunmon  # noqa: E402
import tunmon_xml  # noqa: E402

def examples(ci, soak):
    return example_count(ci, soak, "TUNMON_MODEL_EXAMPLES")


COMMON = dict(deadline=None, derandomize=False, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])

HEADER = ("Inter-|   Receive                                                |  Transmit\n"
          " face |bytes    packets errs drop fifo frame compressed multicast|"
          "bytes    packets errs drop fifo colls carrier compressed\n")
U64 = 2 ** 64

# Watched names: the usual OpenWrt ones, names that are substrings of decoys, and hostile ones
# (shell and XML metacharacters are legal in Linux interface names).  None starts with '#' or
# `Inter-`, which the replay format reserves at the start of a line.
DEVICE_POOL = ["tun0", "wg_x", "eth0.2", "6in4-wan6", "br-lan", "eth0", "a", "wan",
               "x;y", "$(id)", "q'uote", 'd"q', "a&b<c>", "wg-\u00fc", "l2tp-vpn0123456"]
# Unwatched lines present in every snapshot with moving counters: a reader that matches a
# substring or the wrong line sees traffic where there is none.
DECOYS = ["lo", "veth0", "xtun0", "tun00", "br-lan.5", "eth0.20", "ba", "wan6", "ywg_x", "6in4-wan"]

INTERVALS = ["0.1", "0.2", "0.25", "0.3", "0.5", "0.75", "1", "1.5", "2", "2.5", "3", "5", "7",
             "10", "0.125", "2s", "0.5m", "1m"]

WORK = tempfile.mkdtemp(prefix="tunmon-model-")
CFG = os.path.join(WORK, "tunmon.xml")
TRACE = os.path.join(WORK, "trace")


def teardown_module(module):
    shutil.rmtree(WORK, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Generators

def decimal_text(value):
    """An exact Fraction whose denominator is 2^a 5^b -> its exact decimal string."""
    value = Fraction(value)
    whole = value.numerator // value.denominator
    rest = value - whole
    digits = ""
    while rest:
        rest *= 10
        digit = rest.numerator // rest.denominator
        digits += str(digit)
        rest -= digit
    return str(whole) + ("." + digits if digits else "")


def time_text(draw, seconds):
    """Write `seconds` in one of the accepted spellings."""
    forms = [decimal_text(seconds)]
    if seconds.denominator == 1:
        forms.append("%ds" % seconds)
    if (seconds / 60).denominator in (1, 2, 4, 5, 10):
        forms.append(decimal_text(seconds / 60) + "m")
    if seconds and (seconds / 3600).denominator in (1, 2, 4, 5, 10, 100):
        forms.append(decimal_text(seconds / 3600) + "h")
    if seconds and (seconds / 86400).denominator in (1, 2, 4, 5, 10, 100, 1000):
        forms.append(decimal_text(seconds / 86400) + "d")
    text = forms[draw(FORM) % len(forms)]
    return draw(PAD_BEFORE) + text + draw(PAD_AFTER)


FORM = st.integers(0, 4)
PAD_BEFORE = st.sampled_from(["", " ", "\n  "])
PAD_AFTER = st.sampled_from(["", " "])


# Script arguments: plain words, shell and XML metacharacters, words with a space, a tab or one
# kind of quote (quoted in the XML so tunmon's splitter gives them back), an empty word.
WORDS = st.sampled_from([
    "-c", "1", "up", "x=1", "a.b", "$(id)", "`id`", "a;b", "a|b", "a&b", "<x>", "*", "~", "%s",
    "$HOME", "--", "\\n", "two words", "tab\there", "it's", 'say "hi"', "", "\u00fcml",
    "a:b", "#x", "!x", "{a,b}", "[ab]", "10.0.0.1", "-W2"])
SCRIPT_KIND = st.sampled_from(["abs", "abs", "rel", "sub", "bare"])
SEPARATORS = st.sampled_from([" ", " ", "  ", "\t", "\n      "])


def render_word(w):
    """Quote a word so tunmon's splitter gives it back: spaces and one kind of quote."""
    if "'" in w:
        return '"' + w + '"'
    if '"' in w or " " in w or "\t" in w or not w:
        return "'" + w + "'"
    return w


@st.composite
def script(draw, name):
    """(script text for the XML, argv the model expects relative to the config's directory)."""
    kind = draw(SCRIPT_KIND)
    first = {"abs": "/usr/share/tunmon/" + name, "rel": "./" + name,
             "sub": "scripts/" + name, "bare": name}[kind]
    args = draw(st.lists(WORDS, max_size=3))
    resolved = {"abs": first, "bare": first, "rel": WORK + "/" + name,
                "sub": WORK + "/scripts/" + name}[kind]
    seps = [draw(SEPARATORS) for _ in args]
    text = first + "".join(sep + render_word(a) for sep, a in zip(seps, args))
    return text, [resolved] + args


def xml_text(text, cdata=False):
    if cdata and "]]>" not in text:
        return "<![CDATA[" + text + "]]>"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


INTERVAL_TEXT = st.sampled_from(INTERVALS)
DEVICE_NAME = st.sampled_from(DEVICE_POOL)
CDATA = st.integers(0, 9).map(lambda n: n == 0)


@st.composite
def configs(draw, max_devices=4, max_actions=4, max_retries=3, simple_scripts=False,
            hotplug=None):
    """(xml, ModelConfig, script_kind map)."""
    interval_text = draw(INTERVAL_TEXT)
    interval = model.seconds_of(interval_text)
    devices = draw(st.lists(DEVICE_NAME, min_size=1, max_size=max_devices, unique=True))
    script_kind = {}
    cdata = CDATA

    def script_for(name, event, step):
        """A script's XML text and argv, noted in script_kind as firing for (event, step)."""
        if simple_scripts:
            text = argv0 = "/s/%s%d" % (name, step)
            argv = [argv0]
        else:
            text, argv = draw(script("%s%d.sh" % (name, step)))
        script_kind[argv[0]] = (event, step)
        return xml_text(text, draw(cdata)), argv

    def timed(count, prefix, event, top_ticks):
        out = []
        for i in range(count):
            quarters = draw(st.integers(0, 4 * top_ticks))   # times land on ties too
            seconds = interval * quarters / 4
            text, argv = script_for(prefix, event, i + 1)
            out.append((seconds, time_text(draw, seconds), text, argv))
        return out

    actions = timed(draw(st.integers(0, max_actions)), "a", "action", 12)
    retries = timed(draw(st.integers(0, max_retries)), "r", "retry", 8)
    plain = {}
    for key, event in (("restore", "restore"), ("post", "post_restore_any")):
        plain[key] = [script_for(key, event, i + 1) for i in range(draw(st.integers(0, 2)))]
    hot = draw(st.booleans()) if hotplug is None else hotplug
    if draw(st.booleans()) and hot is False:
        hot_elem = "<hotplug>%s</hotplug>" % draw(st.sampled_from(["0", "no", "off", "false"]))
    elif hot:
        hot_elem = "<hotplug>%s</hotplug>" % draw(st.sampled_from(["1", "yes", "on", "true"]))
    else:
        hot_elem = ""

    parts = []
    parts.append("<net_devices>" + "".join(
        "\n    <net_device>%s</net_device>" % xml_text(name, False) for name in devices)
        + "\n  </net_devices>")
    if interval_text != "1" or draw(st.booleans()):
        parts.append("<interval>%s</interval>" % interval_text)
    if hot_elem:
        parts.append(hot_elem)
    if actions:
        parts.append("<actions>" + "".join(
            "\n    <action><time>%s</time><script>%s</script></action>" % (t, s)
            for _, t, s, _ in actions) + "\n  </actions>")
    if retries:
        entry = draw(st.sampled_from(["retry", "action"]))
        tag = draw(st.sampled_from(["interval", "time"]))
        parts.append("<retry_actions>" + "".join(
            "\n    <%s><script>%s</script><%s>%s</%s></%s>" % (entry, s, tag, t, tag,
                                                            entry)
            for _, t, s, _ in retries) + "\n  </retry_actions>")
    if plain["restore"]:
        tag = "restore_dev" if draw(st.integers(0, 5)) else "on_restore"
        parts.append("<%s>%s</%s>" % (tag, "".join(
            "<script>%s</script>" % s for s, _ in plain["restore"]), tag))
    if plain["post"]:
        parts.append("<post_restore_any>%s</post_restore_any>" % "".join(
            "<!-- post --><script>%s</script>" % s for s, _ in plain["post"]))
    order = draw(st.permutations(range(len(parts))))
    body = "\n  ".join(parts[i] for i in order)
    xml = '<?xml version="1.0"?>\n<!-- generated -->\n<tun_mon>\n  %s\n</tun_mon>\n' % body
    config = ModelConfig(devices, interval,
                         actions=[(sec, argv) for sec, _, _, argv in actions],
                         retries=[(sec, argv) for sec, _, _, argv in retries],
                         restores=[argv for _, argv in plain["restore"]],
                         posts=[argv for _, argv in plain["post"]],
                         hotplug=hot)
    return xml, config, script_kind


# Per device and snapshot one op, drawn as an index so that shrinking goes towards "same"
# (silence); the magnitudes come from a seeded Random (cheap, and still reproducible).
OPS = ["same"] * 6 + ["traffic"] * 4 + ["bytes", "packets", "reset", "zero", "absent", "absent",
                                          "big", "mixed"]
OP_INDEX = st.integers(0, len(OPS) - 1)
SEED = st.integers(0, 2 ** 32)
SMALL = st.integers(0, 12)
SKIP_ROLL = st.integers(0, 7)
COMMENTS = st.sampled_from(["comment", "router busy", "", "x y z"])


def next_counters(rng, op, cur):
    if op == "absent":
        return None
    if cur is None:
        return rng.choice([(0, 0), (rng.randint(0, 9999), 0),
                           (rng.randint(1, 10 ** 6), rng.randint(1, 999))])
    if op == "same":
        return cur
    if op == "traffic":
        return (cur[0] + rng.randint(1, 10 ** 6), cur[1] + rng.randint(1, 999))
    if op == "bytes":
        return (cur[0] + rng.randint(1, 5000), cur[1])
    if op == "packets":
        return (cur[0], cur[1] + rng.randint(1, 3))
    if op == "reset":
        return (rng.randint(0, 5000), rng.randint(0, 40))
    if op == "zero":
        return (0, 0)
    if op == "big":
        return (U64 - 1 - rng.randint(0, 1000), U64 - 1 - rng.randint(0, 100))
    if rng.random() < 0.5:      # mixed: one counter down, the other up
        return (max(0, cur[0] - rng.randint(1, 100)), cur[1] + 1)
    return (cur[0] + 100, max(0, cur[1] - rng.randint(1, 5)))


@st.composite
def traces(draw, devices, min_steps=1, max_steps=40, max_skip=12):
    """(entries for the model, trace file text)."""
    rng = random.Random(draw(SEED))
    state = {}
    seen = {}        # last counters while present, per device
    for name in devices:
        start = rng.choice(["absent", "zero", "small", "small", "small", "big"])
        state[name] = {"absent": None, "zero": (0, 0),
                       "small": (rng.randint(0, 10 ** 6), rng.randint(0, 10 ** 4)),
                       "big": (U64 - rng.randint(1, 10 ** 6), U64 - rng.randint(1, 10 ** 4))}[start]
        if state[name] is not None:
            state[name] = (max(state[name]), state[name][1])
            seen[name] = state[name]
    decoys = {name: (rng.randint(0, 10 ** 9), rng.randint(0, 10 ** 6))
              for name in DECOYS if name not in devices}
    entries = []
    text = []
    tick = -1
    steps = draw(st.integers(min_steps, max_steps))
    for index in range(steps):
        if draw(SMALL) == 0:
            text.append("# %s\n" % draw(COMMENTS))
        jump = 1
        roll = draw(SKIP_ROLL)
        if index and roll == 0:
            jump = draw(st.integers(2, max_skip))
        elif index == 0 and roll == 0:
            jump = draw(st.integers(1, 5))
        tick += jump
        if jump != 1 or (index == 0 and tick) or rng.random() < 0.03:
            text.append("#tick %d\n" % tick)
        if index and draw(SMALL) == 0:
            entries.append(Unreadable(tick))
            text.append("#unreadable\n")
            continue
        for name in devices:
            new = next_counters(rng, OPS[draw(OP_INDEX)], state[name])
            if state[name] is None and new is not None and name in seen and rng.random() < 0.3:
                new = seen[name]      # back with the very counters it left with
            if new is not None:
                # Real counters: below 2^64, and every packet has bytes (bytes >= packets).
                new = (min(max(new), U64 - 1), min(new[1], U64 - 1))
            state[name] = new
            if new is not None:
                seen[name] = new
        counters = {name: value for name, value in state.items() if value is not None}
        entries.append(Snapshot(tick, counters))
        for name in decoys:
            b, p = decoys[name]
            decoys[name] = (b + rng.randint(1, 5000), p + rng.randint(1, 9))
        lines = list(counters.items()) + list(decoys.items())
        rng.shuffle(lines)
        text.append(HEADER + "".join(proc_line(rng, name, value) for name, value in lines))
    return entries, "".join(text)


REST = " ".join(str(n * 37 % 1000) for n in range(14))


def proc_line(rng, name, value):
    rx_bytes, rx_packets = value
    style = rng.randint(0, 5)
    if style == 0:       # old kernels: the byte count glued to the colon
        return "%6s:%d %d %s\n" % (name, rx_bytes, rx_packets, REST)
    if style == 1:       # wide padding
        return "%16s: %20d %20d %s\n" % (name, rx_bytes, rx_packets, REST)
    return "%6s: %7d %7d 0 0 0 0 0 0 %s\n" % (name, rx_bytes, rx_packets, REST[:40])


# ---------------------------------------------------------------------------------------------
# Running tunmon

def write(xml, trace_text):
    with open(CFG, "w", encoding="utf-8") as f:
        f.write(xml)
    with open(TRACE, "w", encoding="utf-8") as f:
        f.write(trace_text)


def replay_in_process():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = tunmon.main(["-c", CFG, "--replay", TRACE])
    assert rc == 0, err.getvalue()
    return out.getvalue().splitlines(), err.getvalue()


def compare(expected, got, xml, trace_text):
    if expected != got:
        note("config:\n" + xml)
        note("trace:\n" + trace_text)
        for i in range(max(len(expected), len(got))):
            e = expected[i] if i < len(expected) else "<none>"
            g = got[i] if i < len(got) else "<none>"
            if e != g:
                note("first difference at line %d:\n  model:  %s\n  tunmon: %s" % (i + 1, e, g))
                break
    assert got == expected


@st.composite
def cases(draw, **config_kw):
    xml, config, kinds = draw(configs(**config_kw))
    entries, trace_text = draw(traces(config.devices))
    return xml, config, kinds, entries, trace_text


@settings(max_examples=examples(1500, 100000), **COMMON)
@given(cases())
def test_replay_matches_model(case):
    xml, config, kinds, entries, trace_text = case
    write(xml, trace_text)
    expected = Model(config).lines(entries)
    got, _ = replay_in_process()
    compare(expected, got, xml, trace_text)


@settings(max_examples=examples(60, 5000), phases=(Phase.explicit, Phase.reuse, Phase.generate),
          **COMMON)
@given(st.data())
def test_long_traces_keep_the_invariants(data):
    """Long traces, one-word scripts: tunmon's output keeps every invariant of issue 8 (checked
    from the output itself), and still equals the model."""
    xml, config, kinds = data.draw(configs(simple_scripts=True, hotplug=False))
    entries, trace_text = data.draw(traces(config.devices, min_steps=150, max_steps=400,
                                           max_skip=6))
    write(xml, trace_text)
    got, _ = replay_in_process()
    check_invariants(config, entries, got, kinds)
    compare(Model(config).lines(entries), got, xml, trace_text)


@pytest.mark.skipif(micropython_path() is None and not os.environ.get("CI"),
                    reason="micropython is not installed (make test installs it)")
@settings(max_examples=examples(25, 1000), **COMMON)
@given(cases())
def test_replay_matches_model_under_micropython(case):
    xml, config, kinds, entries, trace_text = case
    path = micropython_path()
    assert path, "micropython is not installed (make test installs it into .venv)"
    write(xml, trace_text)
    run = subprocess.run([path, TUNMON, "-c", CFG, "--replay", TRACE], capture_output=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")
    compare(Model(config).lines(entries), run.stdout.decode("utf-8").splitlines(), xml,
            trace_text)


# Rounding: the loader's tick counts against the model's exact arithmetic, over wide ranges.

@settings(max_examples=examples(800, 50000), **COMMON)
@given(st.integers(100, 60000), st.sampled_from([1, 10, 100, 1000]), st.integers(0, 86400000),
       st.sampled_from([1, 10, 100, 1000]))
def test_tick_counts_round_half_up_exactly(interval_millis, interval_round, time_millis,
                                           time_round):
    """Intervals 0.1 s .. 60 s and times up to a day, with 0 to 3 decimals each."""
    interval = Fraction(max(100, interval_millis // interval_round * interval_round), 1000)
    seconds = Fraction(time_millis // time_round * time_round, 1000)
    xml = ("<tun_mon><net_devices><net_device>tun0</net_device></net_devices>"
           "<interval>%s</interval><actions><action><time>%s</time><script>/x</script></action>"
           "</actions></tun_mon>" % (decimal_text(interval), decimal_text(seconds)))
    config = tunmon_xml.parse_config(xml, "round.xml")
    assert config.actions[0].ticks == model.ticks_of(seconds, interval), (interval, seconds)


def test_comment_inside_a_snapshot_is_only_a_comment():
    """`other # lines are comments`: a comment between a snapshot's header and its device
    lines must not cut the snapshot short (the lines after it still belong to it)."""
    xml = ("<tun_mon><net_devices><net_device>tun0</net_device></net_devices><interval>5"
           "</interval><actions><action><time>10</time><script>/bin/a</script></action>"
           "</actions></tun_mon>")
    snapshots = [HEADER + "  tun0: %d %d 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n" % (100 + k, 1 + k)
                 for k in range(4)]
    plain = "".join(snapshots)
    commented = "".join(s.replace(" face |", "# recorded on the router\n face |", 1)
                        .replace("  tun0:", "# tun0 is the tunnel\n  tun0:", 1)
                        for s in snapshots)
    write(xml, plain)
    assert replay_in_process()[0] == []          # traffic on every tick: nothing fires
    write(xml, commented)
    assert replay_in_process()[0] == [], "a comment line ended the snapshot early"


# ---------------------------------------------------------------------------------------------
# The model itself, on the issue's own examples (so the oracle is checked by hand too)

def test_model_reproduces_the_issue_example():
    config = ModelConfig(["tun0"], 5, actions=[(15, ["/etc/tunmon/ping.sh"])],
                         retries=[(120, ["/etc/tunmon/rebuild.sh"])],
                         restores=[["/etc/tunmon/restored.sh"]], posts=[["/etc/tunmon/post.sh"]])
    quiet = {"tun0": (1000, 10)}
    entries = [Snapshot(k, quiet) for k in range(28)] + [Snapshot(28, {"tun0": (1100, 11)})]
    assert Model(config).lines(entries) == [
        "t=15 action /etc/tunmon/ping.sh tun0 15",
        "t=135 retry /etc/tunmon/rebuild.sh tun0 135",
        "t=140 restore /etc/tunmon/restored.sh tun0 135",
        "t=140 post_restore_any /etc/tunmon/post.sh tun0",
    ]


def test_model_rounding_table():
    # 5 s at interval 2 -> 3 ticks; 15 s at 2 -> 8; ties round up; never below 1.
    assert model.ticks_of(5, 2) == 3
    assert model.ticks_of(15, 2) == 8
    assert model.ticks_of(Fraction("0.15"), Fraction("0.1")) == 2
    assert model.ticks_of(0, 5) == 1
    assert model.ticks_of(Fraction("2.4"), 5) == 1
    assert model.ticks_of(Fraction("7.4"), 5) == 1
    assert model.ticks_of(Fraction("7.5"), 5) == 2


def test_model_skipped_unreadable_and_reset():
    config = ModelConfig(["d"], 1, actions=[(2, ["/a1"]), (2, ["/a2"]), (1, ["/a0"])],
                         retries=[(3, ["/r"])], restores=[["/rs"]])
    q = {"d": (10, 1)}
    entries = [Snapshot(0, q), Unreadable(1), Snapshot(2, q),    # age 1: a0
               Snapshot(9, q),                                 # age 8: a1, a2, retry (L+3=5)
               Snapshot(10, {"d": (0, 0)}),                    # reset, 0 packets: silent, age 9
               Snapshot(11, {"d": (5, 1)})]                    # reset with packets: restore
    assert Model(config).lines(entries) == [
        "t=2 action /a0 d 1",
        "t=9 action /a1 d 8", "t=9 action /a2 d 8", "t=9 retry /r d 8",
        "t=11 restore /rs d 9",
    ]


def test_model_formats_seconds():
    assert model.fmt(Fraction("0.3") * 7) == "2.1"
    assert model.fmt(Fraction(15)) == "15"
    assert model.fmt(Fraction("0.125") * 3) == "0.375"
