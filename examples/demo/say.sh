#!/bin/sh
# Demo script: prints what tunmon asked for.  $1 is the message, then tunmon's arguments.
message=$1
shift
echo ">>> $message $* (event $TUNMON_EVENT, step $TUNMON_STEP, silent ${TUNMON_SILENT}s)"
