"""The procd init script (init.d/tunmon), run by a POSIX shell against stand-ins.

tests/openwrt_stubs/ holds the stand-ins: rc.common (sources the script, redirects its
paths into a scratch root, runs a command the way rc.common does), functions.sh
(config_load evaluating `uci export` like the real one), procd.sh (records every procd_*
call in procd.log), bin/uci and bin/logger on PATH, and a tunmon command that translates
by copying its input. busybox's ash runs the scripts when it is installed, as on a router.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INITSCRIPT = os.path.join(ROOT, "init.d", "tunmon")
STUBS = os.path.join(ROOT, "tests", "openwrt_stubs")
SH = ["busybox", "sh"] if shutil.which("busybox") else ["sh"]

ENABLED = """package tunmon

config tunmon 'main'
\toption enabled '1'
\toption interval '5'

config device
\toption name 'tun0'
"""


class Router:
    """A scratch root with /etc/config/tunmon and /var/etc, and the init script's runner."""

    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "etc", "config"))
        self.conf = os.path.join(root, "var", "etc", "tunmon.xml")
        self.export = os.path.join(root, "var", "etc", "tunmon.uci")   # `uci export tunmon`

    def config(self, text):
        with open(os.path.join(self.root, "etc", "config", "tunmon"), "w") as f:
            f.write(text)

    def last_good(self, text):
        os.makedirs(os.path.dirname(self.conf), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(text)

    def run(self, command, prog=os.path.join(STUBS, "tunmon")):
        env = dict(os.environ, TEST_ROOT=self.root, TEST_PROG=prog,
                   PATH=os.path.join(STUBS, "bin") + os.pathsep + os.environ["PATH"])
        env.pop("TUNMON_INTERPRETER", None)
        return subprocess.run(SH + [os.path.join(STUBS, "rc.common"), INITSCRIPT, command],
                              env=env, capture_output=True, text=True, timeout=30)

    def read(self, name):
        path = os.path.join(self.root, name)
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f.read()

    def procd(self):
        """The recorded procd_* calls as tuples (call, arg, ...)."""
        return [tuple(line.split("\t")) for line in self.read("procd.log").splitlines()]

    def instances(self):
        """The params of each declared instance: {param: (values...)}."""
        found = []
        for call in self.procd():
            if call[0] == "open_instance":
                found.append({})
            elif call[0] == "set_param":
                found[-1][call[1]] = call[2:]
        return found


@pytest.fixture
def router(tmp_path):
    return Router(str(tmp_path))


@pytest.fixture
def real_tunmon(tmp_path):
    """A /usr/sbin/tunmon that runs this checkout's tunmon.py: the real translator."""
    prog = tmp_path / "bin" / "tunmon"
    prog.parent.mkdir()
    prog.write_text('#!/bin/sh\nexec %s %s "$@"\n' % (sys.executable, os.path.join(ROOT, "tunmon.py")))
    prog.chmod(0o755)
    return str(prog)


def test_init_script_parses():
    assert subprocess.run(SH + ["-n", INITSCRIPT]).returncode == 0


def test_enabled_declares_the_instance(router):
    router.config(ENABLED)
    result = router.run("start")
    assert result.returncode == 0, result.stderr
    assert router.instances() == [{
        "command": (os.path.join(STUBS, "tunmon"), "-c", router.conf),
        "env": ("TUNMON_INTERPRETER=auto",),
        "respawn": (),
        "stdout": ("1",),
        "stderr": ("1",),
        "file": (router.conf,),
        "reload_signal": ("HUP",),
        "term_timeout": ("10",),
    }]
    # tunmon takes up to ~6 s to stop its scripts (SIGTERM, 5 s, SIGKILL)
    assert int(router.instances()[0]["term_timeout"][0]) > 6
    assert ("reload_trigger", "tunmon") in router.procd()
    # the instance's file is the translation of `uci export tunmon`
    assert router.read("var/etc/tunmon.xml") == ENABLED
    assert router.read("tunmon.calls") == "auto --uci-to-xml %s --output %s\n" % (
        router.export, router.conf)
    assert router.read("var/etc/tunmon.uci") == ENABLED   # kept: error lines point into it
    assert router.read("syslog") == ""


@pytest.mark.parametrize("value", ["1", "on", "yes", "true", "enabled"])
def test_enabled_accepts_uci_booleans(router, value):
    router.config(ENABLED.replace("option enabled '1'", "option enabled '%s'" % value))
    router.run("start")
    assert len(router.instances()) == 1


def test_interpreter_option_reaches_translator_and_instance(router):
    router.config(ENABLED.replace("option interval", "option interpreter 'python3'\n\toption interval"))
    router.run("start")
    assert router.instances()[0]["env"] == ("TUNMON_INTERPRETER=python3",)
    assert router.read("tunmon.calls").startswith("python3 --uci-to-xml")


@pytest.mark.parametrize("config", [
    ENABLED.replace("option enabled '1'", "option enabled '0'"),
    ENABLED.replace("\toption enabled '1'\n", ""),  # disabled by default
    None,  # no /etc/config/tunmon at all
])
def test_disabled_declares_nothing(router, config):
    if config is not None:
        router.config(config)
    router.last_good("<tun_mon/>\n")
    result = router.run("start")
    assert result.returncode == 0, result.stderr
    assert router.instances() == []
    assert router.read("tunmon.calls") == ""
    # the trigger stays, so enabling it in LuCI (Save & Apply) starts it
    assert ("reload_trigger", "tunmon") in router.procd()


# (a bad edit, the error it logs); {export} is the `uci export` the translator read.
BAD_EDITS = [
    (ENABLED + "\toption broken 'x'\n", "error: {export}:4: unknown option 'broken'"),
    # Real uci prints nothing to stdout on a parse error: translated, that nothing
    # replaced the running config with an empty one.
    (ENABLED + "\toption interval '5\n",
     "error: /etc/config/tunmon: uci: Parse error (unterminated ') at line 9, byte 0"),
]


@pytest.mark.parametrize("config, error", BAD_EDITS, ids=["translation", "uci syntax"])
def test_a_bad_edit_keeps_the_last_good_xml(router, config, error):
    router.config(config)
    router.last_good("<tun_mon>last good</tun_mon>\n")
    result = router.run("start")
    assert router.read("var/etc/tunmon.xml") == "<tun_mon>last good</tun_mon>\n"
    # still declared: a reload without the instance would stop the running monitor
    assert len(router.instances()) == 1
    assert router.instances()[0]["file"] == (router.conf,)
    error = error.format(export=router.export)
    assert router.read("syslog").splitlines() == [
        "daemon.err tunmon: " + error,
        "daemon.warn tunmon: /etc/config/tunmon has errors: keeping the last good %s" % router.conf,
    ]
    assert error in result.stderr


@pytest.mark.parametrize("config, error", BAD_EDITS, ids=["translation", "uci syntax"])
def test_a_bad_edit_without_last_good_declares_nothing(router, config, error):
    router.config(config)
    result = router.run("start")
    assert result.returncode != 0
    assert router.instances() == []
    assert not os.path.exists(router.conf)
    assert router.read("syslog").splitlines() == [
        "daemon.err tunmon: " + error.format(export=router.export),
        "daemon.err tunmon: not started: /etc/config/tunmon has errors",
    ]


def test_check_validates_a_fresh_translation_without_applying_it(router):
    router.config(ENABLED)
    router.last_good("<tun_mon>running</tun_mon>\n")
    result = router.run("check")
    assert result.returncode == 0, result.stderr
    check_xml = os.path.join(router.root, "var", "etc", "tunmon-check.xml")
    check_export = os.path.join(router.root, "var", "etc", "tunmon-check.uci")
    assert result.stdout == "checked %s\n" % check_xml
    assert router.read("tunmon.calls").splitlines() == [
        "auto --uci-to-xml %s --output %s" % (check_export, check_xml),
        "auto --check -c %s" % check_xml,
    ]
    assert not os.path.exists(check_xml)
    assert not os.path.exists(check_export)
    assert router.read("var/etc/tunmon.xml") == "<tun_mon>running</tun_mon>\n"
    assert router.procd() == []


def test_check_reports_translation_errors(router):
    router.config(ENABLED + "\toption broken 'x'\n")
    result = router.run("check")
    assert result.returncode == 2
    export = os.path.join(router.root, "var", "etc", "tunmon-check.uci")
    assert "error: %s:4: unknown option 'broken'" % export in result.stderr
    assert "--check" not in router.read("tunmon.calls")
    # the file the error names is still there to look at
    assert "option broken" in router.read("var/etc/tunmon-check.uci")


@pytest.mark.parametrize("value", ["TRUE", "Yes", "2", "enable"])
def test_an_enabled_value_uci_does_not_know_is_a_bad_edit(router, real_tunmon, value):
    # config_get_bool would read these as off and stop the service without a word.
    router.config(ENABLED.replace("option enabled '1'", "option enabled '%s'" % value))
    router.last_good("<tun_mon>last good</tun_mon>\n")
    router.run("start", prog=real_tunmon)
    assert router.read("var/etc/tunmon.xml") == "<tun_mon>last good</tun_mon>\n"
    assert len(router.instances()) == 1         # the running monitor goes on
    assert router.read("syslog").splitlines()[0].startswith(
        "daemon.err tunmon: error: %s:4: tunmon.main.enabled: '%s' is not a boolean"
        % (router.export, value))


def test_the_real_translator_names_the_line_of_the_export_it_read(router, real_tunmon):
    router.config(ENABLED + "\nconfig action 'ping'\n\toption time '15x'\n"
                  "\toption script '/bin/true'\n")
    router.last_good("<tun_mon>last good</tun_mon>\n")
    router.run("start", prog=real_tunmon)
    assert router.read("var/etc/tunmon.xml") == "<tun_mon>last good</tun_mon>\n"
    first = router.read("syslog").splitlines()[0]
    assert first.startswith("daemon.err tunmon: error: %s:11: tunmon.ping.time: '15x' is not a time"
                            % router.export), first
    assert router.read("var/etc/tunmon.uci").splitlines()[10] == "\toption time '15x'"
    # fixed, the same start translates it and replaces the last good config
    router.config(ENABLED)
    router.run("start", prog=real_tunmon)
    assert "<net_device>tun0</net_device>" in router.read("var/etc/tunmon.xml")
