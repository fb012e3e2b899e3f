#!/bin/sh
# `make demo`: the test cluster plus sluice in front of it, with etc/sluice.ini.
#   demo.sh start | stop
# Env: SLUICE_BIN (build/release/sluice), CLUSTER_DIR (/tmp/sluice-cluster).
# sluice runs in the background from etc/ (so the ini's relative paths resolve
# there), as the postgres OS user when started by root; its pid file and log
# are CLUSTER_DIR/sluice.pid and CLUSTER_DIR/sluice.log.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$REPO/build/release/sluice}
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/sluice-cluster}
export CLUSTER_DIR
unset CLUSTER_PORT # etc/sluice.ini expects the default ports
PIDFILE=$CLUSTER_DIR/sluice.pid
LOG=$CLUSTER_DIR/sluice.log
INI=$REPO/etc/sluice.ini
PORT=$(sed -n 's/^listen_port *= *\([0-9]*\).*/\1/p' "$INI")
CONNECT="host=127.0.0.1 port=$PORT dbname=mydb user=md5_user password=md5_user_pw"

die() { echo "demo.sh: $*" >&2; exit 1; }

# The pid in PIDFILE, if that process is still our pooler.
sluice_pid() {
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "sluice.ini" &&
        echo "$pid"
}

print_usage() {
    cat <<EOF
sluice is running (pid $1, log $LOG). Connect with:
  psql "$CONNECT"
Admin console:
  psql "host=127.0.0.1 port=$PORT dbname=pgbouncer user=sluice password=sluice" -c "SHOW POOLS"
Other users: trust_user, scram_user, plain_user (password: name + _pw).
Stop with: make demo-stop
EOF
}

start() {
    [ -x "$SLUICE_BIN" ] || die "$SLUICE_BIN not found; run make first"
    sh "$REPO/scripts/cluster.sh" start
    if pid=$(sluice_pid); then
        print_usage "$pid"
        return 0
    fi
    echo "--- demo.sh start $(date)" >>"$LOG"
    run_as=""
    if [ "$(id -u)" = 0 ]; then
        # Like PgBouncer, sluice is not run as root. setpriv execs (no fork).
        run_as="setpriv --reuid=postgres --regid=postgres --init-groups"
        touch "$LOG"
        chown postgres: "$LOG"
        rm -f "$PIDFILE"
    fi
    # The inner shell writes its own pid, then becomes sluice.
    cd "$REPO/etc"
    # shellcheck disable=SC2086,SC2016
    setsid $run_as sh -c 'echo $$ >"$0"; ulimit -n 20000 2>/dev/null; exec "$@"' \
        "$PIDFILE" "$SLUICE_BIN" "$INI" >>"$LOG" 2>&1 </dev/null &
    i=0
    until pg_isready -q -h 127.0.0.1 -p "$PORT" -U md5_user -d mydb; do
        i=$((i + 1))
        if [ $i -ge 100 ] || ! kill -0 $! 2>/dev/null; then
            tail -n 20 "$LOG" >&2
            die "sluice did not start (log: $LOG)"
        fi
        sleep 0.1
    done
    psql -X -q -At "$CONNECT" -c "SELECT 1" >/dev/null ||
        die "sluice listens on $PORT but a query through it failed (log: $LOG)"
    print_usage "$(sluice_pid)"
}

stop() {
    if pid=$(sluice_pid); then
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -ge 100 ]; then
                echo "demo.sh: sluice (pid $pid) ignored SIGTERM; killing it" >&2
                kill -9 "$pid"
                break
            fi
            sleep 0.1
        done
        echo "sluice stopped"
    fi
    rm -f "$PIDFILE"
    sh "$REPO/scripts/cluster.sh" stop
    echo "cluster stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    *) die "usage: demo.sh start|stop" ;;
esac
