#!/bin/sh
# A PostgreSQL 15 primary, two streaming replicas and (optionally) redis for
# sluice's tests and demo, all on 127.0.0.1 and all under CLUSTER_DIR.
#
#   cluster.sh start [--redis] | stop | status
#   cluster.sh restart-primary | stop-primary | start-primary
#
# Env: CLUSTER_DIR (/tmp/sluice-cluster), CLUSTER_PORT (54320; replicas +1, +2),
#      CLUSTER_REDIS=1 (same as --redis), CLUSTER_REDIS_PORT (63790).
# Layout: CLUSTER_DIR/{primary,replica1,replica2}/ hold data/, postgres.log and
# the unix socket; CLUSTER_DIR/redis/ holds redis.conf, redis.pid, redis.log.
# Once created with redis, `start` always starts redis too.
# Users (password = name + "_pw", except sluice/sluice): trust_user (trust),
# md5_user (md5, stored as md5), scram_user (scram-sha-256), plain_user
# (password, i.e. cleartext), sluice (scram, superuser), postgres (trust).
# Only processes started here are stopped, by their data dir or pid file.
set -eu

PGBIN=/usr/lib/postgresql/15/bin
PGUSER_OS=postgres
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/sluice-cluster}
CLUSTER_PORT=${CLUSTER_PORT:-54320}
CLUSTER_REDIS=${CLUSTER_REDIS:-0}
CLUSTER_REDIS_PORT=${CLUSTER_REDIS_PORT:-63790}
case $CLUSTER_DIR in /*) ;; *) CLUSTER_DIR=$(pwd)/$CLUSTER_DIR ;; esac

die() { echo "cluster.sh: $*" >&2; exit 1; }

# Run a command as the postgres OS user (PostgreSQL refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u "$PGUSER_OS" -- "$@")
    else
        (cd / && "$@")
    fi
}

port_of() {
    case $1 in
        primary) echo "$CLUSTER_PORT" ;;
        replica1) echo $((CLUSTER_PORT + 1)) ;;
        replica2) echo $((CLUSTER_PORT + 2)) ;;
    esac
}

psql_primary() {
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$CLUSTER_PORT" -U postgres "$@"
}

pg_running() { [ -f "$CLUSTER_DIR/$1/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" status -D "$CLUSTER_DIR/$1/data" >/dev/null 2>&1; }

pg_start() {
    name=$1
    if pg_running "$name"; then
        return 0
    fi
    as_pg "$PGBIN/pg_ctl" start -w -t 60 -D "$CLUSTER_DIR/$name/data" \
        -l "$CLUSTER_DIR/$name/postgres.log" >/dev/null ||
        { tail -n 20 "$CLUSTER_DIR/$name/postgres.log" >&2; die "$name did not start"; }
}

pg_stop() {
    if pg_running "$1"; then
        as_pg "$PGBIN/pg_ctl" stop -w -t 60 -m fast -D "$CLUSTER_DIR/$1/data" >/dev/null
    fi
}

prepare_dir() {
    mkdir -p "$1"
    if [ "$(id -u)" = 0 ]; then
        chown "$PGUSER_OS:" "$1"
    fi
}

init_primary() {
    dir=$CLUSTER_DIR/primary
    prepare_dir "$dir"
    as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C --no-sync >/dev/null
    # Settings common to all instances (replicas copy this file).
    cat >>"$dir/data/postgresql.conf" <<EOF

# sluice test cluster
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_retrieve_retry_interval = 1s
password_encryption = 'scram-sha-256'
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    # Per-instance settings come last so they win.
    printf "port = %s\nunix_socket_directories = '%s'\n" "$CLUSTER_PORT" "$dir" \
        >>"$dir/data/postgresql.conf"
    # First match wins: per-user methods before the catch-all.
    cat >"$dir/data/pg_hba.conf" <<EOF
local   all          all                         trust
host    replication  postgres    127.0.0.1/32    trust
host    all          postgres    127.0.0.1/32    trust
host    all          trust_user  127.0.0.1/32    trust
host    all          md5_user    127.0.0.1/32    md5
host    all          scram_user  127.0.0.1/32    scram-sha-256
host    all          plain_user  127.0.0.1/32    password
host    all          sluice      127.0.0.1/32    scram-sha-256
host    all          all         127.0.0.1/32    scram-sha-256
EOF
    pg_start primary
    psql_primary -d postgres >/dev/null <<'EOF'
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN PASSWORD 'md5_user_pw';
SET password_encryption = 'scram-sha-256';
CREATE ROLE trust_user LOGIN PASSWORD 'trust_user_pw';
CREATE ROLE scram_user LOGIN PASSWORD 'scram_user_pw';
CREATE ROLE plain_user LOGIN PASSWORD 'plain_user_pw';
CREATE ROLE sluice LOGIN SUPERUSER PASSWORD 'sluice';
CREATE DATABASE mydb;
\c mydb
GRANT CREATE ON SCHEMA public TO PUBLIC;
EOF
}

init_replica() {
    name=$1
    dir=$CLUSTER_DIR/$name
    slot=${name}_slot
    prepare_dir "$dir"
    # A slot may survive a half-finished earlier attempt.
    psql_primary -d postgres -c "SELECT pg_drop_replication_slot(slot_name)
        FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
    as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$CLUSTER_PORT" -U postgres \
        -D "$dir/data" -R -X stream -C -S "$slot" -c fast --no-sync
    printf "port = %s\nunix_socket_directories = '%s'\n" "$(port_of "$name")" "$dir" \
        >>"$dir/data/postgresql.conf"
}

wait_streaming() {
    want=$1
    i=0
    while [ $i -lt 150 ]; do
        n=$(psql_primary -d postgres -At -c \
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        [ "$n" -ge "$want" ] && return 0
        sleep 0.2
        i=$((i + 1))
    done
    echo "cluster.sh: warning: only $n of $want replicas streaming" >&2
}

redis_pid() {
    pid=$(cat "$CLUSTER_DIR/redis/redis.pid" 2>/dev/null) || return 1
    # Guard against a recycled pid.
    [ -n "$pid" ] && grep -q redis "/proc/$pid/comm" 2>/dev/null && echo "$pid"
}

redis_start() {
    dir=$CLUSTER_DIR/redis
    redis_pid >/dev/null && return 0
    prepare_dir "$dir"
    cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port $CLUSTER_REDIS_PORT
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
EOF
    as_pg redis-server "$dir/redis.conf"
    i=0
    until [ "$(redis-cli -p "$CLUSTER_REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
        i=$((i + 1))
        [ $i -lt 100 ] || die "redis did not start (see $dir/redis.log)"
        sleep 0.1
    done
}

redis_stop() {
    pid=$(redis_pid) || return 0
    kill "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || die "redis (pid $pid) did not stop"
        sleep 0.1
    done
}

want_redis() { [ "$CLUSTER_REDIS" = 1 ] || [ -d "$CLUSTER_DIR/redis" ]; }

cmd_start() {
    prepare_dir "$CLUSTER_DIR"
    if [ -d "$CLUSTER_DIR/primary/data" ]; then
        pg_start primary
    else
        init_primary
    fi
    for r in replica1 replica2; do
        [ -d "$CLUSTER_DIR/$r/data" ] || init_replica "$r"
        pg_start "$r"
    done
    wait_streaming 2
    if want_redis; then
        redis_start
    fi
}

cmd_stop() {
    redis_stop
    for n in replica1 replica2 primary; do
        [ -d "$CLUSTER_DIR/$n/data" ] && pg_stop "$n"
    done
    return 0
}

cmd_status() {
    rc=0
    for n in primary replica1 replica2; do
        data=$CLUSTER_DIR/$n/data
        role=primary
        [ -f "$data/standby.signal" ] && role=replica
        if pg_running "$n"; then
            pid=$(head -n 1 "$data/postmaster.pid")
            state=running
        else
            pid=-
            state=stopped
            rc=1
        fi
        printf '%-8s port=%s pid=%s role=%s %s\n' "$n" "$(port_of "$n")" "$pid" "$role" "$state"
    done
    if want_redis; then
        if pid=$(redis_pid); then state=running; else pid=- state=stopped rc=1; fi
        printf '%-8s port=%s pid=%s role=cache %s\n' redis "$CLUSTER_REDIS_PORT" "$pid" "$state"
    fi
    return $rc
}

[ $# -ge 1 ] || die "usage: cluster.sh start [--redis] | stop | status | restart-primary | stop-primary | start-primary"
cmd=$1
shift
for a in "$@"; do
    case $a in
        --redis) CLUSTER_REDIS=1 ;;
        *) die "unknown argument: $a" ;;
    esac
done
case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    stop-primary) pg_stop primary ;;
    start-primary) pg_start primary ;;
    restart-primary) pg_stop primary && pg_start primary ;;
    *) die "unknown command: $cmd" ;;
esac
