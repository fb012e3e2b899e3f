# Port helpers for cluster.sh and demo.sh (sourced, POSIX sh; needs ss from
# iproute2). A port counts as taken when any TCP socket listens on it, on
# any address.

# True if something listens on TCP port $1.
port_taken() {
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# The pids of the processes listening on TCP port $1, one a line (only those
# this user may see: all of them for root).
port_pids() {
    ss -Hltnp "sport = :$1" 2>/dev/null | tr ',' '\n' | sed -n 's/^pid=\([0-9]*\).*/\1/p' |
        sort -u
}

# What listens on TCP port $1, for an error message: "NAME (pid N: COMMAND
# LINE)" for each process, or a hint when ss may not show it.
port_holder() {
    out=""
    for pid in $(port_pids "$1"); do
        name=$(cat "/proc/$pid/comm" 2>/dev/null) || name="?"
        cmd=$(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c 1-100)
        out="$out${out:+, }$name (pid $pid: ${cmd% })"
    done
    if [ -n "$out" ]; then
        echo "$out"
    else
        echo "a process this user cannot see (ss -ltnp as root names it)"
    fi
}

# A port in 20000-26999 (below Linux's ephemeral range, so no outgoing
# connection holds it, and clear of bench/run.sh's 27432 and up) that nothing
# listens on and that is not among $1 (ports separated by spaces).
pick_free_port() {
    i=0
    while [ $i -lt 1000 ]; do
        p=$(($(od -An -N2 -tu2 /dev/urandom) % 7000 + 20000))
        case " $1 " in
            *" $p "*) ;;
            *) port_taken "$p" || { echo "$p"; return 0; } ;;
        esac
        i=$((i + 1))
    done
    return 1
}
