#!/bin/sh
# /usr/sbin/tunmon: run tunmon with MicroPython if installed, else python3.
#
# A shell launcher so that procd tags the daemon's syslog lines "tunmon" (the
# basename of the command it started); `exec` keeps procd's pid the daemon's.
#
# Environment:
#   TUNMON_INTERPRETER  auto (default), micropython or python3
#                       (the init script passes UCI's tunmon.main.interpreter)
#   TUNMON_LIBDIR       the modules' directory (default /usr/lib/tunmon)
#
# MicroPython imports foo.py in preference to foo.mpy from the same directory,
# and compiling source costs it far more heap than loading precompiled code:
# the .mpy files live in $TUNMON_LIBDIR/mpy, searched first.

LIBDIR="${TUNMON_LIBDIR:-/usr/lib/tunmon}"

# sys.argv is ["-c", LIBDIR, args...] here; tunmon.run gets the args.
MICROPYTHON_MAIN='import sys
lib = sys.argv.pop(1)
sys.path.insert(0, lib)
sys.path.insert(0, lib + "/mpy")
import tunmon
sys.exit(tunmon.run(sys.argv[1:]))'

has() {
	command -v "$1" >/dev/null 2>&1
}

interpreter="${TUNMON_INTERPRETER:-auto}"
if [ "$interpreter" = auto ]; then
	interpreter=python3
	has micropython && interpreter=micropython
fi

case "$interpreter" in
micropython|python3) ;;
*)
	echo "error: TUNMON_INTERPRETER must be auto, micropython or python3, not '$interpreter'" >&2
	exit 2
	;;
esac
has "$interpreter" || {
	echo "error: $interpreter not found (TUNMON_INTERPRETER=${TUNMON_INTERPRETER:-auto})" >&2
	exit 1
}

if [ "$interpreter" = micropython ]; then
	exec micropython -c "$MICROPYTHON_MAIN" "$LIBDIR" "$@"
fi
# -u: unbuffered, so procd logs each line when it is written.
# -B: no __pycache__ under /usr/lib/tunmon: opkg would not remove it.
exec python3 -u -B "$LIBDIR/tunmon.py" "$@"
