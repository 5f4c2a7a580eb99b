#!/usr/bin/env bash
# run.sh: set up, build and run knit on a Debian machine.
#
#   ./run.sh demo       install what is missing, build, run the demo: a relay
#                       on 127.0.0.1 and two replicas syncing through it
#   ./run.sh test       install what is missing, build, run the whole suite
#   ./run.sh sanitize   the suite again, built with ASan and UBSan
#   ./run.sh build      install and build only (build/)
set -euo pipefail
cd "$(dirname "$0")"

PKGS="build-essential cmake pkg-config sqlite3 libsqlite3-dev libuv1-dev libcbor-dev
      libcurl4-openssl-dev libbearssl-dev libjansson-dev clang-format openssl
      libhttp-parser-dev libwslay-dev curl python3-websockets prometheus chromium
      python3-jwt python3-cryptography libpq-dev postgresql"
JOBS=$(nproc 2>/dev/null || echo 2)

setup() {
    local missing=()
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "run.sh: installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"
    fi
}

build() { # build DIR [cmake args...]
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
}

cmd=${1:-}
case "$cmd" in
build)
    setup
    build build
    ;;
test)
    setup
    build build
    (cd build && ctest -j "$JOBS" --output-on-failure)
    ;;
sanitize)
    setup
    build build-asan -DKNIT_SANITIZE=address,undefined
    # Randomized suites run a fifth of their cases here: the instrumented
    # build is several times slower, and the plain run does them all.
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 KNIT_CASES_SCALE=${KNIT_CASES_SCALE:-0.2} \
        ctest -j "$JOBS" --output-on-failure)
    ;;
demo)
    setup
    build build
    exec ./tests/demo.sh build
    ;;
*)
    sed -n '2,9p' "$0"
    exit 2
    ;;
esac
