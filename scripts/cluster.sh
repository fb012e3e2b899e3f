#!/bin/sh
# A PostgreSQL 15 primary, two streaming replicas and (optionally) redis for
# sluice's tests and demo, all on 127.0.0.1 and all under CLUSTER_DIR.
#
#   cluster.sh start [--redis] | stop | status | ports | check
#   cluster.sh restart-primary | stop-primary | start-primary
#   cluster.sh stop-node NAME [fast|immediate] | start-node NAME | promote NAME
#
#   cluster.sh follow NAME LEADER
#
# For tests of failover: promote NAME runs pg_ctl promote on a replica (it
# leaves recovery, on a new timeline; `status` then says role=primary, as its
# standby.signal is gone); follow NAME LEADER restarts NAME as a replica of
# LEADER (an old primary after a switchover; without a replication slot).
# The other replicas keep streaming from whom they did. A cluster is not put
# back the way it was: tests that promote use a cluster of their own and
# delete it afterwards (tests/integration/sluice_fixture.py, ThrowawayCluster).
#
# Env: CLUSTER_DIR (/tmp/sluice-cluster)
#      CLUSTER_PORT (54320): the primary's port, the replicas take the next
#        two; or "auto": each node keeps the port it had while that is free,
#        else (and on the first start) gets a free one in 20000-26999
#      CLUSTER_REDIS=1 (same as --redis), CLUSTER_REDIS_PORT (63790, or auto)
#      CLUSTER_STOP_AFTER=STEP (for tests): the script kills itself (SIGKILL)
#        right after that step of a first start; the steps, in order:
#        primary-initdb, primary-config, primary-started, primary-roles,
#        primary-complete, then for replica1 and for replica2:
#        <name>-basebackup, <name>-complete, <name>-started; redis-started
#
# Ports: `start` checks every port before it changes anything. A fixed port
# that another process listens on stops it with an error that names the port,
# the process (from ss -ltnp) and the variable that moves it; with auto it
# picks another port (again if a port is taken between the check and the
# server's bind). `start` writes the ports in use to CLUSTER_DIR/ports, one
# "node=port" line each (primary, replica1, replica2, redis); `ports` prints
# that file, `check` prints the ports a start would use (or the error) and
# changes nothing.
#
# Layout: CLUSTER_DIR/{primary,replica1,replica2}/ hold data/, node.conf,
# postgres.log, the unix socket and the marker file "complete". node.conf
# holds the node's port, socket directory and, for a replica, how it reaches
# the primary; data/postgresql.conf includes it and every start rewrites it.
# A node's setup writes "complete" as its very last step: `start` removes a
# node directory without it (a setup that died half-way) and builds the node
# again, saying so on stderr; a primary built again takes its replicas along.
# CLUSTER_DIR/redis/ holds redis.conf, redis.pid, redis.log. Once created with
# redis, `start` always starts redis too. start, stop and the *-primary
# commands hold CLUSTER_DIR/.lock (flock), so that two never overlap.
#
# Users (password = name + "_pw", except sluice/sluice): trust_user (trust),
# md5_user (md5, stored as md5), scram_user (scram-sha-256), plain_user
# (password, i.e. cleartext), sluice (scram, superuser), postgres (trust).
# Only processes started here are stopped, by their data dir or pid file.
set -eu

# shellcheck source=scripts/ports.sh
. "$(cd "$(dirname "$0")" && pwd)/ports.sh"

PGBIN=/usr/lib/postgresql/15/bin
PGUSER_OS=postgres
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/sluice-cluster}
CLUSTER_PORT=${CLUSTER_PORT:-54320}
CLUSTER_REDIS=${CLUSTER_REDIS:-0}
CLUSTER_REDIS_PORT=${CLUSTER_REDIS_PORT:-63790}
CLUSTER_STOP_AFTER=${CLUSTER_STOP_AFTER:-}
case $CLUSTER_DIR in /*) ;; *) CLUSTER_DIR=$(pwd)/$CLUSTER_DIR ;; esac
NODES="primary replica1 replica2"
# Set by `start`: a node whose port is taken as it starts may move (auto).
MOVE_PORTS=0

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

check_setting() {
    case $2 in
        auto) ;;
        '' | *[!0-9]*) die "$1 must be a port number or auto, not '$2'" ;;
        *) if [ "$2" -lt 1 ] || [ "$2" -gt 65533 ]; then die "$1=$2 is out of range"; fi ;;
    esac
}
check_setting CLUSTER_PORT "$CLUSTER_PORT"
check_setting CLUSTER_REDIS_PORT "$CLUSTER_REDIS_PORT"

# CLUSTER_STOP_AFTER: end here as abruptly as a killed script would.
step() {
    [ "$CLUSTER_STOP_AFTER" = "$1" ] || return 0
    say "killing itself after step $1 (CLUSTER_STOP_AFTER)"
    kill -KILL $$
}

# Run a command as the postgres OS user (PostgreSQL refuses root). The lock's
# descriptor stays here: a server started now must not hold the lock.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u "$PGUSER_OS" -- "$@" 9>&-)
    else
        (cd / && "$@" 9>&-)
    fi
}

lock() {
    exec 9>>"$CLUSTER_DIR/.lock"
    flock -w 600 9 || die "another cluster.sh kept $CLUSTER_DIR/.lock for 10 minutes"
}

# The port chosen for a node (primary, replica1, replica2, redis).
port_of() { eval "echo \${PORT_$1:-}"; }
set_port() { eval "PORT_$1=\$2"; }
chosen_ports() { for n in $NODES redis; do port_of "$n"; done | tr '\n' ' '; }

# The port a node was last configured with (node.conf or redis.conf; for a
# cluster made before node.conf, postgresql.conf's last port line); empty if
# it has none.
recorded_port() {
    case $1 in
        redis) f=$CLUSTER_DIR/redis/redis.conf re='s/^port \([0-9][0-9]*\).*/\1/p' ;;
        *) f=$CLUSTER_DIR/$1/node.conf re='s/^port = \([0-9][0-9]*\).*/\1/p'
           [ -f "$f" ] || f=$CLUSTER_DIR/$1/data/postgresql.conf ;;
    esac
    if [ -f "$f" ]; then
        sed -n "$re" "$f" | tail -n 1
    fi
}

fixed_port() {
    case $1 in
        primary) echo "$CLUSTER_PORT" ;;
        replica1) echo $((CLUSTER_PORT + 1)) ;;
        replica2) echo $((CLUSTER_PORT + 2)) ;;
        redis) echo "$CLUSTER_REDIS_PORT" ;;
    esac
}

psql_primary() {
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of primary)" -U postgres "$@"
}

pg_running() { [ -f "$CLUSTER_DIR/$1/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" status -D "$CLUSTER_DIR/$1/data" >/dev/null 2>&1; }

node_running() {
    if [ "$1" = redis ]; then redis_pid >/dev/null; else pg_running "$1"; fi
}

want_redis() { [ "$CLUSTER_REDIS" = 1 ] || [ -d "$CLUSTER_DIR/redis" ]; }

# Choose every node's port, changing nothing yet. Fixed ports: a running node
# must already have its port, any other port must be free, else stop with
# every taken port named. auto: a running node keeps its port, a stopped one
# its recorded port if that is free, else it gets a free one.
plan_ports() {
    errors=""
    for n in $NODES redis; do
        if [ "$n" = redis ]; then
            want_redis || continue
            var=CLUSTER_REDIS_PORT setting=$CLUSTER_REDIS_PORT
        else
            var=CLUSTER_PORT setting=$CLUSTER_PORT
        fi
        rec=$(recorded_port "$n")
        if [ "$setting" = auto ]; then
            taken=$(chosen_ports)
            if [ -n "$rec" ] && node_running "$n"; then
                p=$rec
            elif [ -n "$rec" ] && ! in_list "$rec" "$taken" && ! port_taken "$rec"; then
                p=$rec
            else
                p=$(pick_free_port "$taken") || die "no free port found for $n"
                if [ -n "$rec" ]; then
                    say "$n: its port $rec is taken by $(port_holder "$rec"); moving it to $p"
                fi
            fi
        else
            p=$(fixed_port "$n")
            what="port $p ($n"
            case $n in
                replica1) what="$what, $var + 1" ;;
                replica2) what="$what, $var + 2" ;;
            esac
            what="$what)"
            if node_running "$n"; then
                if [ "$p" != "$rec" ]; then
                    errors="$errors
  $n runs on port $rec, not on $what: stop the cluster first"
                    errors="$errors (CLUSTER_DIR=$CLUSTER_DIR sh $0 stop) to move it"
                fi
            elif port_taken "$p"; then
                errors="$errors
  $what is taken by $(port_holder "$p")"
                if [ "$n" = redis ]; then
                    errors="$errors; set CLUSTER_REDIS_PORT to another port, or to auto"
                else
                    errors="$errors; set CLUSTER_PORT to move the cluster (the replicas"
                    errors="$errors take the next two ports), or to auto"
                fi
            fi
        fi
        set_port "$n" "$p"
    done
    [ -z "$errors" ] || die "cannot start the cluster in $CLUSTER_DIR:$errors"
}

in_list() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }

write_ports_file() {
    {
        for n in $NODES; do
            echo "$n=$(port_of "$n")"
        done
        if want_redis; then
            echo "redis=$(port_of redis)"
        fi
    } >"$CLUSTER_DIR/ports.new"
    mv "$CLUSTER_DIR/ports.new" "$CLUSTER_DIR/ports"
}

# (Re)write a node's node.conf; NODE_CONF_CHANGED=1 if it changed.
# The node a node streams from: the file "leader" in its directory when there
# is one (written by promote, empty, and follow), else primary for the
# replicas and none for the primary.
leader_of() {
    if [ -f "$CLUSTER_DIR/$1/leader" ]; then
        cat "$CLUSTER_DIR/$1/leader"
    elif [ "$1" != primary ]; then
        echo primary
    fi
}

write_node_conf() {
    dir=$CLUSTER_DIR/$1
    leader=$(leader_of "$1")
    {
        echo "# Written by cluster.sh at every start; data/postgresql.conf includes it."
        printf "port = %s\nunix_socket_directories = '%s'\n" "$(port_of "$1")" "$dir"
        # Commits reach the standbys at once, as in production, which
        # read-your-writes tests rely on to see replicas catch up in
        # milliseconds (not at the WAL writer's next round, 200 ms later);
        # fsync = off keeps commits cheap. Here, not in postgresql.conf, so
        # that clusters made before (with it off there) get it too.
        echo "synchronous_commit = on"
        # The result cache's logical invalidation (cache_invalidation =
        # logical) decodes the primary's WAL; replicas stream physically
        # and need nothing, but one promoted keeps serving it. Here too,
        # so that clusters made before (wal_level = replica) get it.
        echo "wal_level = logical"
        if [ -n "$leader" ]; then
            printf "primary_conninfo = 'host=127.0.0.1 port=%s user=postgres application_name=%s'\n" \
                "$(port_of "$leader")" "$1"
            # A slot exists only on the original primary.
            if [ "$leader" = primary ] && [ ! -f "$dir/leader" ]; then
                printf "primary_slot_name = '%s_slot'\n" "$1"
            fi
        fi
    } >"$dir/node.conf.new"
    if cmp -s "$dir/node.conf.new" "$dir/node.conf"; then
        rm -f "$dir/node.conf.new"
        NODE_CONF_CHANGED=0
    else
        mv "$dir/node.conf.new" "$dir/node.conf"
        NODE_CONF_CHANGED=1
    fi
}

pg_start() {
    name=$1
    if pg_running "$name"; then
        return 0
    fi
    log=$CLUSTER_DIR/$name/postgres.log
    tries=0
    while :; do
        size=0
        [ ! -f "$log" ] || size=$(wc -c <"$log")
        if as_pg "$PGBIN/pg_ctl" start -w -t 60 -D "$CLUSTER_DIR/$name/data" -l "$log" >/dev/null; then
            return 0
        fi
        tries=$((tries + 1))
        if [ "$MOVE_PORTS" = 1 ] && [ "$CLUSTER_PORT" = auto ] && [ $tries -lt 5 ] &&
            tail -c +$((size + 1)) "$log" | grep -q "Address already in use"; then
            new=$(pick_free_port "$(chosen_ports)") || die "no free port for $name"
            say "$name: port $(port_of "$name") was taken as $name started; moving it to $new"
            set_port "$name" "$new"
            write_node_conf "$name"
            write_ports_file
            continue
        fi
        tail -n 20 "$log" >&2
        die "$name did not start (log: $log)"
    done
}

# pg_stop NAME [MODE]: MODE is pg_ctl's (fast by default; immediate is a
# crash as far as clients see it).
pg_stop() {
    if pg_running "$1"; then
        as_pg "$PGBIN/pg_ctl" stop -w -t 60 -m "${2:-fast}" -D "$CLUSTER_DIR/$1/data" >/dev/null
    fi
}

# One node by name, for tests of failures: stop-node NAME [fast|immediate],
# start-node NAME.
node_name() {
    case " $NODES " in
        *" $1 "*) ;;
        *) die "no node named '$1' (nodes: $NODES)" ;;
    esac
}
stop_node() {
    node_name "$1"
    case ${2:-fast} in
        fast | immediate) ;;
        *) die "stop-node: mode must be fast or immediate, not '$2'" ;;
    esac
    pg_stop "$1" "${2:-fast}"
}
start_node() {
    node_name "$1"
    pg_start "$1"
}
promote_node() {
    node_name "$1"
    pg_running "$1" || die "promote: $1 is not running"
    [ -f "$CLUSTER_DIR/$1/data/standby.signal" ] || die "promote: $1 is not a replica"
    as_pg "$PGBIN/pg_ctl" promote -w -t 60 -D "$CLUSTER_DIR/$1/data" >/dev/null
    : >"$CLUSTER_DIR/$1/leader"
}

# The ports of the last start (CLUSTER_DIR/ports), for commands other than
# start.
load_ports() {
    [ -f "$CLUSTER_DIR/ports" ] || die "no $CLUSTER_DIR/ports: the cluster was never started"
    while IFS== read -r n p; do
        set_port "$n" "$p"
    done <"$CLUSTER_DIR/ports"
}

# follow NAME LEADER: NAME (stopped, or stopped here) comes back as a replica
# of LEADER, e.g. an old primary after a switchover (it must have no WAL
# that LEADER lacks: a clean stop before LEADER was promoted).
follow_node() {
    node_name "$1"
    node_name "$2"
    [ "$1" != "$2" ] || die "follow: a node cannot follow itself"
    load_ports
    pg_stop "$1"
    echo "$2" >"$CLUSTER_DIR/$1/leader"
    as_pg touch "$CLUSTER_DIR/$1/data/standby.signal"
    write_node_conf "$1"
    pg_start "$1"
}

prepare_dir() {
    mkdir -p "$1"
    if [ "$(id -u)" = 0 ]; then
        chown "$PGUSER_OS:" "$1"
    fi
}

# Stop a node if it runs and delete its directory.
remove_node() {
    pg_stop "$1"
    rm -rf "${CLUSTER_DIR:?}/$1"
}

# Nodes whose setup never finished (no marker) are removed, to be built again.
heal() {
    for n in $NODES; do
        [ -d "$CLUSTER_DIR/$n" ] || continue
        if [ ! -f "$CLUSTER_DIR/$n/complete" ]; then
            say "$n: $CLUSTER_DIR/$n has no marker file 'complete' (its setup never" \
                "finished): removing it and building it again"
        elif [ "$n" != primary ] && [ ! -d "$CLUSTER_DIR/primary" ]; then
            say "$n: removing $CLUSTER_DIR/$n, since its primary is built again;" \
                "building it again"
        else
            continue
        fi
        remove_node "$n"
    done
}

init_primary() {
    dir=$CLUSTER_DIR/primary
    prepare_dir "$dir"
    as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C --no-sync >/dev/null
    step primary-initdb
    # Settings common to all instances (replicas copy this file); node.conf,
    # included last so it wins, holds what differs between them.
    cat >>"$dir/data/postgresql.conf" <<EOF

# sluice test cluster
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 32MB
fsync = off
full_page_writes = off
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_retrieve_retry_interval = 1s
password_encryption = 'scram-sha-256'
log_line_prefix = '%m [%p] %q%u@%d '
include = '../node.conf'
EOF
    write_node_conf primary
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
    step primary-config
    pg_start primary
    step primary-started
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
    step primary-roles
    touch "$dir/complete"
    step primary-complete
}

# A slot may survive a half-finished earlier attempt, and its walsender may
# not have noticed yet that its pg_basebackup died.
drop_slot() {
    i=0
    until psql_primary -d postgres \
        -c "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
            WHERE slot_name = '$1' AND active_pid IS NOT NULL" \
        -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
            WHERE slot_name = '$1'" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 50 ] || die "could not drop the replication slot $1"
        sleep 0.2
    done
}

init_replica() {
    name=$1
    dir=$CLUSTER_DIR/$name
    prepare_dir "$dir"
    drop_slot "${name}_slot"
    as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$(port_of primary)" -U postgres \
        -D "$dir/data" -X stream -C -S "${name}_slot" -c fast --no-sync
    step "$name-basebackup"
    as_pg touch "$dir/data/standby.signal"
    write_node_conf "$name"
    touch "$dir/complete"
    step "$name-complete"
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
    # Guard against a recycled pid: ours runs redis in CLUSTER_DIR/redis.
    [ -n "$pid" ] && grep -q redis "/proc/$pid/comm" 2>/dev/null &&
        [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(cd "$CLUSTER_DIR/redis" && pwd -P)" ] &&
        echo "$pid"
}

redis_start() {
    dir=$CLUSTER_DIR/redis
    redis_pid >/dev/null && return 0
    prepare_dir "$dir"
    tries=0
    while :; do
        port=$(port_of redis)
        cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
EOF
        size=0
        [ ! -f "$dir/redis.log" ] || size=$(wc -c <"$dir/redis.log")
        as_pg redis-server "$dir/redis.conf"
        i=0
        # Up once our redis (not some other) listens on the port and answers;
        # given up on if the port was taken.
        until pid=$(redis_pid) && port_pids "$port" | grep -qx "$pid" &&
            [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; do
            if tail -c +$((size + 1)) "$dir/redis.log" 2>/dev/null | grep -q "Address already in use"; then
                i=-1
                break
            fi
            i=$((i + 1))
            [ $i -lt 100 ] || die "redis did not start (see $dir/redis.log)"
            sleep 0.1
        done
        [ $i -lt 0 ] || return 0
        tries=$((tries + 1))
        if [ "$MOVE_PORTS" = 1 ] && [ "$CLUSTER_REDIS_PORT" = auto ] && [ $tries -lt 5 ]; then
            new=$(pick_free_port "$(chosen_ports)") || die "no free port for redis"
            say "redis: port $port was taken as redis started; moving it to $new"
            set_port redis "$new"
            write_ports_file
            continue
        fi
        die "redis could not listen on port $port (see $dir/redis.log)"
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

cmd_start() {
    prepare_dir "$CLUSTER_DIR"
    lock
    plan_ports
    heal
    write_ports_file
    MOVE_PORTS=1
    if [ -f "$CLUSTER_DIR/primary/complete" ]; then
        write_node_conf primary
        if [ "$NODE_CONF_CHANGED" = 1 ] && pg_running primary; then
            as_pg "$PGBIN/pg_ctl" reload -D "$CLUSTER_DIR/primary/data" >/dev/null
            # wal_level takes a restart: once, for a cluster made before
            # it was logical.
            if [ "$(psql_primary -d postgres -Atc 'SHOW wal_level' 2>/dev/null)" = replica ]; then
                say "primary: restarting it for wal_level = logical"
                as_pg "$PGBIN/pg_ctl" restart -w -t 60 -m fast -D "$CLUSTER_DIR/primary/data" \
                    -l "$CLUSTER_DIR/primary/postgres.log" >/dev/null
            fi
        fi
        pg_start primary
    else
        init_primary
    fi
    for r in replica1 replica2; do
        if [ -f "$CLUSTER_DIR/$r/complete" ]; then
            # The primary may have moved (auto ports): a replica that runs
            # rereads primary_conninfo on a reload.
            write_node_conf "$r"
            if [ "$NODE_CONF_CHANGED" = 1 ] && pg_running "$r"; then
                as_pg "$PGBIN/pg_ctl" reload -D "$CLUSTER_DIR/$r/data" >/dev/null
            fi
        else
            init_replica "$r"
        fi
        pg_start "$r"
        step "$r-started"
    done
    wait_streaming 2
    if want_redis; then
        redis_start
        step redis-started
    fi
}

cmd_stop() {
    [ -d "$CLUSTER_DIR" ] || return 0
    lock
    redis_stop
    for n in replica1 replica2 primary; do
        [ -d "$CLUSTER_DIR/$n/data" ] && pg_stop "$n"
    done
    return 0
}

cmd_status() {
    rc=0
    for n in $NODES; do
        data=$CLUSTER_DIR/$n/data
        role=primary
        [ -f "$data/standby.signal" ] && role=replica
        if [ ! -d "$data" ]; then
            [ "$n" = primary ] || role=replica
            pid=-
            state="not built"
            rc=1
        elif pg_running "$n"; then
            pid=$(head -n 1 "$data/postmaster.pid")
            state=running
        else
            pid=-
            state=stopped
            rc=1
        fi
        if [ -d "$CLUSTER_DIR/$n" ] && [ ! -f "$CLUSTER_DIR/$n/complete" ]; then
            state="$state, setup incomplete"
            rc=1
        fi
        port=$(recorded_port "$n")
        printf '%-8s port=%s pid=%s role=%s %s\n' "$n" "${port:--}" "$pid" "$role" "$state"
    done
    if want_redis; then
        if pid=$(redis_pid); then state=running; else pid=- state=stopped rc=1; fi
        port=$(recorded_port redis)
        printf '%-8s port=%s pid=%s role=cache %s\n' redis "${port:--}" "$pid" "$state"
    fi
    return $rc
}

cmd_ports() {
    [ -f "$CLUSTER_DIR/ports" ] || die "no $CLUSTER_DIR/ports: the cluster was never started"
    cat "$CLUSTER_DIR/ports"
}

cmd_check() {
    plan_ports
    for n in $NODES; do
        echo "$n=$(port_of "$n")"
    done
    if want_redis; then
        echo "redis=$(port_of redis)"
    fi
}

locked() {
    [ -d "$CLUSTER_DIR" ] || die "no cluster in $CLUSTER_DIR"
    lock
    "$@"
}

restart_primary() {
    pg_stop primary
    pg_start primary
}

[ $# -ge 1 ] || die "usage: cluster.sh start [--redis] | stop | status | ports | check | restart-primary | stop-primary | start-primary | stop-node NAME [fast|immediate] | start-node NAME | promote NAME | follow NAME LEADER"
cmd=$1
shift
case $cmd in
    stop-node) locked stop_node "$@"; exit ;;
    start-node) locked start_node "$@"; exit ;;
    promote) locked promote_node "$@"; exit ;;
    follow) locked follow_node "$@"; exit ;;
esac
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
    ports) cmd_ports ;;
    check) cmd_check ;;
    stop-primary) locked pg_stop primary ;;
    start-primary) locked pg_start primary ;;
    restart-primary) locked restart_primary ;;
    *) die "unknown command: $cmd" ;;
esac
