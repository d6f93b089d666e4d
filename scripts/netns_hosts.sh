#!/usr/bin/env bash
# `A && B || C` is used only where running C after a failed B is harmless (a message, `true`).
# shellcheck disable=SC2015
# netns_hosts.sh: a throwaway "cluster" of up to three ssh hosts on this one machine.
#
# Each host is a network namespace (hvdh1..hvdh3 = 10.231.0.11..13) wired by a veth pair into
# the bridge hvdbr0 (10.231.0.1/24, root namespace, so a launcher running here reaches every
# host). Each host runs its own sshd, started under `unshare -m -u` so that every ssh session
# into it sees its own hostname and its own empty tmpfs over PRIVATE_DIR, while the rest of the
# filesystem (the venv, the repository) stays shared. mpirun and horovodrun use plain `ssh`,
# so the hosts are made resolvable (/etc/hosts block) and reachable (~/.ssh/config Include).
#
# Usage:
#   netns_hosts.sh up N [--private-dir DIR] [--state-dir DIR]   N in 1..3; idempotent
#   netns_hosts.sh down [--state-dir DIR]                         removes everything; idempotent
#   netns_hosts.sh stop-sshd K [--state-dir DIR]                  host K stops answering ssh
#   netns_hosts.sh start-sshd K [--state-dir DIR]                 ...and answers again
#   netns_hosts.sh status [--state-dir DIR]                       exit 0 when the bridge is up
#   netns_hosts.sh shape RATE                                     every host link limited to RATE
#   netns_hosts.sh unshape                                        (tc tbf, both directions)
#
# Network rule: the hosts get no default route; nothing here sends traffic anywhere except to
# loopback and to the addresses of the namespaces this script creates.
# Needs root. One lab at a time (the names and the subnet are fixed).
set -euo pipefail

readonly PREFIX=10.231.0
readonly BRIDGE=hvdbr0
readonly BRIDGE_ADDR=$PREFIX.1
readonly MAX_HOSTS=3
readonly HOSTS_FILE=/etc/hosts
readonly MARK_BEGIN="# hvdtrain-netns begin"
readonly MARK_END="# hvdtrain-netns end"
readonly SSH_DIR=/root/.ssh
readonly SSH_USER_CONFIG=$SSH_DIR/config
readonly SSHD=/usr/sbin/sshd

STATE_DIR=/tmp/hvdtrain-netns
PRIVATE_DIR=/tmp/hvdtrain-private

say() { printf '[netns] %s\n' "$*"; }
warn() { printf '[netns] warning: %s\n' "$*" >&2; }
die() { printf '[netns] error: %s\n' "$*" >&2; exit 1; }

host_name() { echo "hvdh$1"; }
host_addr() { echo "$PREFIX.$((10 + $1))"; }
veth_name() { echo "hvdv$1"; }          # root-namespace end; the namespace end is "eth0"

usage() { sed -n '11,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# Replace FILE's content with stdin without replacing the file itself: /etc/hosts may be a
# bind mount (rename fails there), and owner and mode stay as they are.
rewrite_file() {
    local file=$1 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    cat "$tmp" >"$file"
    rm -f "$tmp"
}

# lab.env in the state dir records what `up` created, so `down` undoes exactly that.
state_get() { # KEY -> value or empty
    [ -f "$STATE_DIR/lab.env" ] || return 0
    sed -n "s/^$1=//p" "$STATE_DIR/lab.env" | tail -n1
}
state_set() { # KEY VALUE
    mkdir -p "$STATE_DIR"
    touch "$STATE_DIR/lab.env"
    { grep -v "^$1=" "$STATE_DIR/lab.env" || true; echo "$1=$2"; } | rewrite_file "$STATE_DIR/lab.env"
}

# Lists are captured before grep -q looks at them: with pipefail, a writer killed by SIGPIPE
# when grep -q stops early would turn a match into a failure.
ns_exists() { grep -qx "$1" <<<"$(ip netns list 2>/dev/null | awk '{print $1}')"; }
has_addr() { grep -q "inet $2/24" <<<"$(ip "${@:3}" addr show dev "$1" 2>/dev/null)"; } # DEV ADDR [ip opts]
link_exists() { ip link show "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
ensure_packages() {
    [ -x "$SSHD" ] && command -v ip >/dev/null && command -v ssh-keygen >/dev/null && return 0
    command -v apt-get >/dev/null || die "sshd/ip missing and no apt-get; install openssh-server iproute2"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(openssh-server openssh-client iproute2)
    # policy-rc.d exit 101 keeps the package's postinst from starting a system-wide sshd on
    # 0.0.0.0:22; only our per-namespace sshds should run. Leave an existing one alone.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    say "installing ${pkgs[*]} with apt-get"
    if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; then
        say "install failed; running apt-get update once and retrying"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
    [ "$made_policy" = 1 ] && rm -f "$policy"
    [ -x "$SSHD" ] || die "apt-get finished but $SSHD is missing"
}

ensure_bridge() {
    if ! link_exists "$BRIDGE"; then
        ip link add "$BRIDGE" type bridge
        say "created bridge $BRIDGE"
    fi
    has_addr "$BRIDGE" "$BRIDGE_ADDR" || ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

ensure_keys() {
    mkdir -p "$STATE_DIR/hostkeys"
    chmod 700 "$STATE_DIR"
    # The client key: AuthorizedKeysFile of every host points at its .pub (StrictModes no
    # lets sshd read it from /tmp).
    if [ ! -f "$STATE_DIR/id_ed25519" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "hvdtrain-netns client" -f "$STATE_DIR/id_ed25519"
        say "generated client key $STATE_DIR/id_ed25519"
    fi
}

write_ssh_client_config() {
    # Matched by name and by address; mpirun may hand ssh either.
    cat >"$STATE_DIR/ssh_config" <<EOF
# Written by scripts/netns_hosts.sh; removed by 'netns_hosts.sh down'.
Host hvdh* $PREFIX.*
    IdentityFile $STATE_DIR/id_ed25519
    IdentitiesOnly yes
    User root
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
    ConnectTimeout 5
EOF
    chmod 600 "$STATE_DIR/ssh_config"   # ssh rejects group/world-writable config files
}

ensure_host() { # K
    local k=$1 ns veth addr
    ns=$(host_name "$k"); veth=$(veth_name "$k"); addr=$(host_addr "$k")
    if ! ns_exists "$ns"; then
        ip netns add "$ns"
        say "created namespace $ns"
    fi
    if ! link_exists "$veth"; then
        # Create the pair with its far end already inside the namespace, named eth0.
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        say "created veth $veth <-> $ns:eth0"
    fi
    ip link set "$veth" master "$BRIDGE"
    ip link set "$veth" up
    ip -n "$ns" link set lo up
    has_addr eth0 "$addr" -n "$ns" || ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    # No default route on purpose: a host can reach only the bridge subnet.

    if [ ! -f "$STATE_DIR/hostkeys/${ns}_ed25519" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "$ns host key" -f "$STATE_DIR/hostkeys/${ns}_ed25519"
    fi
    cat >"$STATE_DIR/sshd_$ns.conf" <<EOF
# sshd for namespace host $ns (scripts/netns_hosts.sh)
ListenAddress $addr
Port 22
HostKey $STATE_DIR/hostkeys/${ns}_ed25519
PidFile $STATE_DIR/sshd_$ns.pid
AuthorizedKeysFile $STATE_DIR/id_ed25519.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
# mpirun starts several sessions at once; do not drop any of them.
MaxStartups 100
MaxSessions 100
EOF
}

remove_host() { # K
    local k=$1 ns veth pids
    ns=$(host_name "$k"); veth=$(veth_name "$k")
    stop_sshd "$k" quiet
    if ns_exists "$ns"; then
        # Whatever still runs in the namespace (ssh sessions, orted, ranks) goes first, else
        # the namespace and its private tmpfs would outlive `ip netns del`.
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$pids" ]; then
            local -a pid_list
            read -r -d '' -a pid_list <<<"$pids" || true
            say "killing leftover processes in $ns: ${pid_list[*]}"
            kill -TERM "${pid_list[@]}" 2>/dev/null || true
            for _ in $(seq 1 20); do
                pids=$(ip netns pids "$ns" 2>/dev/null || true)
                [ -z "$pids" ] && break
                sleep 0.25
            done
            if [ -n "$pids" ]; then
                read -r -d '' -a pid_list <<<"$pids" || true
                kill -KILL "${pid_list[@]}" 2>/dev/null || true
            fi
        fi
        ip netns del "$ns"
        say "deleted namespace $ns"
    fi
    # Deleting the namespace destroys its eth0 and with it the pair, but asynchronously: wait
    # a moment for that, then delete the root end ourselves (it may vanish meanwhile).
    for _ in $(seq 1 20); do link_exists "$veth" || break; sleep 0.1; done
    if link_exists "$veth"; then
        ip link del "$veth" 2>/dev/null || true
        link_exists "$veth" && die "could not delete veth $veth"
        say "deleted veth $veth"
    fi
}

# ---------------------------------------------------------------------------------------------
sshd_pid() { # K -> pid of the running listener, or nothing
    local pidfile pid
    pidfile="$STATE_DIR/sshd_$(host_name "$1").pid"
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    # A stale pid file may name a recycled pid: accept it only if it is still an sshd.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = sshd ] && echo "$pid"
    return 0
}

start_sshd() { # K
    local k=$1 ns addr conf pid
    ns=$(host_name "$k"); addr=$(host_addr "$k"); conf="$STATE_DIR/sshd_$ns.conf"
    ns_exists "$ns" || die "host $ns is not up (run: $0 up N)"
    pid=$(sshd_pid "$k")
    if [ -n "$pid" ]; then say "sshd on $ns already running (pid $pid)"; return 0; fi
    mkdir -p /run/sshd                  # sshd's privilege-separation directory
    "$SSHD" -t -f "$conf" || die "sshd rejects $conf"
    rm -f "$STATE_DIR/sshd_$ns.pid"
    # unshare -m -u: a private mount and UTS namespace for this sshd and every session under
    # it: own hostname, own tmpfs over PRIVATE_DIR. --propagation private keeps the mount from
    # leaking back to the root namespace. sshd daemonizes (stdio to /dev/null), so this returns.
    ip netns exec "$ns" unshare -m -u --propagation private \
        sh -c "hostname $ns && mount -t tmpfs -o mode=0755,size=256m tmpfs '$PRIVATE_DIR' && exec $SSHD -f '$conf' -E '$STATE_DIR/sshd_$ns.log'" \
        </dev/null >>"$STATE_DIR/sshd_$ns.log" 2>&1 \
        || die "starting sshd in $ns failed; see $STATE_DIR/sshd_$ns.log"
    # Ready = the pid file exists and a real login works (this also checks key and config).
    local t0=$SECONDS
    while :; do
        pid=$(sshd_pid "$k")
        if [ -n "$pid" ] && timeout 10 ssh -F "$STATE_DIR/ssh_config" "$addr" true </dev/null 2>/dev/null; then
            break
        fi
        [ $((SECONDS - t0)) -lt 30 ] || die "sshd on $ns did not answer within 30 s; see $STATE_DIR/sshd_$ns.log"
        sleep 0.3
    done
    say "sshd on $ns ($addr) running, pid $pid ($((SECONDS - t0)) s to answer)"
}

stop_sshd() { # K [quiet]
    local k=$1 ns pid
    ns=$(host_name "$k")
    pid=$(sshd_pid "$k")
    if [ -z "$pid" ]; then
        [ "${2:-}" = quiet ] || say "sshd on $ns is not running"
        rm -f "$STATE_DIR/sshd_$ns.pid"
        return 0
    fi
    # Only the listener: sessions already open keep running (down kills them).
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$STATE_DIR/sshd_$ns.pid"
    say "stopped sshd on $ns (pid $pid)"
}

# ---------------------------------------------------------------------------------------------
hosts_block_remove() {
    grep -qxF "$MARK_BEGIN" "$HOSTS_FILE" || return 0
    if ! grep -qxF "$MARK_END" "$HOSTS_FILE"; then
        warn "$HOSTS_FILE has '$MARK_BEGIN' without '$MARK_END'; left as it is"
        return 0
    fi
    awk -v b="$MARK_BEGIN" -v e="$MARK_END" '
        $0 == b { skip = 1; next }
        $0 == e && skip { skip = 0; next }
        !skip' "$HOSTS_FILE" | rewrite_file "$HOSTS_FILE"
    say "removed the hvdtrain-netns block from $HOSTS_FILE"
}

hosts_block_set() { # N
    local n=$1 k
    hosts_block_remove >/dev/null
    {
        cat "$HOSTS_FILE"
        # A file without a final newline would glue our first line onto its last one.
        [ -z "$(tail -c1 "$HOSTS_FILE")" ] || echo
        echo "$MARK_BEGIN"
        for k in $(seq 1 "$n"); do echo "$(host_addr "$k") $(host_name "$k")"; done
        echo "$MARK_END"
    } | rewrite_file "$HOSTS_FILE"
    say "$HOSTS_FILE: hvdh1..hvdh$n -> $(host_addr 1)..$(host_addr "$n")"
}

include_line() { echo "Include $STATE_DIR/ssh_config"; }

ssh_include_add() {
    local line
    line=$(include_line)
    if [ ! -d "$SSH_DIR" ]; then
        mkdir -m 700 "$SSH_DIR"; state_set CREATED_SSH_DIR 1
    fi
    if [ ! -e "$SSH_USER_CONFIG" ]; then
        install -m 600 /dev/null "$SSH_USER_CONFIG"; state_set CREATED_SSH_CONFIG 1
    fi
    grep -qxF "$line" "$SSH_USER_CONFIG" && return 0
    # At the very top, outside any Host block (an Include inside one would be conditional);
    # for ssh the first value obtained wins. Prepending by rewrite also works on an empty file,
    # where `sed -i 1i` does nothing.
    { echo "$line"; cat "$SSH_USER_CONFIG"; } | rewrite_file "$SSH_USER_CONFIG"
    say "$SSH_USER_CONFIG: added '$line'"
}

ssh_include_remove() {
    local line
    line=$(include_line)
    if [ -f "$SSH_USER_CONFIG" ] && grep -qxF "$line" "$SSH_USER_CONFIG"; then
        grep -vxF "$line" "$SSH_USER_CONFIG" | rewrite_file "$SSH_USER_CONFIG" || true
        say "$SSH_USER_CONFIG: removed '$line'"
    fi
    # Remove the file / directory only if `up` created them and nothing else was added since.
    if [ "$(state_get CREATED_SSH_CONFIG)" = 1 ] && [ -f "$SSH_USER_CONFIG" ] && [ ! -s "$SSH_USER_CONFIG" ]; then
        rm -f "$SSH_USER_CONFIG"; say "removed empty $SSH_USER_CONFIG (created by up)"
    fi
    if [ "$(state_get CREATED_SSH_DIR)" = 1 ] && [ -d "$SSH_DIR" ]; then
        rmdir "$SSH_DIR" 2>/dev/null && say "removed empty $SSH_DIR (created by up)" || true
    fi
}

# ---------------------------------------------------------------------------------------------
cmd_up() { # N
    local n=$1 k recorded t0=$SECONDS
    [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le "$MAX_HOSTS" ] || die "N must be 1..$MAX_HOSTS, got '$n'"
    case "$PRIVATE_DIR" in
        /|/tmp|/root|/etc|/usr|/var|/run|/home|/work|/proc|/sys|/dev) die "refusing --private-dir $PRIVATE_DIR";;
    esac
    if link_exists "$BRIDGE" && [ ! -f "$STATE_DIR/lab.env" ]; then
        # Up under another --state-dir, or left over from a crash: sshds would clash.
        die "$BRIDGE exists but $STATE_DIR holds no lab; run '$0 down' (with the lab's --state-dir) first"
    fi
    recorded=$(state_get PRIVATE_DIR)
    if [ -n "$recorded" ] && [ "$recorded" != "$PRIVATE_DIR" ] && link_exists "$BRIDGE"; then
        die "the lab is up with private dir $recorded; run '$0 down' first"
    fi
    ensure_packages
    mkdir -p "$STATE_DIR"
    if [ ! -d "$PRIVATE_DIR" ]; then
        # Created on the root filesystem: the mount point each host's tmpfs covers.
        mkdir -p "$PRIVATE_DIR"; state_set CREATED_PRIVATE_DIR 1
        say "created private-dir mount point $PRIVATE_DIR"
    elif [ -n "$(ls -A "$PRIVATE_DIR")" ]; then
        warn "$PRIVATE_DIR is not empty on the root filesystem (hosts do not see it: tmpfs covers it)"
    fi
    state_set PRIVATE_DIR "$PRIVATE_DIR"
    state_set HOSTS "$n"
    ensure_keys
    write_ssh_client_config
    ensure_bridge
    # `up N` makes the lab exactly N hosts: hosts beyond N from an earlier `up` go.
    for k in $(seq $((n + 1)) "$MAX_HOSTS"); do
        ns_exists "$(host_name "$k")" && remove_host "$k"
    done
    for k in $(seq 1 "$n"); do ensure_host "$k"; done
    hosts_block_set "$n"
    ssh_include_add
    for k in $(seq 1 "$n"); do start_sshd "$k"; done
    say "up: $n host(s) in $((SECONDS - t0)) s; state $STATE_DIR, private dir $PRIVATE_DIR"
}

cmd_down() {
    local k private t0=$SECONDS
    for k in $(seq 1 "$MAX_HOSTS"); do remove_host "$k"; done
    if link_exists "$BRIDGE"; then ip link del "$BRIDGE"; say "deleted bridge $BRIDGE"; fi
    hosts_block_remove
    ssh_include_remove
    private=$(state_get PRIVATE_DIR)
    if [ "$(state_get CREATED_PRIVATE_DIR)" = 1 ] && [ -d "$private" ]; then
        # rmdir, not rm -r: files on the root fs there were not written by the hosts.
        rmdir "$private" 2>/dev/null && say "removed $private" \
            || warn "$private is not empty; left in place"
    fi
    if [ -d "$STATE_DIR" ]; then rm -rf "$STATE_DIR"; say "removed state dir $STATE_DIR"; fi
    say "down in $((SECONDS - t0)) s"
}

cmd_status() {
    local k ns pid up=0
    if link_exists "$BRIDGE"; then
        up=1; say "bridge $BRIDGE: $(ip -br addr show dev "$BRIDGE" | awk '{print $2, $3}')"
    else
        say "bridge $BRIDGE: absent"
    fi
    for k in $(seq 1 "$MAX_HOSTS"); do
        ns=$(host_name "$k")
        ns_exists "$ns" || continue
        pid=$(sshd_pid "$k")
        say "$ns $(host_addr "$k"): namespace up, sshd $([ -n "$pid" ] && echo "pid $pid" || echo stopped), processes: $(ip netns pids "$ns" | wc -l)"
    done
    grep -qxF "$MARK_BEGIN" "$HOSTS_FILE" && say "$HOSTS_FILE: block present" || say "$HOSTS_FILE: no block"
    [ -f "$SSH_USER_CONFIG" ] && grep -qxF "$(include_line)" "$SSH_USER_CONFIG" \
        && say "$SSH_USER_CONFIG: Include present" || say "$SSH_USER_CONFIG: no Include"
    say "state dir $STATE_DIR: $([ -d "$STATE_DIR" ] && echo present || echo absent)"
    [ "$up" = 1 ]
}

# Shape every host's link in both directions (the bridge end and the host's eth0), so traffic
# between two hosts crosses two token buckets of RATE, like a real switched link.
cmd_shape() {
    local rate=$1 k ns
    for k in $(seq 1 "$MAX_HOSTS"); do
        ns=$(host_name "$k")
        link_exists "$(veth_name "$k")" || continue
        if [ "$rate" = none ]; then
            tc qdisc del dev "$(veth_name "$k")" root 2>/dev/null || true
            ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
            say "$ns: link unshaped"
        else
            tc qdisc replace dev "$(veth_name "$k")" root tbf rate "$rate" burst 512kb latency 50ms
            ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$rate" burst 512kb latency 50ms
            say "$ns: link shaped to $rate"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
main() {
    [ $# -ge 1 ] || usage
    local cmd=$1; shift
    local args=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --private-dir) [ $# -ge 2 ] || usage; PRIVATE_DIR=$2; shift 2;;
            --private-dir=*) PRIVATE_DIR=${1#*=}; shift;;
            --state-dir) [ $# -ge 2 ] || usage; STATE_DIR=$2; shift 2;;
            --state-dir=*) STATE_DIR=${1#*=}; shift;;
            -h|--help) usage;;
            -*) die "unknown option $1";;
            *) args+=("$1"); shift;;
        esac
    done
    # Absolute paths: they end up in sshd and ssh configs and in the mount command.
    STATE_DIR=$(realpath -m "$STATE_DIR"); PRIVATE_DIR=$(realpath -m "$PRIVATE_DIR")
    [ "$(id -u)" -eq 0 ] || die "needs root (namespaces, /etc/hosts, /root/.ssh)"

    case "$cmd" in
        up) [ ${#args[@]} -eq 1 ] || usage; cmd_up "${args[0]}";;
        down) [ ${#args[@]} -eq 0 ] || usage; cmd_down;;
        stop-sshd|start-sshd)
            [ ${#args[@]} -eq 1 ] && [[ "${args[0]}" =~ ^[1-9]$ ]] && [ "${args[0]}" -le "$MAX_HOSTS" ] || usage
            if [ "$cmd" = stop-sshd ]; then stop_sshd "${args[0]}"; else
                # Restart with the private dir the lab was brought up with.
                PRIVATE_DIR=$(state_get PRIVATE_DIR); [ -n "$PRIVATE_DIR" ] || die "no lab state in $STATE_DIR"
                start_sshd "${args[0]}"
            fi;;
        status) [ ${#args[@]} -eq 0 ] || usage; cmd_status;;
        shape) [ ${#args[@]} -eq 1 ] || usage; cmd_shape "${args[0]}";;
        unshape) [ ${#args[@]} -eq 0 ] || usage; cmd_shape none;;
        *) usage;;
    esac
}

main "$@"
