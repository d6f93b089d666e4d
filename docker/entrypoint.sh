#!/usr/bin/env bash
# The image's entrypoint, started by tini (PID 1: reaps orphans, passes SIGTERM/SIGINT to the
# whole process group, and exits with the job's code, or 128+N when the job died of signal N).
# Every mode ends in `exec`, so the job itself is tini's child and nothing stands in between.
#
#   (no arguments) / train ... / launch ... / plan ... / preflight ... / env / hosts ...
#                    hvdtrain with those arguments (the image's CMD is `train`)
#   worker           sshd in the foreground, for mpirun/horovodrun on a launcher (Kubeflow MPI
#                    Operator workers, or `docker run IMAGE worker` on each host)
#   launcher [ARGS]  wait until every host of the hostfile resolves and accepts ssh, then run
#                    `hvdtrain ARGS` (default: train); ARGS that are not an hvdtrain command
#                    run as given. Hostfile: --hostfile in ARGS, else $HVDTRAIN_HOSTFILE, else
#                    /etc/mpi/hostfile (MPI Operator). Gives up after $HVDTRAIN_WAIT_TIMEOUT
#                    seconds (default 300), naming the host, with exit code 5 (EXIT_PREFLIGHT).
#   anything else    run as given (`bash`, `python script.py`, `mpirun ...`)
set -euo pipefail

# Exit codes: hvdtrain's one table, hvdtrain/errors.py ExitCode (EXIT_<member>=<value>). A shell
# script cannot import it, so tests/unit/test_entrypoint_codes.py checks these numbers against it.
readonly EXIT_PREFLIGHT=5  # a host never came; no hostfile, or none to read

SSH_PORT="${HVDTRAIN_SSH_PORT:-2222}"
MPI_OPERATOR_HOSTFILE=/etc/mpi/hostfile

say() { printf 'hvdtrain-entrypoint: %s\n' "$*" >&2; }

is_hvdtrain_command() {
    case "${1:-}" in
        train | launch | plan | preflight | env | doctor | hosts | bench | evaluate | predict \
            | export | -h | --help | --version) return 0 ;;
        *) return 1 ;;
    esac
}

# -- worker: sshd -------------------------------------------------------------------------
# sshd runs as whoever the container runs as (non-root by default: it can then only log in
# that user, which is all mpirun needs). Its host key is made fresh for each container (clients
# do not check host keys, see /etc/ssh/ssh_config.d/hvdtrain.conf); the authorized keys are
# ~/.ssh/authorized_keys, where the MPI Operator mounts them (sshAuthMountPath).
run_worker() {
    local dir="${TMPDIR:-/tmp}/hvdtrain-sshd"
    mkdir -p "$dir"
    chmod 700 "$dir"
    [ -f "$dir/host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519_key"
    if [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd; fi
    cat >"$dir/sshd_config" <<EOF
Port $SSH_PORT
HostKey $dir/host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
X11Forwarding no
EOF
    if [ ! -s "$HOME/.ssh/authorized_keys" ]; then
        say "warning: $HOME/.ssh/authorized_keys is missing or empty: no launcher can log in"
    fi
    say "worker $(hostname): sshd on port $SSH_PORT for user $(id -un)"
    exec /usr/sbin/sshd -D -e -f "$dir/sshd_config" "$@"
}

# -- launcher: wait for the hosts, then run ---------------------------------------------------
# Host names from a hostfile in any grammar hvdtrain reads: `host slots=N`, `host:N`,
# `[v6]:N`, bare `host`; comments and blank lines skipped.
hostfile_hosts() {
    local line host
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%%#*}"
        read -r host _ <<<"$line" || true
        [ -n "$host" ] || continue
        if [[ "$host" == \[* ]]; then
            host="${host#\[}"
            host="${host%%\]*}"
        else
            host="${host%%:*}"
        fi
        printf '%s\n' "$host"
    done <"$1"
}

# This container itself: no ssh needed (mpirun starts local ranks directly).
is_self() {
    local name="$1" addr
    case "$name" in
        localhost | 127.* | ::1 | "$(hostname)" | "$(hostname -s 2>/dev/null || true)") return 0 ;;
    esac
    addr="$(getent hosts "$name" | awk '{print $1; exit}')" || return 1
    case " $(hostname -I 2>/dev/null || true) " in *" $addr "*) return 0 ;; esac
    [[ "$addr" == 127.* || "$addr" == ::1 ]]
}

# Resolves and accepts ssh (BatchMode: a key problem fails here, not as a hang later).
host_ready() {
    local host="$1" out
    if ! getent hosts "$host" >/dev/null; then
        LAST_ERROR="does not resolve"
        return 1
    fi
    if ! out="$(ssh -o BatchMode=yes -o ConnectTimeout=5 "$host" true 2>&1 </dev/null)"; then
        LAST_ERROR="ssh to port $SSH_PORT failed: ${out:-no output}"
        return 1
    fi
}

wait_for_hosts() {
    local hostfile="$1" timeout="${HVDTRAIN_WAIT_TIMEOUT:-300}" host delay deadline
    local -a hosts=()
    mapfile -t hosts < <(hostfile_hosts "$hostfile")
    [ "${#hosts[@]}" -gt 0 ] || { say "no hosts in $hostfile"; exit "$EXIT_PREFLIGHT"; }
    deadline=$((SECONDS + timeout))
    for host in "${hosts[@]}"; do
        if is_self "$host"; then continue; fi
        delay=1
        LAST_ERROR=""
        until host_ready "$host"; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                say "host $host never came: $LAST_ERROR (waited ${timeout} s for the hosts of $hostfile)"
                exit "$EXIT_PREFLIGHT"
            fi
            say "waiting for $host: $LAST_ERROR; retrying in ${delay} s"
            sleep "$delay"
            delay=$((delay * 2 > 16 ? 16 : delay * 2))
        done
        say "host $host is up"
    done
}

run_launcher() {
    local hostfile="" arg prev=""
    for arg in "$@"; do
        case "$arg" in
            --hostfile=*) hostfile="${arg#--hostfile=}" ;;
            *) if [ "$prev" = --hostfile ]; then hostfile="$arg"; fi ;;
        esac
        prev="$arg"
    done
    if [ -z "$hostfile" ]; then hostfile="${HVDTRAIN_HOSTFILE:-}"; fi
    if [ -z "$hostfile" ] && [ -f "$MPI_OPERATOR_HOSTFILE" ]; then
        hostfile="$MPI_OPERATOR_HOSTFILE"
    fi
    if [ -z "$hostfile" ]; then
        say "launcher: no hostfile (--hostfile, \$HVDTRAIN_HOSTFILE or $MPI_OPERATOR_HOSTFILE)"
        exit "$EXIT_PREFLIGHT"
    fi
    if [ ! -r "$hostfile" ]; then
        say "launcher: cannot read hostfile $hostfile"
        exit "$EXIT_PREFLIGHT"
    fi
    wait_for_hosts "$hostfile"
    if [ "$#" -eq 0 ]; then set -- train; fi
    if is_hvdtrain_command "$1"; then set -- hvdtrain "$@"; fi
    exec "$@"
}

main() {
    if [ "$#" -eq 0 ]; then set -- train; fi
    case "$1" in
        worker) shift; run_worker "$@" ;;
        launcher) shift; run_launcher "$@" ;;
        *)
            if is_hvdtrain_command "$1"; then exec hvdtrain "$@"; fi
            exec "$@"
            ;;
    esac
}

main "$@"
