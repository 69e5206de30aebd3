#!/bin/sh
# ping.sh: send a few pings through a watched device, for tunmon's actions.
#
# Usage in a tunmon script line:  ping.sh [-c COUNT] [-W SECONDS] [TARGET]
# tunmon appends the device and the silent seconds, so it runs
#   ping.sh [-c COUNT] [-W SECONDS] [TARGET] DEVICE SILENT
# TARGET defaults to $TUNMON_TARGET (the device's probe target in the config);
# an address with a ':' is pinged with ping6. COUNT defaults to 3, SECONDS
# (busybox ping -W, the wait for an answer) to 2. The exit status is ping's:
# 0 if any answer came back.

usage() {
	echo "usage: ping.sh [-c COUNT] [-W SECONDS] [TARGET] DEVICE SILENT" >&2
	exit 2
}

count=3
wait=2
while getopts c:W: opt; do
	case "$opt" in
	c) count="$OPTARG" ;;
	W) wait="$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))

target="$TUNMON_TARGET"
if [ $# = 3 ]; then
	target="$1"
	shift
fi
[ $# = 2 ] || usage
dev="$1"

[ -n "$target" ] || {
	echo "ping.sh: no target for $dev: set the device's target or name one: ping.sh TARGET" >&2
	exit 2
}

case "$target" in
*:*) ping=ping6 ;;
*) ping=ping ;;
esac
exec $ping -q -c "$count" -W "$wait" -I "$dev" "$target"
