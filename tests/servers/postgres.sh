#!/usr/bin/env bash
# Throwaway PostgreSQL server for the integration tests.
#
#   eval "$(tests/servers/postgres.sh start)"   # start (or reuse) and export PG*/DATABASE_URL
#   tests/servers/postgres.sh status             # exit 0 if our instance is running
#   tests/servers/postgres.sh stop               # stop it and delete the cluster
#
# Contract shared by every tests/servers/<name>.sh script:
#   - `start` is idempotent, refuses a port used by something else, waits for
#     readiness and prints only `export NAME=value` lines on stdout; progress
#     and errors go to stderr. Exit 2 if the server died or never became ready.
#   - `stop` is idempotent and removes everything the server wrote under $INFRA_RUN
#     (except its log, which is kept for post-mortems and truncated at the next start).
#   - `status` exits 0 if the instance is running, 1 otherwise.
#
# Environment:
#   PGPORT     port to listen on (default 54329); bound to 127.0.0.1 only
#   INFRA_RUN  run directory (default /tmp/replicator-infra/run), holding
#              postgres/ (cluster + socket), postgres.pid, postgres.log
#   PG_TIMEOUT readiness timeout in seconds (default 30)
#
set -euo pipefail

PORT=${PGPORT:-54329}
RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
TIMEOUT=${PG_TIMEOUT:-30}
PG_LIB=/usr/lib/postgresql
D=$RUN/postgres            # cluster dir: data/ and the unix socket
DATA=$D/data
PIDFILE=$RUN/postgres.pid  # copy of the postmaster pid (truth: $DATA/postmaster.pid)
LOG=$RUN/postgres.log

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

# Highest installed major version's bin dir, or empty.
find_bin() {
    local p
    p=$(ls -d "$PG_LIB"/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $p ]] && dirname "$p"
    return 0
}

# postgres refuses to run as root: run server-side tools as the postgres user.
# cd / so a cwd the postgres user cannot read (e.g. /root) does not break initdb.
as_pg() {
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# True if $1 is a live (not zombie) postgres process. kill -0 alone is not enough:
# in containers whose init does not reap, a killed postmaster lingers as a zombie.
is_postgres() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat == *"(postgres) "[!ZX]* ]]
}

# Pid of our running postmaster (from its own pid file), or nothing; exit 1 if not running.
running_pid() {
    local pid
    [[ -r $DATA/postmaster.pid ]] || return 1
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && is_postgres "$pid" || return 1
    echo "$pid"
}

# Port recorded by the running postmaster (line 4 of postmaster.pid).
running_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null; }

psql_q() { "$BIN/psql" -X -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAt "$@"; }

print_exports() {
    cat <<EOF
export PGHOST=127.0.0.1
export PGPORT=$PORT
export PGUSER=postgres
export PGPASSWORD=postgres
export PGDATABASE=postgres
export DATABASE_URL=postgres://postgres:postgres@127.0.0.1:$PORT/postgres
export PG_TLS_CA=$D/tls/ca.pem
EOF
}

# A private CA and a server certificate for 127.0.0.1, so TLS clients can be tested for real.
make_tls() {
    command -v openssl >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >&2
    }
    local t=$D/tls
    mkdir -p "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=replicator test CA" \
        -keyout "$t/ca.key" -out "$t/ca.pem" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$t/server.key" \
        -out "$t/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$t/ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -days 2 -extfile "$t/ext" -out "$t/server.pem" >/dev/null 2>&1
    chmod 600 "$t/server.key"
    if [[ $(id -u) == 0 ]]; then chown -R postgres: "$t"; fi
    chmod 755 "$t"
    chmod 644 "$t/ca.pem"
}

install_postgres() {
    [[ $(id -u) == 0 ]] || die "PostgreSQL is not installed under $PG_LIB and we are not root; install postgresql + postgresql-client"
    log "PostgreSQL not found under $PG_LIB; installing it with apt-get"
    # Do not let the package create (and start) the system 'main' cluster on 5432.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/replicator-tests.conf
    {
        apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql postgresql-client
    } >&2 || die "apt-get install of postgresql failed"
}

# Best-effort removal of a cluster (running or not).
teardown() {
    local pid
    if pid=$(running_pid); then
        log "stopping postmaster pid $pid"
        if [[ -n ${BIN:-} ]]; then
            as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >&2 || true
        fi
        if is_postgres "$pid"; then
            kill -QUIT "$pid" 2>/dev/null || true
            for _ in $(seq 100); do is_postgres "$pid" || break; sleep 0.05; done
            if is_postgres "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
    fi
    rm -rf "$D" "$PIDFILE"
}

cmd_start() {
    local t0 pid
    t0=$(date +%s%N)

    BIN=$(find_bin)
    if [[ -z $BIN ]]; then
        install_postgres
        BIN=$(find_bin)
        [[ -n $BIN ]] || die "no $PG_LIB/*/bin/postgres after installing"
    fi

    # Reuse a running instance.
    if pid=$(running_pid); then
        local rport
        rport=$(running_port)
        [[ $rport == "$PORT" ]] || die "our PostgreSQL (pid $pid) already runs on port $rport, not $PORT; run '$0 stop' first"
        if psql_q -c 'select 1' >/dev/null 2>&1; then
            log "reusing running PostgreSQL (pid $pid, port $PORT)"
            print_exports
            return 0
        fi
        log "PostgreSQL pid $pid does not answer; recreating it"
    fi
    teardown   # stale leftovers of an earlier run (dead server, half-made cluster)

    if port_in_use "$PORT"; then
        die "port 127.0.0.1:$PORT is already in use by another process (set PGPORT to use another port)"
    fi

    mkdir -p "$RUN"
    chmod go+x "$RUN"
    if [[ $(id -u) == 0 ]] && ! runuser -u postgres -- test -x "$RUN"; then
        die "the postgres user cannot enter $RUN; choose an INFRA_RUN it can traverse"
    fi
    mkdir -p "$D"
    : >"$LOG"
    if [[ $(id -u) == 0 ]]; then chown postgres: "$D" "$LOG"; fi
    chmod 755 "$D"   # data/ itself must stay 0700 (initdb does that)

    log "creating cluster in $DATA ($("$BIN/postgres" --version))"
    if ! as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --no-sync \
            -E UTF8 --locale=C.UTF-8 >>"$LOG" 2>&1; then
        show_log
        teardown
        die "initdb failed"
    fi

    make_tls
    log "starting on 127.0.0.1:$PORT"
    # pg_ctl -w waits until the postmaster reports "ready" and fails early if it exits.
    local deadline=$(( $(date +%s) + TIMEOUT ))
    if ! as_pg "$BIN/pg_ctl" -D "$DATA" -w -t "$TIMEOUT" -l "$LOG" start -o "-p $PORT -k $D \
            -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
            -c full_page_writes=off -c wal_level=logical -c max_connections=200 \
            -c ssl=on -c ssl_cert_file=$D/tls/server.pem -c ssl_key_file=$D/tls/server.key" >&2; then
        show_log
        teardown
        die "PostgreSQL did not start (died, or not ready after ${TIMEOUT}s)" 2
    fi

    # Readiness as the clients see it: psql 'select 1' over TCP, every 50 ms, within the
    # same deadline; fail early if the postmaster has gone away.
    while ! psql_q -c 'select 1' >/dev/null 2>&1; do
        if ! running_pid >/dev/null; then
            show_log
            teardown
            die "PostgreSQL exited during startup" 2
        fi
        if (( $(date +%s) >= deadline )); then
            show_log
            teardown
            die "PostgreSQL not answering 'select 1' after ${TIMEOUT}s" 2
        fi
        sleep 0.05
    done
    running_pid >"$PIDFILE"

    psql_q -c "alter user postgres password 'postgres'" >/dev/null
    log "ready: pid $(cat "$PIDFILE"), port $PORT, socket dir $D, log $LOG ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
    print_exports
}

cmd_stop() {
    BIN=$(find_bin)
    if running_pid >/dev/null || [[ -e $D ]]; then
        teardown
        log "stopped and removed $D"
    else
        log "not running"
    fi
}

server_main "$@"
