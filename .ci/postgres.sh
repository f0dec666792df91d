# Sourced by .ci/run: a throwaway PostgreSQL server for the tests of the shared ledger (issue 7).
#
#   pg_start   installs the server if its binaries are missing (Debian's `postgresql`), creates
#              a cluster in a new temp dir owned by the `postgres` user (initdb refuses root),
#              starts it on a free 127.0.0.1 port with a random password, and exports
#              FANOUT_TEST_POSTGRES=postgresql://fanout:PASSWORD@127.0.0.1:PORT/postgres
#   pg_stop    stops it and removes the temp dir (install it with `trap pg_stop EXIT`)

PG_DIR=""
PG_BIN=""

_pg_bin_dir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Run a command as the `postgres` user when we are root (initdb and postgres refuse root).
_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    PG_BIN="$(_pg_bin_dir)"
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
        echo "postgres: installing the server (Debian package postgresql)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        PG_BIN="$(_pg_bin_dir)"
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home postgres
    fi
    PG_DIR="$(mktemp -d /tmp/fanout-pg.XXXXXX)"
    local password port
    password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    printf '%s\n' "$password" >"$PG_DIR/pwfile"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres:postgres "$PG_DIR"
    fi
    chmod 700 "$PG_DIR"
    _pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U fanout --pwfile="$PG_DIR/pwfile" \
        --auth=scram-sha-256 -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; return 1; }
    rm -f "$PG_DIR/pwfile"
    _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_DIR -c max_connections=200" \
        start >/dev/null ||
        { cat "$PG_DIR/server.log" >&2; return 1; }
    export FANOUT_TEST_POSTGRES="postgresql://fanout:${password}@127.0.0.1:${port}/postgres"
    echo "postgres: $("$PG_BIN/postgres" --version) on 127.0.0.1:$port (data in $PG_DIR)" >&2
}

pg_stop() {
    if [ -n "$PG_DIR" ] && [ -d "$PG_DIR/data" ]; then
        _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$PG_DIR" ]; then
        rm -rf "$PG_DIR"
    fi
}
