#!/bin/sh
# ifup.sh: restart the OpenWrt logical interface that owns a watched device.
#
# Usage in a tunmon script line:  ifup.sh [INTERFACE]
# tunmon appends the device and the silent seconds, so it runs
#   ifup.sh [INTERFACE] DEVICE SILENT
# Without INTERFACE the owner is found by asking netifd which interface has the
# device as its layer 3 device, else by netifd's device naming: 6in4-wan6,
# gre4-gre, 6rd-x, ... belong to the section after the dash; a WireGuard
# device is named like its section. Name INTERFACE when neither applies (e.g.
# an OpenVPN tun0 whose interface is down: netifd then shows no device for it).

usage() {
	echo "usage: ifup.sh [INTERFACE] DEVICE SILENT" >&2
	exit 2
}

# is_interface <name>: netifd knows a logical interface <name> (up or down).
is_interface() {
	ubus -S list "network.interface.$1" >/dev/null 2>&1
}

iface=
if [ $# = 3 ]; then
	iface="$1"
	shift
fi
[ $# = 2 ] || usage
dev="$1"
silent="$2"

[ -n "$iface" ] || iface="$(ubus call network.interface dump 2>/dev/null |
	jsonfilter -e "@.interface[@.l3_device='$dev'].interface" 2>/dev/null | head -n 1)"
if [ -z "$iface" ]; then
	for name in "${dev#*-}" "$dev"; do
		is_interface "$name" && { iface="$name"; break; }
	done
fi

[ -n "$iface" ] || {
	logger -s -t tunmon -p daemon.err "ifup.sh: no interface owns $dev: name one: ifup.sh INTERFACE"
	exit 1
}
logger -t tunmon -p daemon.notice "ifup.sh: ifup $iface ($dev silent for ${silent}s)"
exec ifup "$iface"
