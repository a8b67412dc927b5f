#!/usr/bin/env bash
# Real smoke test of the Docker image: starts an engine if none runs, makes a base image if the
# official one cannot be pulled, builds the image, then runs --help, a tiny training run, sampling
# from that model and (once it is bundled) sampling from the default model.
#
# Exit codes: 0 passed; 1 a step failed; 3 no Docker engine could be reached or started.
# Environment knobs:
#   MOLGEN_IMAGE        tag to build (default molgen:smoke)
#   BASE_IMAGE          base image (default python:3.11-slim; a local Debian one is made if it
#                       cannot be pulled)
#   MOLGEN_SMOKE_STATE  folder for the dockerd log, the build context and the base rootfs
#                       (default /tmp/molgen-docker-smoke)
#   MOLGEN_WHEELS       folder of wheels copied into the build context's wheels/ (default
#                       /opt/wheels, where this machine keeps the CPU torch wheel)
#   MOLGEN_EXTRA_CA     CA bundle copied in as extra-ca.pem (default: pip's configured cert, else
#                       $PIP_CERT, else /etc/ssl/certs/ca-certificates.crt when present)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${MOLGEN_IMAGE:-molgen:smoke}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
LOCAL_BASE="molgen-base:bookworm-py3.11"
STATE="${MOLGEN_SMOKE_STATE:-/tmp/molgen-docker-smoke}"
WHEELS="${MOLGEN_WHEELS:-/opt/wheels}"
BUNDLED_MODEL="data/pretrained/moses-spcauchy-small.pt"
DOCKERD_LOG="$STATE/dockerd.log"
NO_ENGINE=3

STARTED_DOCKERD_PID=""
TMP_DIR=""
T_START=$SECONDS

log() { printf '[docker-smoke %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }
fail() {
    printf '\nDOCKER SMOKE FAILED: %s\n' "$*" >&2
    exit 1
}
no_engine() {
    printf '\n########################################################################\n' >&2
    printf 'DOCKER ENGINE UNAVAILABLE: %s\n' "$*" >&2
    printf 'The Docker image was NOT tested (exit code %d).\n' "$NO_ENGINE" >&2
    printf '########################################################################\n' >&2
    exit "$NO_ENGINE"
}

cleanup() {
    local rc=$?
    if [[ -n "$TMP_DIR" && -d "$TMP_DIR" ]]; then
        rm -rf "$TMP_DIR"
    fi
    if [[ -n "$STARTED_DOCKERD_PID" ]] && kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null; then
        log "stopping the dockerd this script started (pid $STARTED_DOCKERD_PID)"
        kill -TERM "$STARTED_DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null; then
            log "dockerd did not stop in 30 s; killing it"
            kill -KILL "$STARTED_DOCKERD_PID" 2>/dev/null || true
        fi
    fi
    log "total wall time $((SECONDS - T_START)) s (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT

# ---- engine -----------------------------------------------------------------------------------

engine_up() { timeout 20 docker info >/dev/null 2>&1; }

install_engine() {
    log "installing Docker from Debian's packages (docker.io containerd runc iptables debootstrap)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$STATE/apt.log" 2>&1 \
        && apt-get install -y -q --no-install-recommends \
            docker.io containerd runc iptables debootstrap >>"$STATE/apt.log" 2>&1
}

start_engine() {
    if engine_up; then
        log "using the Docker engine that is already running"
        return
    fi
    if [[ "$(id -u)" != 0 ]]; then
        no_engine "no engine answers 'docker info' and this script is not root, so it cannot start one"
    fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
        install_engine || no_engine "apt-get could not install docker.io (see $STATE/apt.log)"
    fi
    command -v docker >/dev/null 2>&1 || no_engine "no docker client on PATH after the install"
    # No bridge, no iptables: the builds use the host's network (--network host) and the test
    # containers need none (--network none), so no NAT or private-range addresses are involved.
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    dockerd --bridge=none --iptables=false --ip-masq=false >"$DOCKERD_LOG" 2>&1 &
    STARTED_DOCKERD_PID=$!
    for _ in $(seq 1 60); do
        if engine_up; then
            log "dockerd answers (pid $STARTED_DOCKERD_PID, storage driver" \
                "$(docker info --format '{{.Driver}}' 2>/dev/null))"
            return
        fi
        kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    no_engine "dockerd did not come up within 60 s (log: $DOCKERD_LOG)"
}

# ---- base image -------------------------------------------------------------------------------

# The Debian mirror this machine's apt sources name for bookworm (one-line or deb822 format).
debian_mirror() {
    local files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && files+=("$f")
    done
    if ((${#files[@]})); then
        awk '
            FNR == 1 { uris = ""; suites = "" }
            /^[[:space:]]*deb[[:space:]]/ {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == "bookworm") { print $i; exit }
            }
            /^URIs:/ { uris = $2 }
            /^Suites:/ { suites = $0 }
            /^[[:space:]]*$/ { uris = ""; suites = "" }
            uris != "" && suites ~ /[[:space:]]bookworm([[:space:]]|$)/ { print uris; exit }
        ' "${files[@]}"
    fi
}

ensure_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE is present"
        return
    fi
    log "pulling $BASE_IMAGE"
    if timeout 120 docker pull -q "$BASE_IMAGE" >"$STATE/pull.log" 2>&1; then
        return
    fi
    log "cannot pull $BASE_IMAGE ($(tail -n 1 "$STATE/pull.log")); using a local Debian base"
    BASE_IMAGE="$LOCAL_BASE"
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE is present (made by an earlier run)"
        return
    fi
    command -v debootstrap >/dev/null 2>&1 || install_engine || fail "cannot install debootstrap"
    local mirror rootfs="$STATE/rootfs"
    mirror="$(debian_mirror)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    log "debootstrap --variant=minbase bookworm from $mirror (with python3, python3-pip, python3-venv)"
    rm -rf "$rootfs"
    # Debian bookworm's python3 is 3.11; python-is-python3 makes `python` resolve too.
    debootstrap --variant=minbase \
        --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$STATE/debootstrap.log" >&2; fail "debootstrap failed (log: $STATE/debootstrap.log)"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    log "docker import -> $BASE_IMAGE"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    local pyver
    pyver="$(docker run --rm --network none "$BASE_IMAGE" python --version)" \
        || fail "the local base image has no working python"
    log "$BASE_IMAGE has $pyver"
}

# ---- build ------------------------------------------------------------------------------------

# pip's CA file as this machine configures it (TLS to PyPI may be intercepted by a proxy).
extra_ca() {
    local ca="${MOLGEN_EXTRA_CA:-}"
    if [[ -z "$ca" ]] && command -v python3 >/dev/null 2>&1; then
        ca="$(python3 -m pip config get global.cert 2>/dev/null || true)"
    fi
    [[ -z "$ca" ]] && ca="${PIP_CERT:-}"
    [[ -z "$ca" && -s /etc/ssl/certs/ca-certificates.crt ]] && ca=/etc/ssl/certs/ca-certificates.crt
    printf '%s' "$ca"
}

build_image() {
    local ctx="$STATE/context" ca build_args=()
    log "assembling the build context in $ctx"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    # The checkout as it is (untracked files included), less what is never wanted; the
    # .dockerignore then applies as usual.
    tar -C "$ROOT" -c \
        --exclude=./.git --exclude=./runs --exclude=./out --exclude=./wheels \
        --exclude=./lightning_logs --exclude=./.venv --exclude='__pycache__' . \
        | tar -C "$ctx" -x
    mkdir -p "$ctx/wheels"
    if [[ -d "$WHEELS" ]]; then
        # Only the torch wheel: it spares the build a download of several GB of CUDA torch.
        find "$WHEELS" -maxdepth 1 -name 'torch-*.whl' -exec cp {} "$ctx/wheels/" \;
    fi
    ca="$(extra_ca)"
    if [[ -n "$ca" && -s "$ca" ]]; then
        cp "$ca" "$ctx/extra-ca.pem"
        log "extra CA: $ca -> extra-ca.pem"
    fi
    if compgen -G "$ctx/wheels/torch-*.whl" >/dev/null; then
        log "wheels/: $(cd "$ctx/wheels" && ls)"
        # The torch wheel is in wheels/: no need for the CPU wheel index (unreachable here).
        build_args+=(--build-arg TORCH_INDEX_URL=)
    fi
    log "docker build -t $IMAGE (base $BASE_IMAGE, log: $STATE/build.log)"
    local t0=$SECONDS
    if ! docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "${build_args[@]}" \
        -t "$IMAGE" "$ctx" >"$STATE/build.log" 2>&1; then
        tail -n 40 "$STATE/build.log" >&2
        fail "docker build failed (log: $STATE/build.log)"
    fi
    log "built $IMAGE in $((SECONDS - t0)) s;" \
        "size $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"
    # No pruning: with the classic builder the build stage's layers are untagged images that
    # `docker image prune` deletes, which would throw the dependency cache away on every run.
}

# ---- runs -------------------------------------------------------------------------------------

run_checks() {
    local out rows valid t0
    TMP_DIR="$(mktemp -d)"
    chmod 0777 "$TMP_DIR"  # the image runs as an unprivileged user
    # Runtime needs no network: every run is offline (--network none).
    local run=(docker run --rm --network none)

    log "check 1: molgen --help"
    out="$("${run[@]}" "$IMAGE" --help)" || fail "docker run IMAGE --help failed"
    grep -q "train" <<<"$out" || fail "--help does not list the train command"
    out="$("${run[@]}" --entrypoint id "$IMAGE" -u)" || fail "cannot run id in the image"
    [[ "$out" != 0 ]] || fail "the image runs as root"
    "${run[@]}" --entrypoint python "$IMAGE" -c \
        "from molgen.cli import DATA_DIR; assert (DATA_DIR / 'moses' / 'train.csv.gz').is_file(), DATA_DIR" \
        || fail "the bundled data is not where molgen looks for it"
    log "runs as uid $out; bundled data found"

    gzip -dc "$ROOT/data/moses/train.csv.gz" | awk 'NR == 1 { print "smiles"; next } NR <= 201' \
        >"$TMP_DIR/mols.csv"
    chmod 0666 "$TMP_DIR/mols.csv"

    log "check 2: train on 200 MOSES molecules (--preset tiny --max-steps 20)"
    t0=$SECONDS
    "${run[@]}" -v "$TMP_DIR:/work" "$IMAGE" \
        train /work/mols.csv --preset tiny --max-steps 20 --out /work/run \
        || fail "docker run IMAGE train failed"
    [[ -s "$TMP_DIR/run/model.pt" ]] || fail "train did not write run/model.pt"
    log "trained in $((SECONDS - t0)) s: $(cd "$TMP_DIR/run" && echo *)"

    log "check 3: sample 20 molecules from that model (raw view: a 20-step model is rarely valid)"
    "${run[@]}" -v "$TMP_DIR:/work" "$IMAGE" sample /work/run/model.pt -n 20 --keep-invalid -o /work/s.csv \
        || fail "docker run IMAGE sample failed"
    [[ -s "$TMP_DIR/s.csv" ]] || fail "sample did not write s.csv"
    rows=$(($(wc -l <"$TMP_DIR/s.csv") - 1))
    ((rows == 20)) || fail "sample wrote $rows rows, expected 20"
    log "s.csv: $rows rows; first: $(sed -n 2p "$TMP_DIR/s.csv")"

    if [[ -f "$ROOT/$BUNDLED_MODEL" ]]; then
        log "check 4: sample 20 molecules from the bundled default model"
        out="$("${run[@]}" "$IMAGE" sample -n 20)" || fail "docker run IMAGE sample -n 20 failed"
        rows=$(($(grep -c . <<<"$out") - 1))
        ((rows == 20)) || fail "sample -n 20 printed $rows rows, expected 20"
        valid=$(tr -d '\r' <<<"$out" | grep -c ',True$' || true)
        ((valid >= 10)) || fail "only $valid of 20 molecules from the bundled model are valid"
        log "bundled model: $rows rows, $valid valid; first: $(sed -n 2p <<<"$out")"
    else
        printf '\n*** SKIPPED: no bundled model yet (%s is not in the checkout) ***\n\n' \
            "$BUNDLED_MODEL"
    fi
}

main() {
    mkdir -p "$STATE"
    command -v docker >/dev/null 2>&1 || [[ "$(id -u)" == 0 ]] \
        || no_engine "no docker client and not root"
    start_engine
    ensure_base_image
    build_image
    run_checks
    log "PASSED: image $IMAGE (base $BASE_IMAGE)"
}

main "$@"
