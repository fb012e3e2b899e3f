#!/bin/sh
# `make demo`: the test cluster plus sluice in front of it, with etc/sluice.ini.
#   demo.sh start | stop | check
# Env: SLUICE_BIN (build/release/sluice), CLUSTER_DIR (/tmp/sluice-cluster),
#      DEMO_PORT (6432): sluice's port, DEMO_METRICS_PORT (9127): its
#      metrics_listen port (/metrics and the status page),
#      CLUSTER_PORT (54320; replicas +1, +2; or auto): see scripts/cluster.sh.
# `check` (make demo runs it before it builds anything; start runs it again)
# changes nothing: if a port the demo needs is taken, it fails with the port,
# the process that holds it (ss -ltnp) and the variable that moves it.
# sluice runs with CLUSTER_DIR/sluice.ini: etc/sluice.ini with DEMO_PORT and
# the cluster's ports put in. It runs in the background from etc/ (so the
# ini's relative paths resolve there), as the postgres OS user when started
# by root; its pid file and log are CLUSTER_DIR/sluice.pid and
# CLUSTER_DIR/sluice.log.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/ports.sh
. "$REPO/scripts/ports.sh"
SLUICE_BIN=${SLUICE_BIN:-$REPO/build/release/sluice}
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/sluice-cluster}
case $CLUSTER_DIR in /*) ;; *) CLUSTER_DIR=$(pwd)/$CLUSTER_DIR ;; esac
export CLUSTER_DIR
DEMO_PORT=${DEMO_PORT:-6432}
DEMO_METRICS_PORT=${DEMO_METRICS_PORT:-9127}
PIDFILE=$CLUSTER_DIR/sluice.pid
LOG=$CLUSTER_DIR/sluice.log
TEMPLATE=$REPO/etc/sluice.ini
INI=$CLUSTER_DIR/sluice.ini

die() { echo "demo.sh: $*" >&2; exit 1; }

case $DEMO_PORT in
    '' | *[!0-9]*) die "DEMO_PORT must be a port number, not '$DEMO_PORT'" ;;
esac
case $DEMO_METRICS_PORT in
    '' | *[!0-9]*) die "DEMO_METRICS_PORT must be a port number, not '$DEMO_METRICS_PORT'" ;;
esac

# The pid in PIDFILE, if that process is still our pooler.
sluice_pid() {
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "sluice.ini" &&
        echo "$pid"
}

# sluice's port in the generated ini (the template's before there is one).
ini_port() {
    f=$INI
    [ -f "$f" ] || f=$TEMPLATE
    sed -n 's/^listen_port *= *\([0-9]*\).*/\1/p' "$f"
}

# Its metrics_listen port, likewise.
ini_metrics_port() {
    f=$INI
    [ -f "$f" ] || f=$TEMPLATE
    sed -n 's/^metrics_listen *= *127\.0\.0\.1:\([0-9]*\).*/\1/p' "$f"
}

connect_string() {
    echo "host=127.0.0.1 port=$(ini_port) dbname=mydb user=md5_user password=md5_user_pw"
}

print_usage() {
    cat <<EOF
sluice is running (pid $1, log $LOG). Connect with:
  psql "$(connect_string)"
Admin console:
  psql "host=127.0.0.1 port=$(ini_port) dbname=pgbouncer user=sluice password=sluice" -c "SHOW POOLS"
Reads go to the two replicas, writes to the primary (read_write_split = on):
  psql "$(connect_string)" -c "SELECT inet_server_port()"   # a replica's port
  psql "host=127.0.0.1 port=$(ini_port) dbname=pgbouncer user=sluice password=sluice" -c "SHOW REPLICAS"
Metrics and the status page:
  curl -s http://127.0.0.1:$(ini_metrics_port)/metrics | grep sluice_pool   # and http://127.0.0.1:$(ini_metrics_port)/ in a browser
Other users: trust_user, scram_user, plain_user (password: name + _pw).
Cluster ports: $(tr '\n' ' ' <"$CLUSTER_DIR/ports")(CLUSTER_DIR=$CLUSTER_DIR)
Stop with: make demo-stop
EOF
}

# Every port the demo would take, before anything starts: sluice's (unless
# the demo's sluice already runs) and the cluster's (cluster.sh check).
check() {
    errors=""
    if ! sluice_pid >/dev/null && port_taken "$DEMO_PORT"; then
        errors="port $DEMO_PORT (sluice) is taken by $(port_holder "$DEMO_PORT"); set DEMO_PORT to another port, e.g. make demo DEMO_PORT=$((DEMO_PORT + 1))"
    fi
    if ! sluice_pid >/dev/null && port_taken "$DEMO_METRICS_PORT"; then
        errors="$errors${errors:+
}port $DEMO_METRICS_PORT (sluice's metrics) is taken by $(port_holder "$DEMO_METRICS_PORT"); set DEMO_METRICS_PORT to another port, e.g. make demo DEMO_METRICS_PORT=$((DEMO_METRICS_PORT + 1))"
    fi
    if ! cluster=$(sh "$REPO/scripts/cluster.sh" check 2>&1); then
        errors="$errors${errors:+
}$cluster"
    fi
    [ -z "$errors" ] || die "$errors"
}

# etc/sluice.ini with DEMO_PORT and the ports cluster.sh chose.
write_ini() {
    primary=$(sed -n 's/^primary=//p' "$CLUSTER_DIR/ports")
    replica1=$(sed -n 's/^replica1=//p' "$CLUSTER_DIR/ports")
    replica2=$(sed -n 's/^replica2=//p' "$CLUSTER_DIR/ports")
    {
        echo "; Written by scripts/demo.sh: $TEMPLATE with DEMO_PORT and the cluster's ports."
        sed -e "s/^listen_port = 6432\$/listen_port = $DEMO_PORT/" -e "s/-p 6432 /-p $DEMO_PORT /" \
            -e "s/^metrics_listen = 127.0.0.1:9127\$/metrics_listen = 127.0.0.1:$DEMO_METRICS_PORT/" \
            -e "s/port=54320 /port=$primary /g" -e "s/127.0.0.1:54321/127.0.0.1:$replica1/g" \
            -e "s/127.0.0.1:54322/127.0.0.1:$replica2/g" "$TEMPLATE"
    } >"$INI.new"
    if ! grep -q "^listen_port = $DEMO_PORT\$" "$INI.new" || ! grep -q "port=$primary " "$INI.new"; then
        die "$TEMPLATE no longer has 'listen_port = 6432' and 'port=54320 ': update write_ini"
    fi
    mv "$INI.new" "$INI"
}

start() {
    [ -x "$SLUICE_BIN" ] || die "$SLUICE_BIN not found; run make first"
    check
    sh "$REPO/scripts/cluster.sh" start
    if pid=$(sluice_pid); then
        print_usage "$pid"
        return 0
    fi
    write_ini
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
    until pg_isready -q -h 127.0.0.1 -p "$DEMO_PORT" -U md5_user -d mydb; do
        i=$((i + 1))
        if [ $i -ge 100 ] || ! kill -0 $! 2>/dev/null; then
            tail -n 20 "$LOG" >&2
            die "sluice did not start (log: $LOG)"
        fi
        sleep 0.1
    done
    psql -X -q -At "$(connect_string)" -c "SELECT 1" >/dev/null ||
        die "sluice listens on $DEMO_PORT but a query through it failed (log: $LOG)"
    print_usage "$(sluice_pid)"
}

stop() {
    if pid=$(sluice_pid); then
        # SIGQUIT: exit at once (SIGTERM would wait for connected clients).
        kill -QUIT "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -ge 100 ]; then
                echo "demo.sh: sluice (pid $pid) ignored SIGQUIT; killing it" >&2
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
    check) check ;;
    *) die "usage: demo.sh start|stop|check" ;;
esac
