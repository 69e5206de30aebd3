# Stand-in for /lib/functions.sh: config_load, config_get, config_get_bool.
# Like the real one (through uci_load) config_load evaluates the output of
# `uci export` with config/option/list defined as shell functions, and the
# values land in CONFIG_<section>_<option> variables.

package() {
	:
}

config() {
	CONFIG_NUM=$((${CONFIG_NUM:-0} + 1))
	CONFIG_SECTION="${2:-cfg$CONFIG_NUM}"
	eval "CONFIG_${CONFIG_SECTION}_TYPE=\$1"
}

option() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\$2"
}

list() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\"\${CONFIG_${CONFIG_SECTION}_$1:+\$CONFIG_${CONFIG_SECTION}_$1 }\$2\""
}

config_load() {
	eval "$(uci -q -S export "$1")"
}

# config_get <variable> <section> <option> [<default>]
config_get() {
	eval "$1=\${CONFIG_$2_$3:-\$4}"
}

# config_get_bool <variable> <section> <option> [<default>]
config_get_bool() {
	local _v

	config_get _v "$2" "$3" "$4"
	case "$_v" in
	1|on|true|yes|enabled) _v=1 ;;
	0|off|false|no|disabled) _v=0 ;;
	*) _v="$4" ;;
	esac
	eval "$1=\$_v"
}
