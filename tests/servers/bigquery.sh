#!/usr/bin/env bash
# Throwaway BigQuery server (bqemulator, PyPI: DuckDB-backed, REST v2 + plaintext gRPC) for the
# integration tests, started offline.
#
#   eval "$(tests/servers/bigquery.sh start)"   # start (or reuse); exports BQ_BASE, BQ_PROJECT, BQ_GRPC
#   tests/servers/bigquery.sh status             # exit 0 if our instance is running
#   tests/servers/bigquery.sh stop               # stop it (all its state is in memory)
#
# Same contract as tests/servers/postgres.sh (start idempotent, refuses a port used by something
# else, waits for readiness, only `export` lines on stdout, exit 2 if the server died or never
# became ready; stop idempotent, keeps only the log; status exits 0/1).
#
# Installs bqemulator on first use: a venv under $INFRA_RUN/../bqemulator-venv with the pinned
# versions (bqemulator + duckdb + numpy, which its UDFs need but it declares only as an extra;
# ~50-80 s, ~510 MB), re-created when it holds other versions. Needs python3 with venv and
# access to PyPI.
#
# Offline: bqemulator runs DuckDB `INSTALL spatial` / `INSTALL avro` at every start, which
# downloads from DuckDB's extension repository (fatal for spatial when unreachable). The server
# is therefore run through a small wrapper ($BQ_VENV/bqemulator-offline.py, written by this
# script) that turns off DuckDB's extension autoinstall, skips both extension loads and makes
# GEOGRAPHY raise, then calls bqemulator's CLI: no outbound connection, nothing under $HOME.
# GEOGRAPHY (ST_*) and Avro load/extract are unsupported; everything else works.
#
# Environment:
#   BQ_PORT       REST port (default 9050); bound to 127.0.0.1 only
#   BQ_GRPC_PORT  gRPC port (Storage Write API, plaintext; default 9060); 127.0.0.1 only
#   BQ_VENV       venv (default $INFRA_RUN/../bqemulator-venv)
#   INFRA_RUN     run directory (default /tmp/replicator-infra/run), holding bigquery.pid, bigquery.log
#   BQ_TIMEOUT    readiness timeout in seconds (default 90)
#
# No authentication is checked: clients send any bearer token. Project `test-project`; REST base
# for clients is $BQ_BASE/bigquery/v2. State is in memory (--ephemeral); a restart resets it.
set -euo pipefail

VERSION=1.4.0
DUCKDB_VERSION=2.0.1
PROJECT=test-project
PORT=${BQ_PORT:-9050}
GRPC_PORT=${BQ_GRPC_PORT:-9060}
RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
TIMEOUT=${BQ_TIMEOUT:-90}
VENV=${BQ_VENV:-$(dirname "$RUN")/bqemulator-venv}
PY=$VENV/bin/python
WRAPPER=$VENV/bqemulator-offline.py
PIDFILE=$RUN/bigquery.pid
LOG=$RUN/bigquery.log

# shellcheck disable=SC1091
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

# True if $1 is a live (not zombie) process running our wrapper. kill -0 alone is not enough: in
# containers whose init does not reap, a killed server lingers as a zombie. The process is a
# plain `python`, so it is recognised by its second argument (the wrapper's path).
is_server() {
    local stat
    local -a argv
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat != *") "[ZX]* ]] || return 1
    mapfile -d '' -t argv 2>/dev/null <"/proc/$1/cmdline" || return 1
    [[ ${argv[1]:-} == "$WRAPPER" ]]
}

# True if $1 is a live (not zombie) process, whatever its name (right after `&` it may still
# be bash or setsid, not yet the server).
is_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat != *") "[ZX]* ]]
}

# Pid of our running server (from the pid file), or nothing; exit 1 if not running.
running_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && is_server "$pid" || return 1
    echo "$pid"
}

# Value of the option $2 (e.g. --rest-port) the running server $1 was started with.
running_arg() {
    local -a argv
    mapfile -d '' -t argv 2>/dev/null <"/proc/$1/cmdline" || return 0
    local i
    for ((i = 0; i < ${#argv[@]} - 1; i++)); do
        [[ ${argv[i]} == "$2" ]] && { echo "${argv[i + 1]}"; return 0; }
    done
}

# REST port the running server was started with (used by lib.sh's status).
running_port() { running_arg "$1" --rest-port; }

print_exports() {
    cat <<EOF
export BQ_BASE=http://127.0.0.1:$PORT
export BQ_PROJECT=$PROJECT
export BQ_GRPC=http://127.0.0.1:$GRPC_PORT
EOF
}

# "bqemulator-version duckdb-version" in the venv if it is complete (incl. numpy), else nothing.
installed_versions() {
    [[ -x $PY ]] || return 0
    "$PY" -c 'import importlib.metadata as m, numpy, duckdb, bqemulator.cli
print(m.version("bqemulator"), m.version("duckdb"))' 2>/dev/null || true
}

# Idempotent: (re-)creates the venv when bqemulator is missing, incomplete or other versions.
install_bqemulator() {
    local t0
    [[ $(installed_versions) == "$VERSION $DUCKDB_VERSION" ]] && return 0
    t0=$(date +%s%N)
    log "installing bqemulator $VERSION (duckdb $DUCKDB_VERSION) into $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "bqemulator==$VERSION" "duckdb==$DUCKDB_VERSION" numpy >&2 ||
        die "pip install bqemulator==$VERSION duckdb==$DUCKDB_VERSION numpy failed"
    [[ $(installed_versions) == "$VERSION $DUCKDB_VERSION" ]] ||
        die "bqemulator $VERSION not usable in $VENV after installing"
    log "installed ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
}

# The offline wrapper, (re)written at every start so that it always matches this script.
write_wrapper() {
    cat >"$WRAPPER.tmp" <<'EOF'
# Written by tests/servers/bigquery.sh: runs bqemulator's CLI without any DuckDB extension
# download (the extension repository is unreachable in the test environment).
import sys

import duckdb

_connect = duckdb.connect


def _offline_connect(*args, **kwargs):
    # No implicit INSTALL of a known extension on any connection; keep the caller's config.
    if len(args) > 2:
        config, args = args[2], args[:2]
    else:
        config = kwargs.pop("config", None)
    config = dict(config or {})
    config["autoinstall_known_extensions"] = False
    return _connect(*args, config=config, **kwargs)


duckdb.connect = _offline_connect

import bqemulator.types.geography as _geography  # noqa: E402
from bqemulator.storage.engine import DuckDBEngine  # noqa: E402


def _skip_spatial(self):
    sys.stderr.write("bqemulator-offline: DuckDB spatial not loaded, GEOGRAPHY unsupported\n")


def _skip_format_extensions(self):
    pass  # DuckDB avro: Avro load/extract jobs report UnsupportedFeatureError


def _no_geography():
    raise RuntimeError("GEOGRAPHY is not supported (bqemulator offline: no DuckDB spatial)")


DuckDBEngine._load_spatial = _skip_spatial
DuckDBEngine._load_format_extensions = _skip_format_extensions
_geography._ensure_conv_conn = _no_geography

from bqemulator.cli import main  # noqa: E402

sys.exit(main())
EOF
    mv -f "$WRAPPER.tmp" "$WRAPPER"
}

# Best-effort stop of our server (running or not) and removal of its pid file.
teardown() {
    local pid
    if pid=$(running_pid); then
        log "stopping bqemulator pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        # SIGTERM: graceful stop, gRPC gets a 2 s grace period.
        for _ in $(seq 100); do is_server "$pid" || break; sleep 0.05; done
        if is_server "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        for _ in $(seq 40); do is_server "$pid" || break; sleep 0.05; done
    fi
    rm -f "$PIDFILE"
}

check_port() {
    # bash's /dev/tcp and the server would both wrap a port > 65535 silently.
    if [[ ! $2 =~ ^[0-9]{1,5}$ ]] || (( 10#$2 < 1 || 10#$2 > 65535 )); then
        die "invalid $1 '$2'"
    fi
}

cmd_start() {
    local t0 pid
    t0=$(date +%s%N)
    check_port BQ_PORT "$PORT"
    check_port BQ_GRPC_PORT "$GRPC_PORT"
    (( 10#$PORT != 10#$GRPC_PORT )) || die "BQ_PORT and BQ_GRPC_PORT are both $PORT"

    # Reuse a running instance.
    if pid=$(running_pid); then
        local rport rgrpc
        rport=$(running_arg "$pid" --rest-port)
        rgrpc=$(running_arg "$pid" --grpc-port)
        [[ $rport == "$PORT" && $rgrpc == "$GRPC_PORT" ]] ||
            die "our bqemulator (pid $pid) already runs on ports $rport/$rgrpc, not $PORT/$GRPC_PORT; run '$0 stop' first"
        if port_in_use "$PORT" && port_in_use "$GRPC_PORT"; then
            log "reusing running bqemulator (pid $pid, ports $PORT/$GRPC_PORT)"
            print_exports
            return 0
        fi
        log "bqemulator pid $pid does not accept connections; restarting it"
    fi
    teardown   # stale leftovers of an earlier run

    install_bqemulator
    local p
    for p in "$PORT" "$GRPC_PORT"; do
        if port_in_use "$p"; then
            die "port 127.0.0.1:$p is already in use by another process (set BQ_PORT / BQ_GRPC_PORT to use others)"
        fi
    done

    mkdir -p "$RUN"
    write_wrapper
    : >"$LOG"
    t0=$(date +%s%N)   # start time without the install
    log "starting bqemulator $VERSION on 127.0.0.1:$PORT (REST), 127.0.0.1:$GRPC_PORT (gRPC)"
    # Own session (like a daemon): survives this script, and a Ctrl-C meant for the test run does
    # not reach it (the runner stops it). stdout/stderr to the log so that `$(bigquery.sh start)`
    # returns. cwd $RUN: bqemulator reads a .bqemu.toml from its cwd. BQEMU_* variables in the
    # environment still apply (below the flags given here).
    (cd "$RUN" && exec setsid "$PY" "$WRAPPER" start \
        --rest-host 127.0.0.1 --rest-port "$PORT" --grpc-host 127.0.0.1 --grpc-port "$GRPC_PORT" \
        --project "$PROJECT" --ephemeral --log-format console --log-level warning \
        </dev/null >>"$LOG" 2>&1) &
    pid=$!
    echo "$pid" >"$PIDFILE"

    # Readiness: TCP connect every 50 ms, REST then gRPC (bound right after REST); fail early if
    # the server has gone away.
    local deadline=$(( $(date +%s) + TIMEOUT ))
    for p in "$PORT" "$GRPC_PORT"; do
        while ! port_in_use "$p"; do
            if ! is_alive "$pid"; then
                show_log
                teardown
                die "bqemulator exited during startup" 2
            fi
            if (( $(date +%s) >= deadline )); then
                show_log
                teardown
                die "bqemulator not accepting connections on port $p after ${TIMEOUT}s" 2
            fi
            sleep 0.05
        done
    done

    is_server "$pid" || { show_log; teardown; die "pid $pid is not bqemulator (is setsid forking?)" 2; }
    log "ready: pid $pid, ports $PORT/$GRPC_PORT, log $LOG ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
    print_exports
}

cmd_stop() {
    if running_pid >/dev/null || [[ -e $PIDFILE ]]; then
        teardown
        log "stopped"
    else
        log "not running"
    fi
}

server_main "$@"
