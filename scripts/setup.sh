#!/usr/bin/env bash
# Prepare a machine for the test suite: the moto DynamoDB server, the
# awsflock 0.2.0 Python client used by the interop tests, faketime, etcd
# and protoc, and a build of the crate (with the etcd store when protoc is
# there). Safe to run again: finished steps are skipped. Without root, it
# prints the apt-get command that installs what is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS="${AWSFLOCK_TOOLS:-$HOME/.cache/awsflock}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$TOOLS"

log() { echo "setup: $*" >&2; }

# apt_install WHY PACKAGE...: installs Debian packages when root; refreshes
# the package lists only if the first attempt fails (a fresh machine has none).
apt_install() {
    local why="$1"
    shift
    [ "$#" -gt 0 ] || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing: $* (Debian package names; $why)"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        log "missing: $* ($why); install them with:"
        log "    sudo apt-get update && sudo apt-get install -y $*"
        return 0
    fi
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "$@" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq "$@" >/dev/null
    fi
}

# Debian packages: faketime for the clock-skew tests; etcd (server and
# etcdctl) for the etcd store's tests and protoc, which the etcd client needs
# to build its gRPC code; venv support when python3 is Debian's own.
pkgs=()
command -v faketime >/dev/null 2>&1 || pkgs+=(faketime)
[ -x /usr/bin/etcd ] || pkgs+=(etcd-server)
[ -x /usr/bin/etcdctl ] || pkgs+=(etcd-client)
command -v protoc >/dev/null 2>&1 || pkgs+=(protobuf-compiler)
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
apt_install "the tests that need them will be skipped or fail" "${pkgs[@]+"${pkgs[@]}"}"

# make_venv NAME CHECK_PYTHON_CODE PIP_ARGS...
# (Re)creates $TOOLS/NAME unless its python already passes CHECK.
make_venv() {
    local name="$1" check="$2"
    shift 2
    local dir="$TOOLS/$name"
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
        return 0
    fi
    log "creating $dir ($*)"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    if ! "$dir/bin/python" -c "$check"; then
        log "$dir does not work after install"
        exit 1
    fi
}

# The two virtualenvs install side by side while cargo builds below (pip
# waits mostly on the network; the build on the CPU).
venv_pids=()

# moto is pinned: scripts/moto-server.py patches one of its private APIs.
# A venv with another version is made again.
MOTO_VERSION=5.2.5
make_venv moto \
    "import os, sys, boto3, moto.server, importlib.metadata as m; sys.exit(0 if m.version('moto') == '$MOTO_VERSION' and os.access(os.path.join(sys.prefix, 'bin', 'moto_server'), os.X_OK) else 1)" \
    "moto[server]==$MOTO_VERSION" &
venv_pids+=($!)

make_venv peer \
    "import os, sys, importlib.metadata as m, awsflock.main; sys.exit(0 if m.version('awsflock') == '0.2.0' and os.access(os.path.join(sys.prefix, 'bin', 'awsflock'), os.X_OK) else 1)" \
    'awsflock==0.2.0' &
venv_pids+=($!)

# The etcd store needs protoc to build; everything else does not.
# AWSFLOCK_SETUP_BUILD adds targets: scripts/test.sh builds the tests and
# examples here too, in one cargo run while the Python tools install (they
# build tokio with the dev-dependencies' features, so a build of the binary
# alone would be a second build of everything that depends on tokio).
# shellcheck disable=SC2086 # a list of cargo arguments
if command -v protoc >/dev/null 2>&1 || [ -x "${PROTOC:-}" ]; then
    cargo build --quiet --features etcd ${AWSFLOCK_SETUP_BUILD:-}
else
    log "protoc not found: building without the etcd store (the etcd tests and"
    log "scripts/test.sh need it: sudo apt-get install -y protobuf-compiler)"
    cargo build --quiet ${AWSFLOCK_SETUP_BUILD:-}
fi

# Wait for the virtualenvs by pid (a bare `wait` would also wait for
# anything else this shell started).
for pid in "${venv_pids[@]}"; do
    wait "$pid" || { log "a Python tool failed to install (see above)"; exit 1; }
done
