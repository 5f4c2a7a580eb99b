#!/usr/bin/env bash
# demo.sh BUILD_DIR: knit end to end, on this machine, in a few seconds.
#
# Starts a relay on 127.0.0.1 (an ephemeral port, its embedded SQLite store
# in a temporary directory), makes two replicas of one user's notes (a
# "laptop" and a "phone") with the plain sqlite3 shell, tracks the table
# with sync-agent, writes on both sides -- including a conflicting write of
# one cell and a set edited on both devices -- syncs each side with
# `sync-agent run --once`, and prints both tables and the state digests of
# both replicas and of the relay, which must be equal.  Everything it made
# is removed at the end.  Called by `./run.sh demo` (as tests/demo.sh build).
set -euo pipefail

BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
RELAY="$BUILD/cli/sync-relay"
AGENT="$BUILD/cli/sync-agent"
INSPECT="$BUILD/cli/sync-inspect"
for p in "$RELAY" "$AGENT" "$INSPECT"; do
    [ -x "$p" ] || { echo "demo: $p is missing; build first (./run.sh build)" >&2; exit 1; }
done
command -v sqlite3 >/dev/null || { echo "demo: the sqlite3 shell is missing (apt-get install sqlite3)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/knit-demo-XXXXXX)
RELAY_PID=""
cleanup() {
    if [ -n "$RELAY_PID" ]; then
        kill "$RELAY_PID" 2>/dev/null || true
        wait "$RELAY_PID" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
show() { # show REPLICA: the notes table as the sqlite3 shell sees it
    sqlite3 -header -column "$1" "SELECT id, title, tags FROM notes ORDER BY id"
}

say "A relay on 127.0.0.1 with its embedded store (in $DIR)"
head -c 48 /dev/urandom | base64 > "$DIR/jwt.secret"
chmod 600 "$DIR/jwt.secret"
"$RELAY" --listen 127.0.0.1:0 --data "$DIR/relay.db" --jwt-secret-file "$DIR/jwt.secret" \
    > "$DIR/relay.out" 2> "$DIR/relay.log" &
RELAY_PID=$!
PORT=""
for _ in $(seq 1 100); do
    PORT=$(sed -n 's/^sync-relay: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$DIR/relay.out")
    [ -n "$PORT" ] && break
    kill -0 "$RELAY_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$PORT" ] || { echo "demo: the relay did not start:" >&2; cat "$DIR/relay.log" >&2; exit 1; }
echo "sync-relay listening on 127.0.0.1:$PORT (pid $RELAY_PID)"
# One user, two devices: both present a token for alice, so both replicas
# sync the namespace user:alice.
"$RELAY" mint-token --secret-file "$DIR/jwt.secret" --sub alice --ttl 3600 > "$DIR/alice.jwt"
echo "token for alice in $DIR/alice.jwt"
SYNC=(--relay "127.0.0.1:$PORT" --token-file "$DIR/alice.jwt" --once --log-level warn)

say "Two replicas, made and written with plain SQL, before any sync"
for dev in laptop phone; do
    run sqlite3 "$DIR/$dev.db" "CREATE TABLE notes(id TEXT PRIMARY KEY, title TEXT,
        body TEXT, tags TEXT NOT NULL DEFAULT '[]')"
done
run sqlite3 "$DIR/laptop.db" "INSERT INTO notes VALUES
    ('groceries', 'Groceries', 'milk, eggs', '[\"home\",\"todo\"]'),
    ('trip', 'Trip to Lisbon', 'book flights', '[\"travel\"]')"
run "$AGENT" track "$DIR/laptop.db" notes --orset tags
run "$AGENT" track "$DIR/phone.db" notes --orset tags
run sqlite3 "$DIR/phone.db" "INSERT INTO notes VALUES ('call', 'Call the bank', '', '[]')"

say "First sync: each side pushes what it wrote offline (into user:alice) and pulls"
run "$AGENT" run "$DIR/laptop.db" "${SYNC[@]}"
run "$AGENT" run "$DIR/phone.db" "${SYNC[@]}"
run "$AGENT" run "$DIR/laptop.db" "${SYNC[@]}"

say "Offline on both devices: a conflicting write, and one set edited on both sides"
# The same cell (groceries.title) written on both: the later write wins,
# by its hybrid-logical-clock stamp, on both devices.
run sqlite3 "$DIR/laptop.db" "UPDATE notes SET title = 'Groceries for Saturday' WHERE id = 'groceries'"
sleep 0.05
run sqlite3 "$DIR/phone.db" "UPDATE notes SET title = 'Groceries (weekend)' WHERE id = 'groceries'"
# The tags set: the laptop adds urgent and removes todo; the phone adds
# shared.  Both edits survive: home, shared, urgent.
run sqlite3 "$DIR/laptop.db" "UPDATE notes SET tags = '[\"home\",\"urgent\"]' WHERE id = 'groceries'"
run sqlite3 "$DIR/phone.db" "UPDATE notes SET tags = '[\"home\",\"shared\",\"todo\"]' WHERE id = 'groceries'"
# And a delete on one side.
run sqlite3 "$DIR/phone.db" "DELETE FROM notes WHERE id = 'call'"
echo "laptop:"; show "$DIR/laptop.db"
echo "phone:"; show "$DIR/phone.db"

say "Sync both sides, twice, so each sees the other"
for round in 1 2; do
    run "$AGENT" run "$DIR/laptop.db" "${SYNC[@]}"
    run "$AGENT" run "$DIR/phone.db" "${SYNC[@]}"
done

say "Converged"
echo "laptop:"; show "$DIR/laptop.db"
echo "phone:"; show "$DIR/phone.db"

say "State digests: both replicas and the relay, for user:alice"
DL=$("$INSPECT" digest --ns user:alice "$DIR/laptop.db")
DP=$("$INSPECT" digest --ns user:alice "$DIR/phone.db")
DR=$("$INSPECT" digest --ns user:alice "$DIR/relay.db")
printf 'laptop  %s\nphone   %s\nrelay   %s\n' "$DL" "$DP" "$DR"
TL=$(sqlite3 "$DIR/laptop.db" "SELECT id, title, body, tags FROM notes ORDER BY id")
TP=$(sqlite3 "$DIR/phone.db" "SELECT id, title, body, tags FROM notes ORDER BY id")
if [ "$TL" = "$TP" ] && [ "$DL" = "$DP" ] && [ "$DL" = "$DR" ]; then
    printf '\n\033[1mequal: same rows on both devices, same digest on both and on the relay\033[0m\n'
else
    echo "demo: the replicas did not converge" >&2
    exit 1
fi
