#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite, so every machine (CI included) runs the store
# and service tests on PostgreSQL as well as SQLite.
#
#   scripts/postgres.sh          start it (or reuse the running one) and print its URL
#   scripts/postgres.sh url      print the URL only
#   scripts/postgres.sh stop     stop it (the data stays; "start" reuses it)
#   scripts/postgres.sh destroy  stop it and remove its data
#
# Settings (environment): LINKDESK_PG_PORT (55432), LINKDESK_PG_DIR (/tmp/linkdesk-pg-<port>).
# The server listens on localhost only and trusts local connections: it holds test data only,
# and it runs with fsync off, so it must never hold anything else.
set -euo pipefail

PORT="${LINKDESK_PG_PORT:-55432}"
# Outside the repository: PostgreSQL runs as an unprivileged user, which cannot always reach
# the checkout (e.g. one under /root).
DATA_DIR="${LINKDESK_PG_DIR:-/tmp/linkdesk-pg-$PORT}"
DB_USER=linkdesk
URL="postgresql+psycopg://$DB_USER@localhost:$PORT/postgres"

log() { echo "postgres.sh: $*" >&2; }

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
    fi
}

install_postgres() {
    log "installing Debian's postgresql (pg_ctl not found)"
    # Only this script's own cluster is wanted; the package would otherwise create and start
    # a system-wide "main" cluster on port 5432.
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" |
        $SUDO tee /etc/postgresql-common/createcluster.d/linkdesk-no-main.conf >/dev/null
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
}

# PostgreSQL refuses to run as root; as root the server runs as the package's "postgres" user.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$OWNER" -- "$@"
    else
        "$@"
    fi
}

choose_owner() {
    if [ "$(id -u)" != 0 ]; then
        OWNER=$(id -un)
        return
    fi
    OWNER=postgres
    if ! id "$OWNER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$OWNER"
    fi
}

is_running() {
    [ -f "$DATA_DIR/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

wait_ready() {
    local i
    for i in $(seq 1 120); do
        if "$BIN/pg_isready" -q -h localhost -p "$PORT" -U "$DB_USER" -d postgres; then
            return 0
        fi
        sleep 0.5
    done
    log "server on port $PORT did not become ready; log: $DATA_DIR/server.log"
    tail -n 20 "$DATA_DIR/server.log" >&2 || true
    return 1
}

start() {
    if is_running; then
        wait_ready
        echo "$URL"
        return
    fi
    if "$BIN/pg_isready" -q -h localhost -p "$PORT"; then
        log "port $PORT is taken by another server; set LINKDESK_PG_PORT or stop it"
        exit 1
    fi
    if [ ! -f "$DATA_DIR/PG_VERSION" ]; then
        log "creating a test cluster in $DATA_DIR"
        rm -rf "$DATA_DIR"
        mkdir -p "$DATA_DIR"
        chown "$OWNER" "$DATA_DIR"
        chmod 700 "$DATA_DIR"
        as_owner "$BIN/initdb" -D "$DATA_DIR" -U "$DB_USER" --auth=trust -E UTF8 \
            --locale=C.UTF-8 >/dev/null
        # Test data only: durability traded for speed; enough connections for several
        # processes with their own pools (the replica test).
        cat >>"$DATA_DIR/postgresql.conf" <<EOF
listen_addresses = 'localhost'
port = $PORT
unix_socket_directories = '$DATA_DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    log "starting PostgreSQL on localhost:$PORT"
    as_owner "$BIN/pg_ctl" -D "$DATA_DIR" -l "$DATA_DIR/server.log" -w -t 60 start >/dev/null
    wait_ready
    echo "$URL"
}

stop() {
    if is_running; then
        as_owner "$BIN/pg_ctl" -D "$DATA_DIR" -m fast -w stop >/dev/null
        log "stopped"
    fi
}

BIN=$(pg_bin)
command="${1:-start}"
case "$command" in
url)
    echo "$URL"
    exit 0
    ;;
start) ;;
stop | destroy)
    [ -n "$BIN" ] || exit 0
    ;;
*)
    echo "usage: $0 [start|url|stop|destroy]" >&2
    exit 2
    ;;
esac

if [ -z "$BIN" ]; then
    install_postgres
    BIN=$(pg_bin)
    [ -n "$BIN" ] || { log "pg_ctl still missing after installing postgresql"; exit 1; }
fi
choose_owner

case "$command" in
start) start ;;
stop) stop ;;
destroy)
    stop
    rm -rf "$DATA_DIR"
    ;;
esac
