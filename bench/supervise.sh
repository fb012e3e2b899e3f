# bench/supervise.sh - sourced by bench/run.sh and bench/profile.sh.
#
# bench_supervise NAME SCRIPT: runs the Python SCRIPT (which stops what it
# started on exit, error or signal) as root. It runs in the background so
# that a signal to the calling shell is acted on at once and passed on to
# it; `SCRIPT --cleanup` is the backstop if SCRIPT itself is killed: it stops,
# by the PIDs recorded in its state file, whatever is still running. Exits
# with SCRIPT's status.
bench_supervise() {
    _name=$1
    _script=$2
    if [ "$(id -u)" != 0 ]; then
        echo "$_name: run as root (PostgreSQL and the poolers run as user postgres via runuser)" >&2
        exit 1
    fi
    trap '/usr/bin/python3 "$_script" --cleanup || true' EXIT
    /usr/bin/python3 "$_script" &
    _pid=$!
    trap 'kill -TERM $_pid 2>/dev/null || true' INT TERM HUP
    _rc=0
    wait $_pid || _rc=$?
    while kill -0 $_pid 2>/dev/null; do
        _rc=0
        wait $_pid || _rc=$?
    done
    exit $_rc
}
