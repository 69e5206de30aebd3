# Stand-in for /lib/functions/procd.sh: every procd_* call an init script
# makes becomes one line in $TEST_ROOT/procd.log, the call's name and its
# arguments separated by tabs.

procd_record() {
	printf '%s' "$1"
	shift
	for arg in "$@"; do
		printf '\t%s' "$arg"
	done
	printf '\n'
} >>"$TEST_ROOT/procd.log"

procd_open_service() { procd_record open_service "$@"; }
procd_close_service() { procd_record close_service "$@"; }
procd_open_instance() { procd_record open_instance "$@"; }
procd_set_param() { procd_record set_param "$@"; }
procd_append_param() { procd_record append_param "$@"; }
procd_close_instance() { procd_record close_instance "$@"; }
procd_add_reload_trigger() { procd_record reload_trigger "$@"; }
