"""The UCI front end (uci/tunmon_uci.py), driven through `tunmon.py --uci-to-xml`.

Every test that runs the command line runs under CPython and MicroPython (the `interp`
fixture). The syntax cases follow UCI's own parser (openwrt/uci, file.c): quoting, comments,
one-letter keywords, `;`, lists and deletions. Golden files: tests/golden/uci_NAME.uci is
translated to exactly tests/golden/uci_NAME.xml. The `uci` commands of README.md's
examples are run through a small stand-in for `uci` and the results checked.
"""
import glob
import os
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT, interpreter_command, run_tunmon

sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "uci"))
import tunmon_uci  # noqa: E402
import tunmon_xml  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "golden")
FULL_UCI = os.path.join(GOLDEN, "uci_full.uci")
FEATURES_UCI = os.path.join(GOLDEN, "uci_features.uci")
README = os.path.join(ROOT, "README.md")
SHIPPED = os.path.join(ROOT, "uci", "tunmon.config")


def write(tmp_path, text, name="tunmon.uci"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def translate(interp, tmp_path, text):
    """The XML for UCI `text`; the translation must succeed silently."""
    result = run_tunmon(interp, "--uci-to-xml", write(tmp_path, text))
    assert (result.returncode, result.stderr) == (0, "")
    return result.stdout


def translation_error(interp, tmp_path, text):
    """(line, message) of the one-line error that translating UCI `text` must give."""
    path = write(tmp_path, text)
    result = run_tunmon(interp, "--uci-to-xml", path)
    assert (result.returncode, result.stdout) == (2, "")
    prefix = "error: %s:" % path
    assert result.stderr.startswith(prefix) and result.stderr.count("\n") == 1, result.stderr
    line, message = result.stderr[len(prefix):-1].split(": ", 1)
    return int(line), message


def texts(xml, tag):
    """The decoded text of every <tag> element in `xml`, in document order."""
    found = []

    def visit(element):
        if element.tag == tag:
            found.append(element.text)
        for child in element.children:
            visit(child)

    visit(tunmon_xml.parse_xml(xml))
    return found


def checked_ladder(interp, xml):
    """`tunmon.py -c xml --check`: its output after the `FILE: valid` line (settings, devices,
    the ladder)."""
    result = run_tunmon(interp, "-c", xml, "--check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "%s: valid" % xml
    return lines[1:]


def shipped_config(uncommented=False, enabled=False):
    """The shipped /etc/config/tunmon, optionally with its example uncommented and enabled."""
    lines = read(SHIPPED).split("\n")
    if uncommented:
        # What a user does by hand: drop the '#' before the example's config/option lines.
        lines = [line[1:] if line.startswith("#config") or line.startswith("#\t") else line
                 for line in lines]
    text = "\n".join(lines)
    if enabled:
        text = text.replace("option enabled '0'", "option enabled '1'")
    return text


# ---- syntax ---------------------------------------------------------------------------------

# (case, value as written in UCI, value UCI reads); each becomes `option pidfile <written>`.
QUOTING = [
    ("unquoted word", "/var/run/plain", "/var/run/plain"),
    ("single quotes", "'/var/run/a b'", "/var/run/a b"),
    ("double quotes", '"/var/run/a b"', "/var/run/a b"),
    ("it'\\''s", "'it'\\''s'", "it's"),
    ("single quotes keep backslashes", "'a\\nb\\\\c'", "a\\nb\\\\c"),
    ("double quotes take escapes", '"say \\"hi\\" \\\\ \\$x"', 'say "hi" \\ $x'),
    ("escapes are not C escapes", '"tab\\there"', "tabthere"),
    ("unquoted word takes escapes", "a\\ b\\'c", "a b'c"),
    ("adjacent pieces join", "a'b c'\"d e\"f", "ab cd ef"),
    ("quoted and escaped # are text", "'#one'\"#two\"\\#three", "#one#two#three"),
    ("unquoted # starts a comment", "value # comment 'with quotes", "value"),
    ("# inside a word starts a comment", "val#ue", "val"),
    ("quoted ; is text", "'a;b'", "a;b"),
    ("escaped ; is text", "a\\;b", "a;b"),
    ("double quote inside single quotes", "'say \"hi\"'", 'say "hi"'),
    ("single quote inside double quotes", '"it\'s"', "it's"),
    ("single quotes span lines", "'first\nsecond'", "first\nsecond"),
    ("double quotes span lines", '"first\nsecond"', "first\nsecond"),
    ("backslash-newline joins lines", "first\\\nsecond", "firstsecond"),
    ("backslash-newline in double quotes", '"first\\\nsecond"', "firstsecond"),
    ("UTF-8", "'/var/run/café'", "/var/run/café"),
]


@pytest.mark.parametrize("written, value", [case[1:] for case in QUOTING],
                         ids=[case[0] for case in QUOTING])
def test_quoting(interp, tmp_path, written, value):
    # The leading / is a piece of its own, joined to the next: a pidfile is an absolute path.
    xml = translate(interp, tmp_path,
                    "config tunmon 'main'\n\toption pidfile /%s\n\toption trace 1\n" % written)
    assert texts(xml, "pidfile") == ["/" + value]
    assert texts(xml, "trace") == ["1"]  # the command after the value is still read


def test_one_letter_keywords_semicolons_and_comments(interp, tmp_path):
    xml = translate(interp, tmp_path,
                    "# a comment\n"
                    "p tunmon\n"
                    "   # an indented comment\n"
                    "c tunmon main; o interval 2; o trace 1  # a trailing comment\n"
                    "c device;l name tun0;l name tun1\n"
                    "\n"
                    "config action\n"
                    "  option time 4 ; option script /bin/true\n")
    assert texts(xml, "interval") == ["2"]
    assert texts(xml, "trace") == ["1"]
    assert texts(xml, "net_device") == ["tun0", "tun1"]
    assert texts(xml, "time") == ["4"]
    assert texts(xml, "script") == ["/bin/true"]


def test_crlf_line_ends_read_like_lf(interp, tmp_path):
    text = read(FULL_UCI)
    assert translate(interp, tmp_path, text.replace("\n", "\r\n")) == translate(
        interp, tmp_path, text)


def test_named_and_anonymous_sections_keep_file_order(interp, tmp_path):
    xml = translate(interp, tmp_path,
                    "config device 'b'\n\toption name tun_b\n"
                    "config device\n\toption name tun_a\n"
                    "config action 'late'\n\toption time 30\n\toption script /bin/late\n"
                    "config action\n\toption time 10\n\toption script /bin/early\n")
    assert texts(xml, "net_device") == ["tun_b", "tun_a"]
    assert texts(xml, "script") == ["/bin/late", "/bin/early"]


def test_reopened_named_section_adds_to_itself_in_place(interp, tmp_path):
    xml = translate(interp, tmp_path,
                    "config device 'a'\n\toption name tun0\n"
                    "config device\n\toption name tun1\n"
                    "config device 'a'\n\tlist name tun2\n")
    assert texts(xml, "net_device") == ["tun0", "tun2", "tun1"]


def test_list_after_option_keeps_the_option_value_first(interp, tmp_path):
    xml = translate(interp, tmp_path,
                    "config restore\n\toption script /bin/a\n\tlist script /bin/b\n")
    assert texts(xml, "script") == ["/bin/a", "/bin/b"]


def test_option_after_list_replaces_the_list(interp, tmp_path):
    xml = translate(interp, tmp_path,
                    "config restore\n\tlist script /bin/a\n\tlist script /bin/b\n"
                    "\toption script /bin/c\n")
    assert texts(xml, "script") == ["/bin/c"]


def test_later_option_replaces_and_empty_option_deletes(interp, tmp_path):
    xml = translate(interp, tmp_path,
                    "config tunmon 'main'\n"
                    "\toption interval 1\n\toption interval 2\n"
                    "\toption pidfile /var/run/x.pid\n\toption pidfile ''\n"
                    "\toption trace 1\n\toption trace\n"
                    "\toption unknown_but_deleted ''\n")
    assert texts(xml, "interval") == ["2"]
    assert texts(xml, "pidfile") == []
    assert texts(xml, "trace") == []


# ---- errors ---------------------------------------------------------------------------------

MAIN = "config tunmon 'main'\n"
TUN = "config device 'tun'\n\toption name tun0\n"
WAN = "config device 'wan'\n\toption name pppoe-wan\n"
# (case, UCI text, line of the error, part of its message)
ERRORS = [
    ("unknown command", MAIN + "\toptoin trace 1\n", 2, "unknown command 'optoin'"),
    ("option before config", "# comment\noption trace 1\n", 2,
     "'option' before the first 'config'"),
    ("option name charset", MAIN + "\toption trace-x 1\n", 2, "invalid option name 'trace-x'"),
    ("section name charset", "config device 'he.net'\n", 1, "invalid section name 'he.net'"),
    ("section type charset", "config dev-ice\n", 1, "invalid section type name 'dev-ice'"),
    ("config without type", "config\n", 1, "'config' needs a type"),
    ("option without name", MAIN + "\toption\n", 2, "'option' needs a name"),
    ("too many arguments", "config action\n\toption time 5\n\toption script /bin/echo hi\n", 3,
     "too many arguments to 'option' (quote a value that contains spaces)"),
    ("unterminated ' after a multi-line value",
     MAIN + "\toption pidfile 'a\nb'\n\toption trace '1\n", 4, "unterminated ' quote"),
    ("unterminated \"", MAIN + "\n\toption pidfile \"/var/run/x\n", 3, 'unterminated " quote'),
    ("lines joined by a backslash still count",
     MAIN + "\toption pidfile /var/\\\nrun/x\n\toption trace maybe\n", 4,
     "tunmon.main.trace: 'maybe' is not a boolean"),
    ("unknown section type", MAIN + "config acton\n\toption time 5\n", 2,
     "tunmon.@acton[0]: unknown section type 'acton' (known: tunmon, device, action, retry,"
     " restore, post_restore_any, stats)"),
    ("unknown option", MAIN + "\toption intervall 5\n", 2,
     "tunmon.main.intervall: unknown option (a tunmon section takes: enabled, interpreter,"
     " interval, pidfile, script_timeout, max_scripts, trace, hotplug, counter_source,"
     " link_down_is_silence, status_file, status_interval)"),
    ("unknown device option", "config device\n\toption name tun0\n\toption ping icmp\n", 3,
     "tunmon.@device[0].ping: unknown option (a device section takes: name, target, probe,"
     " min_rx_bytes, depends, link_down_is_silence)"),
    ("unknown stats option", "config stats\n\toption file /tmp/s\n\toption port 9\n", 3,
     "tunmon.@stats[0].port: unknown option (a stats section takes: interval, file, max_size,"
     " udp, format)"),
    ("first unknown option in file order", MAIN + "\toption zzz 1\n\toption aaa 1\n", 2,
     "tunmon.main.zzz: unknown option"),
    ("global section under another name", "config tunmon 'global'\n", 1,
     "tunmon.global: the tunmon section must be named 'main' (config tunmon 'main')"),
    ("anonymous global section", "config tunmon\n", 1,
     "tunmon.@tunmon[0]: the tunmon section must be named 'main'"),
    ("section reopened with another type",
     "config device 'x'\n\toption name tun0\nconfig action 'x'\n", 3,
     "section 'x' has type 'device' (line 1), not 'action'"),
    ("bad time", MAIN + "\toption interval 5x\n", 2, "tunmon.main.interval: '5x' is not a time"),
    ("interval below 0.1 s", MAIN + "\toption interval 0.05\n", 2,
     "tunmon.main.interval: must be at least 0.1 s"),
    ("script_timeout 0", MAIN + "\toption script_timeout 0\n", 2,
     "tunmon.main.script_timeout: must be more than 0"),
    ("interval over a day", MAIN + "\toption interval 2d\n", 2,
     "tunmon.main.interval: must be at most 86400 s (a day)"),
    ("script_timeout over a day", MAIN + "\toption script_timeout 25h\n", 2,
     "tunmon.main.script_timeout: must be at most 86400 s (a day)"),
    ("bad boolean", MAIN + "\toption hotplug 2\n", 2, "tunmon.main.hotplug: '2' is not a boolean"),
    ("bad enabled", MAIN + "\toption enabled maybe\n", 2,
     "tunmon.main.enabled: 'maybe' is not a boolean"),
    # config_get_bool in the init script is case-sensitive: it would take this for off
    ("enabled in capitals", MAIN + "\toption enabled TRUE\n", 2,
     "tunmon.main.enabled: 'TRUE' is not a boolean (the init script knows 1, on, true"),
    ("bad count", MAIN + "\toption max_scripts 0\n", 2,
     "tunmon.main.max_scripts: '0' is not a whole number >= 1"),
    ("bad interpreter", MAIN + "\toption interpreter pypy\n", 2,
     "tunmon.main.interpreter: 'pypy' is not an interpreter (auto, micropython or python3)"),
    ("device name too long", "config device\n\toption name 'a_very_long_name'\n", 2,
     "tunmon.@device[0].name: 'a_very_long_name' is not a network interface name"),
    # Linux counts bytes: 9 characters of 2 bytes are one too many
    ("device name of 18 bytes", "config device\n\toption name '\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4'\n", 2,
     "tunmon.@device[0].name: '\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4\u00e4' is not a network interface name"),
    ("device name ..", "config device\n\toption name '..'\n", 2,
     "tunmon.@device[0].name: '..' is not a network interface name"),
    ("device name with a space", "config device\n\tlist name tun0\n\tlist name 'tun 1'\n", 3,
     "tunmon.@device[0].name: 'tun 1' is not a network interface name"),
    ("empty list value", "config device\n\tlist name ''\n", 2,
     "tunmon.@device[0].name: empty value"),
    ("control character", MAIN + "\toption pidfile '/var/run/a\x01'\n", 2,
     "tunmon.main.pidfile: control character in value"),
    # it would be resolved against /var/etc, where the generated XML lives
    ("relative pidfile", MAIN + "\toption pidfile 'tunmon.pid'\n", 2,
     "tunmon.main.pidfile: 'tunmon.pid' is not an absolute path"),
    ("device watched twice", "config device\n\toption name tun0\nconfig device 'b'\n"
     "\toption name tun0\n", 4, "device 'tun0' is already watched (line 2)"),
    ("missing required option", "config action\n\toption time 5\n", 1,
     "tunmon.@action[0]: missing option 'script'"),
    ("anonymous index counts every section of the type",
     "config action 'a'\n\toption time 5\n\toption script /bin/a\nconfig action\n", 4,
     "tunmon.@action[1]: missing option 'time'"),
    ("deleted required option",
     "config retry 'r'\n\toption interval 5\n\toption script /bin/a\n\toption script ''\n", 1,
     "tunmon.r: missing option 'script'"),
    ("list for a single-valued option",
     "config action\n\toption time 5\n\tlist script /bin/a\n\tlist script /bin/b\n", 4,
     "tunmon.@action[0].script takes one value, not a list"),
    ("relative script path", "config restore\n\tlist script ./restored.sh\n", 2,
     "tunmon.@restore[0].script: relative script path './restored.sh':"
     " use an absolute path or a command on PATH"),
    ("unclosed quote in a script line", "config restore\n\toption script \"/bin/echo 'a\"\n", 2,
     "tunmon.@restore[0].script: unclosed ' quote"),
    ("enabled without a device", MAIN + "\toption interval 5\n\toption enabled 1\n", 3,
     "tunmon.main.enabled is on but no device is configured"),
    ("another package", "package network\n", 1, "package 'network' is not tunmon's config"),
    ("package after a section", MAIN + "package tunmon\n", 2, "'package' after the first section"),
    # global options for link state, counters and status
    ("bad counter_source", MAIN + "\toption counter_source netlink\n", 2,
     "tunmon.main.counter_source: 'netlink' is not one of auto, proc, sysfs"),
    ("bad link_down_is_silence", MAIN + "\toption link_down_is_silence sometimes\n", 2,
     "tunmon.main.link_down_is_silence: 'sometimes' is not a boolean"),
    ("relative status_file", MAIN + "\toption status_file status.json\n", 2,
     "tunmon.main.status_file: 'status.json' is not an absolute path"),
    ("status_interval 0", MAIN + "\toption status_interval 0\n", 2,
     "tunmon.main.status_interval: must be more than 0"),
    ("bad status_interval", MAIN + "\toption status_interval often\n", 2,
     "tunmon.main.status_interval: 'often' is not a time"),
    # per-device settings
    ("target of two words", TUN + "\toption target '10.0.0.1 10.0.0.2'\n", 3,
     "tunmon.tun.target: '10.0.0.1 10.0.0.2' is not one word"),
    ("bad probe", TUN + "\toption target 10.0.0.1\n\toption probe udp\n", 4,
     "tunmon.tun.probe: 'udp' is not one of icmp, none"),
    ("probe without target", TUN + "\toption probe icmp\n", 3,
     "tunmon.tun.probe: icmp needs option target (the address to probe)"),
    ("negative min_rx_bytes", TUN + "\toption min_rx_bytes -1\n", 3,
     "tunmon.tun.min_rx_bytes: '-1' is not a whole number >= 0"),
    ("bad device link_down_is_silence", TUN + "\toption link_down_is_silence 2\n", 3,
     "tunmon.tun.link_down_is_silence: '2' is not a boolean"),
    ("depends on nothing watched", TUN + "\toption depends wan\n", 3,
     "tunmon.tun.depends: 'wan' is neither a device section nor a watched device"),
    ("depends of two words", TUN + "\toption depends 'wan lan'\n", 3,
     "tunmon.tun.depends: 'wan lan' is not one word"),
    ("depends on a section of several devices",
     "config device 'wg'\n\tlist name wg0\n\tlist name wg1\n" + TUN + "\toption depends wg\n",
     6, "tunmon.tun.depends: the device section tunmon.wg watches several devices (wg0, wg1):"
     " depend on one of them"),
    ("depends on itself", TUN + "\toption depends tun\n", 3,
     "tunmon.tun.depends: dependency cycle: tun0 -> tun0"),
    ("depends on its own section", "config device 'pair'\n\tlist name a\n\tlist name b\n"
     "\toption depends a\n", 4, "tunmon.pair.depends: dependency cycle: a -> a"),
    ("dependency cycle", WAN + "\toption depends tun0\n" + TUN + "\toption depends wan\n", 3,
     "tunmon.wan.depends: dependency cycle: pppoe-wan -> tun0 -> pppoe-wan"),
    ("longer dependency cycle, reported at the first device in it",
     TUN + WAN + "\toption depends 6in4-x\nconfig device\n\toption name 6in4-x\n"
     "\toption depends tun\n\nconfig device 'tun'\n\toption depends pppoe-wan\n", 11,
     "tunmon.tun.depends: dependency cycle: tun0 -> pppoe-wan -> 6in4-x -> tun0"),
    ("ambiguous reference", WAN + "config device\n\toption name wan\n\toption depends wan\n", 5,
     "tunmon.@device[1].depends: 'wan' is ambiguous: the device section tunmon.wan watches"
     " pppoe-wan, and wan is a watched device too (rename the section)"),
    # ladder entries limited to devices
    ("action for a device not watched", TUN + "config action\n\toption time 5\n"
     "\toption script /bin/true\n\tlist device tun0\n\tlist device tun9\n", 7,
     "tunmon.@action[0].device: 'tun9' is neither a device section nor a watched device"),
    ("retry for a device not watched, in an option of several",
     TUN + "config retry 'again'\n\toption interval 5\n\toption script /bin/true\n"
     "\toption device 'tun wg0'\n", 6,
     "tunmon.again.device: 'wg0' is neither a device section nor a watched device"),
    ("restore for no device", TUN + "config restore\n\toption script /bin/true\n"
     "\toption device ' '\n", 5, "tunmon.@restore[0].device: empty value"),
    ("post_restore_any for a device not watched", TUN + "config post_restore_any\n"
     "\tlist script /bin/true\n\tlist device tun1\n", 5,
     "tunmon.@post_restore_any[0].device: 'tun1' is neither a device section nor a watched"
     " device"),
    ("device limit in a config without devices",
     "config action\n\toption time 5\n\toption script /bin/true\n\tlist device tun0\n", 4,
     "tunmon.@action[0].device: 'tun0' is neither a device section nor a watched device"),
    # statistics
    ("two stats sections", "config stats\n\toption file /tmp/a\nconfig stats 'more'\n"
     "\toption udp host:1\n", 3, "tunmon.more: only one stats section is allowed"
     " (the first is at line 1)"),
    ("stats without an output", "config stats\n\toption interval 5\n", 1,
     "tunmon.@stats[0]: needs option file or udp (or both)"),
    ("stats udp without a port", "config stats\n\toption udp 192.0.2.1\n", 2,
     "tunmon.@stats[0].udp: '192.0.2.1' is not host:port"),
    ("stats udp port out of range", "config stats\n\toption udp '[::1]:65536'\n", 2,
     "tunmon.@stats[0].udp: '[::1]:65536' is not host:port"),
    ("stats format", "config stats\n\toption file /tmp/s\n\toption format csv\n", 3,
     "tunmon.@stats[0].format: 'csv' is not one of json, influx"),
    ("stats max_size", "config stats\n\toption file /tmp/s\n\toption max_size 1G\n", 3,
     "tunmon.@stats[0].max_size: '1G' is not a whole number >= 1"),
    ("stats relative file", "config stats\n\toption file stats.txt\n", 2,
     "tunmon.@stats[0].file: 'stats.txt' is not an absolute path"),
    ("stats interval 0", "config stats\n\toption file /tmp/s\n\toption interval 0\n", 3,
     "tunmon.@stats[0].interval: must be more than 0"),
]


@pytest.mark.parametrize("text, line, message", [case[1:] for case in ERRORS],
                         ids=[case[0] for case in ERRORS])
def test_errors_name_the_uci_line(interp, tmp_path, text, line, message):
    found_line, found_message = translation_error(interp, tmp_path, text)
    assert found_line == line
    assert found_message.startswith(message)


# ---- translation ----------------------------------------------------------------------------

GOLDEN_NAMES = sorted(os.path.basename(path)[:-len(".uci")]
                      for path in glob.glob(os.path.join(GOLDEN, "uci_*.uci")))


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden(interp, name):
    result = run_tunmon(interp, "--uci-to-xml", os.path.join(GOLDEN, name + ".uci"))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == read(os.path.join(GOLDEN, name + ".xml"))


def test_output_is_byte_identical_across_runs_and_interpreters():
    outputs = [run_tunmon(interpreter_command(name), "--uci-to-xml", FULL_UCI, text=False).stdout
               for name in ("cpython", "micropython", "cpython", "micropython")]
    assert outputs[0] and outputs.count(outputs[0]) == len(outputs)


def test_translation_loads_as_the_intended_config():
    config = tunmon_xml.parse_config(tunmon_uci.uci_to_xml(read(FULL_UCI), "uci_full.uci"),
                                     "/var/etc/tunmon.xml")
    assert config.devices == ["6in4-wan6", "tun0", "wg0", "gre4-office"]
    assert (config.interval, config.pidfile, config.script_timeout, config.max_scripts,
            config.trace, config.hotplug) == (2.5, None, 120.0, 4, False, True)
    assert [(action.ticks, action.argv) for action in config.actions] == [
        (4, ["/usr/share/tunmon/ping.sh", "-c", "1", "2001:db8::1"]),
        (18, ["/usr/share/tunmon/ifup.sh"])]
    assert [(retry.ticks, retry.argv) for retry in config.retries] == [
        (48, ["/usr/share/tunmon/ifup.sh"]),
        (1440, ["/usr/bin/logger", "-t", "tunmon", "still down after an hour & more"])]
    assert [script.argv for script in config.restores] == [
        ["/usr/share/tunmon/log.sh"], ["/etc/tunmon/restored.sh", "<ok>"]]
    assert [script.argv for script in config.post_restores] == [
        ["/etc/tunmon/routes.sh"], ["/etc/tunmon/notify.sh", "all tunnels", "up"]]


def test_translation_checks_with_the_intended_ladder(interp, tmp_path):
    xml = str(tmp_path / "tunmon.xml")
    assert run_tunmon(interp, "--uci-to-xml", FULL_UCI, "--output", xml).returncode == 0
    assert checked_ladder(interp, xml) == [
        "interval 2.5s; watching 6in4-wan6, tun0, wg0, gre4-office",
        "pidfile (none); script_timeout 120s; max_scripts 4; trace off; hotplug on",
        "counters auto; link down is silence on; status /var/run/tunmon/status.json every 10s",
        "action 1 at 10s silence (4 ticks): /usr/share/tunmon/ping.sh -c 1 2001:db8::1",
        "action 2 at 45s silence (18 ticks): /usr/share/tunmon/ifup.sh",
        "retry 1 every 120s (48 ticks) after 45s, first at 165s: /usr/share/tunmon/ifup.sh",
        "retry 2 every 3600s (1440 ticks) after 45s, first at 3645s:"
        " /usr/bin/logger -t tunmon still down after an hour & more",
        "restore 1: /usr/share/tunmon/log.sh",
        "restore 2: /etc/tunmon/restored.sh <ok>",
        "post_restore_any 1: /etc/tunmon/routes.sh",
        "post_restore_any 2: /etc/tunmon/notify.sh all tunnels up",
    ]


def test_every_golden_translation_loads():
    for name in GOLDEN_NAMES:
        config = tunmon_xml.parse_config(read(os.path.join(GOLDEN, name + ".xml")),
                                         "/var/etc/tunmon.xml")
        assert config.devices, name


def test_new_options_load_as_the_intended_config():
    config = tunmon_xml.parse_config(tunmon_uci.uci_to_xml(read(FEATURES_UCI), "features.uci"),
                                     "/var/etc/tunmon.xml")
    assert (config.counter_source, config.link_down_is_silence, config.status_file,
            config.status_interval) == ("sysfs", False, "/var/run/tunmon/status.json", 30.0)
    settings = [(name, device.target, device.probe, device.min_rx_bytes, device.depends,
                 device.link_down_is_silence)
                for name, device in [(name, config.device[name]) for name in config.devices]]
    assert settings == [
        ("pppoe-wan", None, None, 600, None, True),
        ("6in4-henet", "2001:470:20::2", None, 0, "pppoe-wan", None),
        # one section, two interfaces: the same settings
        ("wg0", "10.0.0.1", "icmp", 0, "pppoe-wan", None),
        ("wg1", "10.0.0.1", "icmp", 0, "pppoe-wan", None),
        ("gre4-lab", "lab.example.net", None, 0, None, None),
    ]
    assert [action.devices for action in config.actions] == [
        ["6in4-henet"], ["6in4-henet", "wg0", "wg1"], ["pppoe-wan"], None]
    assert [retry.devices for retry in config.retries] == [["6in4-henet", "wg1", "wg0"]]
    assert [script.devices for script in config.restores] == [
        ["6in4-henet"], ["6in4-henet"], None]
    assert [script.devices for script in config.post_restores] == [["wg0", "wg1", "gre4-lab"]]
    stats = config.stats
    assert (stats.interval, stats.file, stats.max_size, stats.udp, stats.format) == (
        60.0, "/tmp/tunmon/stats.jsonl", 65536, ("2001:db8::9", 8089), "influx")


def test_new_options_check_with_per_device_settings_and_limits(interp, tmp_path):
    xml = str(tmp_path / "tunmon.xml")
    assert run_tunmon(interp, "--uci-to-xml", FEATURES_UCI, "--output", xml).returncode == 0
    assert checked_ladder(interp, xml) == [
        "interval 5s; watching pppoe-wan, 6in4-henet, wg0, wg1, gre4-lab",
        "pidfile (none); script_timeout 60s; max_scripts 8; trace off; hotplug off",
        "counters sysfs; link down is silence off; status /var/run/tunmon/status.json every 30s",
        "device pppoe-wan: min_rx_bytes 600, link down is silence on",
        "device 6in4-henet: target 2001:470:20::2, depends on pppoe-wan",
        "device wg0: probe icmp to 10.0.0.1, depends on pppoe-wan",
        "device wg1: probe icmp to 10.0.0.1, depends on pppoe-wan",
        "device gre4-lab: target lab.example.net",
        "action 1 at 15s silence (3 ticks): /usr/share/tunmon/ping.sh 2001:470:20::2"
        " [for 6in4-henet]",
        "action 2 at 60s silence (12 ticks): /usr/share/tunmon/ifup.sh [for 6in4-henet, wg0, wg1]",
        "action 3 at 120s silence (24 ticks): /usr/bin/logger -t tunmon uplink silent"
        " [for pppoe-wan]",
        "action 4 at 30s silence (6 ticks): /usr/share/tunmon/log.sh",
        "retry 1 every 300s (60 ticks) after 60s, first at 360s: /usr/share/tunmon/ifup.sh"
        " [for 6in4-henet, wg1, wg0]",
        "restore 1: /usr/share/tunmon/log.sh [for 6in4-henet]",
        "restore 2: /etc/tunmon/routes.sh v6 up [for 6in4-henet]",
        "restore 3: /usr/share/tunmon/log.sh uplink back",
        "post_restore_any 1: /etc/tunmon/notify.sh [for wg0, wg1, gre4-lab]",
    ]


def test_depends_and_device_take_section_or_interface_names(interp, tmp_path):
    xml = translate(interp, tmp_path,
                    "config device 'uplink'\n\toption name eth0.2\n"
                    "config device\n\toption name 6in4-a\n\toption depends uplink\n"
                    "config device 'b'\n\toption name 6in4-b\n\toption depends eth0.2\n"
                    # a section named like the interface it watches is no ambiguity
                    "config device 'wg0'\n\toption name wg0\n\toption depends wg0_up\n"
                    "config device 'wg0_up'\n\toption name wg1\n"
                    "config action\n\toption time 5\n\toption script /bin/true\n"
                    "\tlist device 'b uplink'\n\tlist device wg0\n\tlist device 6in4-b\n")
    assert ('<net_device depends="eth0.2">6in4-a</net_device>' in xml
            and '<net_device depends="eth0.2">6in4-b</net_device>' in xml
            and '<net_device depends="wg1">wg0</net_device>' in xml)
    assert '<action device="6in4-b eth0.2 wg0">' in xml


# ---- the shipped /etc/config/tunmon ---------------------------------------------------------

def test_shipped_config_translates_as_shipped(interp, tmp_path):
    xml = translate(interp, tmp_path, shipped_config())
    assert texts(xml, "net_device") == []
    assert texts(xml, "interval") == ["5"]


def test_shipped_example_uncommented_checks_with_the_6in4_ladder(interp, tmp_path):
    xml = str(tmp_path / "tunmon.xml")
    uci = write(tmp_path, shipped_config(uncommented=True, enabled=True))
    assert run_tunmon(interp, "--uci-to-xml", uci, "--output", xml).returncode == 0
    assert checked_ladder(interp, xml) == [
        "interval 5s; watching 6in4-henet",
        "pidfile (none); script_timeout 60s; max_scripts 8; trace off; hotplug off",
        "counters auto; link down is silence on; status /var/run/tunmon/status.json every 10s",
        "action 1 at 15s silence (3 ticks): /usr/share/tunmon/ping.sh 2001:470:20::2",
        "action 2 at 60s silence (12 ticks): /usr/share/tunmon/ifup.sh",
        "retry 1 every 300s (60 ticks) after 60s, first at 360s: /usr/share/tunmon/ifup.sh",
        "restore 1: /usr/share/tunmon/log.sh",
    ]


def test_shipped_example_names_only_shipped_scripts():
    named = set(word for word in shipped_config(uncommented=True).split()
                if word.startswith("'/usr/share/tunmon/"))
    assert named
    for word in named:
        assert os.path.isfile(os.path.join(ROOT, "scripts", word.strip("'").rsplit("/", 1)[1]))


# ---- README.md's UCI examples ---------------------------------------------------------------

class UciStandIn:
    """Just enough of `uci set`, `uci add`, `uci add_list` and `uci commit` to run the README's
    examples on a config; export() writes the result as `uci export tunmon` does."""

    def __init__(self, text):
        # [type, name or None, {option: ["option" or "list", [values]]}], in file order
        self.sections = []
        for section in tunmon_uci.parse_uci(text, "tunmon"):
            name = None if section.path.startswith("tunmon.@") else section.path[len("tunmon."):]
            self.sections.append([section.kind, name, dict(
                (option, ["option" if len(items) == 1 else "list",
                          [value for value, line in items]])
                for option, items in section.options.items())])

    def section(self, reference):
        if reference.startswith("@"):  # @type[index]
            kind, index = reference[1:-1].split("[")
            return [section for section in self.sections if section[0] == kind][int(index)]
        return [section for section in self.sections if section[1] == reference][0]

    def run(self, line):
        words = shlex.split(line, comments=True)
        assert words[:1] == ["uci"], line
        if words[1] == "commit":
            return
        if words[1] == "add":  # uci add tunmon TYPE
            self.sections.append([words[3], None, {}])
            return
        key, value = words[2].split("=", 1)
        path = key.split(".")
        assert path[0] == "tunmon" and len(words) == 3, line
        if len(path) == 2:  # uci set tunmon.NAME=TYPE
            known = [section for section in self.sections if section[1] == path[1]]
            if known:
                known[0][0] = value
            else:
                self.sections.append([value, path[1], {}])
        elif words[1] == "set":
            self.section(path[1])[2][path[2]] = ["option", [value]]
        else:
            assert words[1] == "add_list", line
            option = self.section(path[1])[2].setdefault(path[2], ["list", []])
            option[0] = "list"
            option[1].append(value)

    def export(self):
        lines = ["package tunmon"]
        for kind, name, options in self.sections:
            lines.extend(["", "config %s%s" % (kind, " '%s'" % name if name else "")])
            for option, (keyword, values) in options.items():
                lines.extend(["\t%s %s '%s'" % (keyword, option, value.replace("'", "'\\''"))
                              for value in values])
        return "\n".join(lines) + "\n"


def readme_example(title):
    """The code lines (indented by 4 in the README) of the example under `### title`."""
    body = read(README).split("\n### %s\n" % title, 1)[1].split("\n#", 1)[0]
    return [line[4:] for line in body.split("\n") if line.startswith("    ")]


def run_readme_example(title):
    """The shipped config after the example's `uci` commands, as `uci export` prints it."""
    uci = UciStandIn(shipped_config())
    for line in readme_example(title):
        if line.startswith("uci "):
            uci.run(line)
    return uci.export()


def test_readme_one_ladder_example(interp, tmp_path):
    exported = run_readme_example("One ladder for every device")
    code = readme_example("One ladder for every device")
    # The export shown, blank lines aside, is part of the stand-in's.
    shown = "\n".join(code[code.index("config device 'wg'"):]) + "\n"
    assert shown in "\n".join([line for line in exported.split("\n") if line]) + "\n"
    xml = str(tmp_path / "tunmon.xml")
    assert run_tunmon(interp, "--uci-to-xml", write(tmp_path, exported), "--output",
                      xml).returncode == 0
    assert checked_ladder(interp, xml)[0] == "interval 5s; watching wg0, wg1"


def test_readme_per_device_example_checks_as_shown(interp, tmp_path):
    title = "A ladder per device: an uplink, a WireGuard uplink and a 6in4 tunnel"
    exported = run_readme_example(title)
    assert "\toption depends 'wan'\n" in exported and "\tlist device 'henet'\n" in exported
    xml = str(tmp_path / "tunmon-check.xml")
    assert run_tunmon(interp, "--uci-to-xml", write(tmp_path, exported), "--output",
                      xml).returncode == 0
    code = readme_example(title)
    shown = code[code.index("/var/etc/tunmon-check.xml: valid") + 1:]
    assert checked_ladder(interp, xml) == shown


def test_readme_status_and_statistics_example(interp, tmp_path):
    xml = translate(interp, tmp_path, run_readme_example("Status and statistics"))
    assert texts(xml, "status_interval") == ["30"]
    stats = [element for element in tunmon_xml.parse_xml(xml).children if element.tag == "stats"]
    assert [(child.tag, child.text) for child in stats[0].children] == [
        ("interval", "1m"), ("file", "/tmp/tunmon-stats.txt"), ("max_size", "64k"),
        ("udp", "192.168.1.10:8089"), ("format", "influx")]


# ---- command line ---------------------------------------------------------------------------

def test_output_replaces_the_file_by_rename(interp, tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    output = folder / "tunmon.xml"
    output.write_text("old\n")
    os.link(str(output), str(tmp_path / "old-link"))
    result = run_tunmon(interp, "--uci-to-xml", FULL_UCI, "--output", output)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert read(str(output)) == read(os.path.join(GOLDEN, "uci_full.xml"))
    # Written in place, the old link would see the new text too.
    assert (tmp_path / "old-link").read_text() == "old\n"
    assert os.listdir(str(folder)) == ["tunmon.xml"]


def test_failed_translation_keeps_the_last_good_output(interp, tmp_path):
    output = tmp_path / "tunmon.xml"
    output.write_text("last good\n")
    bad = write(tmp_path, MAIN + "\toption interval soon\n", "bad.uci")
    result = run_tunmon(interp, "--uci-to-xml", bad, "--output", output)
    assert result.returncode == 2
    assert result.stderr.startswith("error: %s:2: tunmon.main.interval:" % bad)
    assert output.read_text() == "last good\n"
    assert sorted(os.listdir(str(tmp_path))) == ["bad.uci", "tunmon.xml"]


def test_unwritable_output_is_an_error(interp, tmp_path):
    output = tmp_path / "missing" / "tunmon.xml"
    result = run_tunmon(interp, "--uci-to-xml", FULL_UCI, "--output", output)
    assert result.returncode == 2
    assert result.stderr == "error: cannot write %s: No such file or directory\n" % output


@pytest.mark.parametrize("source", [["-"], []], ids=["dash", "default"])
def test_reads_stdin(interp, source):
    result = run_tunmon(interp, "--uci-to-xml", *source,
                        input=read(os.path.join(GOLDEN, "uci_export.uci")))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == read(os.path.join(GOLDEN, "uci_export.xml"))


def test_stdin_errors_name_stdin(interp):
    result = run_tunmon(interp, "--uci-to-xml", "-", input=MAIN + "\toption trace 2\n")
    assert result.returncode == 2
    assert result.stderr.startswith("error: <stdin>:2: tunmon.main.trace: '2' is not a boolean")


def test_unreadable_input_is_an_error(interp, tmp_path):
    missing = tmp_path / "missing.uci"
    result = run_tunmon(interp, "--uci-to-xml", missing)
    assert result.returncode == 2
    assert result.stderr == "error: cannot read %s: No such file or directory\n" % missing


def test_a_file_over_the_limit_is_refused_before_it_is_read(interp, tmp_path):
    # Read whole, 3 MB ran the 2 MB MicroPython heap out of memory.
    path = tmp_path / "huge.uci"
    path.write_text("config tunmon 'main'\n# " + "x" * 3000000 + "\n")
    result = run_tunmon(interp, "--uci-to-xml", path)
    assert (result.returncode, result.stderr) == (2, "error: %s: file is larger than 1 MiB\n" % path)
    with open(path, "rb") as f:
        result = run_tunmon(interp, "--uci-to-xml", "-", stdin=f)
    assert (result.returncode, result.stderr) == (2, "error: -: file is larger than 1 MiB\n")


def test_input_must_be_utf8(interp, tmp_path):
    path = tmp_path / "latin1.uci"
    path.write_bytes(b"config tunmon 'main'\n\toption pidfile '/var/run/caf\xe9'\n")
    result = run_tunmon(interp, "--uci-to-xml", path)
    assert result.returncode == 2
    assert result.stderr == "error: %s: not UTF-8 text\n" % path


@pytest.mark.parametrize("arguments", [["a.uci", "b.uci"], ["--output"], ["a.uci", "--output"],
                                       ["--bogus"]])
def test_usage_errors(interp, arguments):
    result = run_tunmon(interp, "--uci-to-xml", *arguments)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: usage: tunmon --uci-to-xml [FILE|-] [--output PATH]\n"
