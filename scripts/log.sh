#!/bin/sh
# log.sh: write one syslog line (tag tunmon) for any tunmon event.
#
# Usage in a tunmon script line:  log.sh [TEXT...]
# tunmon appends the device and the silent seconds, so it runs
#   log.sh [TEXT...] DEVICE SILENT
# The line tells the event ($TUNMON_EVENT), the device, the silence and the
# step ($TUNMON_STEP), followed by TEXT, e.g.
#   log.sh he.net tunnel  ->  "action 2: 6in4-wan6 silent for 60s: he.net tunnel"

text=
while [ $# -gt 2 ]; do
	text="$text${text:+ }$1"
	shift
done
[ $# = 2 ] || {
	echo "usage: log.sh [TEXT...] DEVICE SILENT" >&2
	exit 2
}
dev="$1"
silent="$2"

case "$TUNMON_EVENT" in
action|retry) prio=warn; line="$TUNMON_EVENT $TUNMON_STEP: $dev silent for ${silent}s" ;;
restore) prio=notice; line="restore: $dev has traffic again after ${silent}s silent" ;;
*) prio=notice; line="${TUNMON_EVENT:-event}: device ${dev:-none}, ${silent}s silent" ;;
esac
logger -t tunmon -p "daemon.$prio" "$line${text:+: $text}"
