#!/bin/sh
# log.sh: write one syslog line (tag tunmon) for any tunmon event.
#
# Usage in a tunmon script line:  log.sh [TEXT...]
# tunmon appends the device and the silent seconds, so it runs
#   log.sh [TEXT...] DEVICE SILENT
# and for post_restore_any the restored devices instead (as in $TUNMON_DEVICE):
#   log.sh [TEXT...] DEVICE...
# The line tells the event ($TUNMON_EVENT), the device, the silence and the
# step ($TUNMON_STEP), followed by TEXT, e.g.
#   log.sh he.net tunnel  ->  "action 2: 6in4-wan6 silent for 60s: he.net tunnel"

appended=2
if [ "$TUNMON_EVENT" = post_restore_any ]; then
	appended=0
	set -f	# interface names may hold * ? [
	for dev in $TUNMON_DEVICE; do
		appended=$((appended + 1))
	done
fi
text=
while [ $# -gt $appended ]; do
	text="$text${text:+ }$1"
	shift
done
[ $# = $appended ] && [ $# -gt 0 ] || {
	echo "usage: log.sh [TEXT...] DEVICE SILENT (post_restore_any: DEVICE...)" >&2
	exit 2
}
dev="$1"
silent="$2"

case "$TUNMON_EVENT" in
action|retry) prio=warn; line="$TUNMON_EVENT $TUNMON_STEP: $dev silent for ${silent}s" ;;
restore) prio=notice; line="restore: $dev has traffic again after ${silent}s silent" ;;
post_restore_any)
	prio=notice
	line="post_restore_any: traffic again on $*, the longest silent ${TUNMON_SILENT}s"
	;;
*) prio=notice; line="${TUNMON_EVENT:-event}: device $dev, ${silent}s silent" ;;
esac
logger -t tunmon -p "daemon.$prio" "$line${text:+: $text}"
