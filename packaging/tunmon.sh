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
# Both interpreters import tunmon as a module rather than run it as a script,
# because compiling costs memory that stays: MicroPython loads the precompiled
# .mpy files from $TUNMON_LIBDIR/mpy (searched first, as it prefers foo.py over
# foo.mpy in one directory); python3 caches bytecode in $TUNMON_LIBDIR/__pycache__
# at its first start (the package's prerm removes it), which keeps the daemon at
# about 0.5 MiB over a bare interpreter instead of 7 (make bench, BENCHMARKS.md).

LIBDIR="${TUNMON_LIBDIR:-/usr/lib/tunmon}"

# sys.argv is ["-c", LIBDIR, args...] here; tunmon.run gets the args.
MAIN='import sys
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
	exec micropython -c "$MAIN" "$LIBDIR" "$@"
fi
# -u: unbuffered, so procd logs each line when it is written.
exec python3 -u -c "$MAIN" "$LIBDIR" "$@"
