#!/usr/bin/env bash
# `A && B || C` is used only where running C after a failed B is harmless (a message, `true`).
# shellcheck disable=SC2015
# slurm_lab.sh: a real Slurm cluster on this one machine, on the namespace hosts of
# scripts/netns_hosts.sh (the tests bring those up first: tests/helpers/namespace_lab.py).
#
# munged and slurmctld run in the root namespace (the "login node": sbatch/salloc/srun run
# there too); one slurmd per namespace host runs inside it, so a 2-node allocation is really
# two hosts with their own addresses. Each slurmd gets its own hostname the way the hosts'
# sshd does (`unshare -u` in H's network namespace, then `hostname H`), plus `-N H`.
#
# What is shared and what is per node:
#   - munge: ONE munged and socket for all nodes. Its socket is a path on the filesystem, and
#     the hosts share the filesystem (only the network is separate), so every slurmd reaches
#     it; every node must use the same key anyway. Not the system's /run/munge: its own.
#   - Slurm: one slurm.conf (clients find it through SLURM_CONF); per node a spool directory,
#     pid file, log and TmpFS (`%n` in slurm.conf): slurmd keeps its state and the steps'
#     sockets in its spool directory and pmix its client directories in TmpFS; two nodes on
#     one directory clash. slurmctld has its own
#     StateSaveLocation. Ports 6917/6918, not Slurm's defaults, so a system Slurm is untouched.
#
# Usage:
#   slurm_lab.sh install                          apt-get the packages if missing
#   slurm_lab.sh up --node NAME=ADDR... --controller-address ADDR [--state-dir DIR]
#   slurm_lab.sh down [--state-dir DIR]           cancel jobs, stop daemons by pid file; idempotent
#   slurm_lab.sh status [--state-dir DIR]         exit 0 when every node is idle
#
# After `up`, use the cluster with SLURM_CONF=DIR/slurm.conf (written to DIR/env as well).
# Needs root. Traffic: only the bridge subnet of the namespace hosts and loopback.
set -euo pipefail

readonly CTLD_PORT=6917
readonly SLURMD_PORT=6918
readonly PACKAGES=(slurmd slurmctld slurm-client munge)
STATE_DIR=/tmp/hvdtrain-slurm

say() { printf '[slurm] %s\n' "$*"; }
die() { printf '[slurm] error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '21,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# ---------------------------------------------------------------------------------------------
cmd_install() {
    local missing=0 bin
    for bin in slurmd slurmctld sbatch munged; do command -v "$bin" >/dev/null || missing=1; done
    [ "$missing" = 0 ] && return 0
    command -v apt-get >/dev/null || die "Slurm is missing and there is no apt-get; install ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d exit 101 keeps the packages' postinst from starting system-wide daemons
    # (munged on /run/munge, slurmd/slurmctld on the default ports); only ours should run.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    say "installing ${PACKAGES[*]} with apt-get"
    if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; then
        say "install failed; running apt-get update once and retrying"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    fi
    [ "$made_policy" = 1 ] && rm -f "$policy"
    command -v slurmd >/dev/null && command -v munged >/dev/null || die "apt-get finished but Slurm is missing"
}

# ---------------------------------------------------------------------------------------------
pid_of() { # PIDFILE COMM -> pid if the file names a live process called COMM
    local pid
    [ -f "$1" ] || return 0
    pid=$(cat "$1" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    # A stale pid file may name a recycled pid: accept it only for the right program.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$2" ] && echo "$pid"
    return 0
}

stop_by_pidfile() { # PIDFILE COMM WHAT
    local pid
    pid=$(pid_of "$1" "$2")
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; say "killed $3 (pid $pid)"
        else say "stopped $3 (pid $pid)"; fi
    fi
    rm -f "$1"
}

# The list is captured before grep -q reads it: with pipefail, a writer killed by SIGPIPE when
# grep -q stops early would turn a match into a failure.
ns_exists() { grep -qx "$1" <<<"$(ip netns list 2>/dev/null | awk '{print $1}')"; }

wait_for() { # SECONDS WHAT COMMAND... (polls until COMMAND succeeds)
    local limit=$1 what=$2 t0=$SECONDS; shift 2
    until "$@" >/dev/null 2>&1; do
        [ $((SECONDS - t0)) -lt "$limit" ] || die "$what not within $limit s"
        sleep 0.3
    done
}

# ---------------------------------------------------------------------------------------------
write_conf() { # CONTROLLER_ADDR NODES...
    local ctl=$1 node name addr names=""; shift
    {
        cat <<EOF
# Written by scripts/slurm_lab.sh; removed by 'slurm_lab.sh down'.
ClusterName=hvdtrain-lab
SlurmctldHost=$(hostname -s)($ctl)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE_DIR/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR/ctld/state
SlurmctldPidFile=$STATE_DIR/ctld/slurmctld.pid
SlurmctldLogFile=$STATE_DIR/ctld/slurmctld.log
SlurmdSpoolDir=$STATE_DIR/nodes/%n/spool
SlurmdPidFile=$STATE_DIR/nodes/%n/slurmd.pid
SlurmdLogFile=$STATE_DIR/nodes/%n/slurmd.log
# Per node too: the pmix plugin makes its client directory spmix_appdir_UID_JOB.STEP under
# TmpFS, and two nodes on one shared /tmp would clash ("File exists": step launch fails).
TmpFS=$STATE_DIR/nodes/%n/tmp
# No cgroups here (hybrid layout, no systemd): processes tracked by parentage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to 'scontrol show job' (no accounting database) for 5 minutes.
MinJobAge=300
# scancel/time limit: SIGTERM, then SIGKILL after KillWait seconds.
KillWait=15
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
EOF
        for node in "$@"; do
            name=${node%%=*}; addr=${node#*=}
            echo "NodeName=$name NodeAddr=$addr NodeHostname=$name CPUs=$(nproc) RealMemory=1000 State=UNKNOWN"
            names+="${names:+,}$name"
        done
        echo "PartitionName=lab Nodes=$names Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
    } >"$STATE_DIR/slurm.conf"
}

start_munged() {
    local dir=$STATE_DIR/munge
    mkdir -p "$dir"
    # munged insists: key readable by its user only; socket directory traversable by all.
    chown munge:munge "$dir"; chmod 755 "$dir"
    if [ ! -f "$dir/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
        chown munge:munge "$dir/munge.key"; chmod 400 "$dir/munge.key"
    fi
    [ -n "$(pid_of "$dir/munged.pid" munged)" ] && return 0
    runuser -u munge -- munged --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" \
        || die "munged did not start; see $dir/munged.log"
    munge -S "$dir/munge.socket" -n | unmunge -S "$dir/munge.socket" >/dev/null \
        || die "munge -n | unmunge failed; see $dir/munged.log"
    say "munged running (pid $(cat "$dir/munged.pid")), socket $dir/munge.socket"
}

start_slurmctld() {
    mkdir -p "$STATE_DIR/ctld/state"
    [ -n "$(pid_of "$STATE_DIR/ctld/slurmctld.pid" slurmctld)" ] && return 0
    slurmctld -f "$STATE_DIR/slurm.conf" || die "slurmctld did not start; see $STATE_DIR/ctld/slurmctld.log"
    wait_for 30 "slurmctld answering" scontrol ping
    say "slurmctld running (pid $(cat "$STATE_DIR/ctld/slurmctld.pid")) on $(hostname -s):$CTLD_PORT"
}

start_slurmd() { # NAME
    local name=$1 dir=$STATE_DIR/nodes/$1
    ns_exists "$name" || die "no namespace host $name (netns_hosts.sh up first)"
    mkdir -p "$dir/spool" "$dir/tmp"
    [ -n "$(pid_of "$dir/slurmd.pid" slurmd)" ] && return 0
    # nsenter --net, not `ip netns exec`: that one also makes a mount namespace with a fresh
    # /sys, without /sys/fs/cgroup, and slurmd refuses to start without its cgroup plugin.
    # unshare -u: its own hostname, so the node and the jobs on it see `hostname` = NAME.
    nsenter --net="/run/netns/$name" unshare -u sh -c \
        "hostname '$name' && exec slurmd -f '$STATE_DIR/slurm.conf' -N '$name'" \
        </dev/null >>"$dir/slurmd.log" 2>&1 || die "slurmd on $name did not start; see $dir/slurmd.log"
    say "slurmd on $name running (pid $(cat "$dir/slurmd.pid" 2>/dev/null || echo '?'))"
}

all_idle() { # NAMES... -> succeeds when sinfo reports every node idle
    local states
    states=$(sinfo -h -N -o '%N %t')
    for name in "$@"; do grep -qx "$name idle" <<<"$states" || return 1; done
}

cmd_up() { # CONTROLLER_ADDR NODES...
    local ctl=$1 node names=(); shift
    [ $# -ge 1 ] || die "at least one --node NAME=ADDR"
    for node in "$@"; do [[ "$node" =~ ^[A-Za-z0-9-]+=[0-9.]+$ ]] || die "bad --node $node"; names+=("${node%%=*}"); done
    cmd_install
    mkdir -p "$STATE_DIR"; chmod 755 "$STATE_DIR"
    export SLURM_CONF=$STATE_DIR/slurm.conf
    echo "SLURM_CONF=$SLURM_CONF" >"$STATE_DIR/env"
    write_conf "$ctl" "$@"
    start_munged
    start_slurmctld
    for name in "${names[@]}"; do start_slurmd "$name"; done
    wait_for 60 "all nodes idle (sinfo)" all_idle "${names[@]}"
    sinfo
}

# ---------------------------------------------------------------------------------------------
cmd_down() {
    local dir name pid
    export SLURM_CONF=$STATE_DIR/slurm.conf
    if [ -n "$(pid_of "$STATE_DIR/ctld/slurmctld.pid" slurmctld)" ]; then
        # Jobs first, while the daemons that end them still run.
        if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
            local -a jobs
            read -r -d '' -a jobs <<<"$(squeue -h -o %i | sort -u)" || true
            say "cancelling jobs: ${jobs[*]}"
            # KILL at once (no KillWait), then cancel what was pending or requeued.
            scancel --quiet --full --signal=KILL "${jobs[@]}" 2>/dev/null || true
            scancel --quiet "${jobs[@]}" 2>/dev/null || true
            local t0=$SECONDS
            while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ $((SECONDS - t0)) -lt 60 ]; do sleep 0.5; done
        fi
    fi
    for dir in "$STATE_DIR"/nodes/*/; do
        [ -d "$dir" ] || continue
        name=$(basename "$dir")
        stop_by_pidfile "$dir/slurmd.pid" slurmd "slurmd on $name"
        # A step daemon outlives slurmd by design (slurmd restarts must not kill jobs); ours
        # must not. They run in the node's namespace.
        if ns_exists "$name"; then
            for pid in $(ip netns pids "$name" 2>/dev/null); do
                if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ]; then
                    kill -KILL "$pid" 2>/dev/null && say "killed leftover slurmstepd $pid on $name" || true
                fi
            done
        fi
    done
    stop_by_pidfile "$STATE_DIR/ctld/slurmctld.pid" slurmctld slurmctld
    stop_by_pidfile "$STATE_DIR/munge/munged.pid" munged munged
    if [ -d "$STATE_DIR" ]; then rm -rf "$STATE_DIR"; say "removed $STATE_DIR"; fi
}

cmd_status() {
    export SLURM_CONF=$STATE_DIR/slurm.conf
    [ -f "$SLURM_CONF" ] || { say "no cluster in $STATE_DIR"; return 1; }
    sinfo && squeue
    local states
    states=$(sinfo -h -o '%t')
    ! grep -qvx idle <<<"$states"
}

# ---------------------------------------------------------------------------------------------
main() {
    [ $# -ge 1 ] || usage
    local cmd=$1 ctl="" nodes=(); shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --node) [ $# -ge 2 ] || usage; nodes+=("$2"); shift 2;;
            --controller-address) [ $# -ge 2 ] || usage; ctl=$2; shift 2;;
            --state-dir) [ $# -ge 2 ] || usage; STATE_DIR=$2; shift 2;;
            -h|--help) usage;;
            *) die "unknown argument $1";;
        esac
    done
    STATE_DIR=$(realpath -m "$STATE_DIR")
    [ "$(id -u)" -eq 0 ] || die "needs root (daemons as root, namespaces)"
    case "$cmd" in
        install) cmd_install;;
        up) [ -n "$ctl" ] || die "--controller-address is required"; cmd_up "$ctl" "${nodes[@]}";;
        down) cmd_down;;
        status) cmd_status;;
        *) usage;;
    esac
}

main "$@"
