#!/usr/bin/env bash
# Throwaway SQS server (moto, PyPI) for the integration tests. The same process also serves S3
# (path-style) on the same port; the tests' S3 server is tests/servers/s3.sh, not this one.
#
#   eval "$(tests/servers/sqs.sh start)"   # start (or reuse) and export SQS_ENDPOINT, MOTO_ENDPOINT
#   tests/servers/sqs.sh status             # exit 0 if our instance is running
#   tests/servers/sqs.sh stop               # stop it (all its state is in memory)
#
# Same contract as tests/servers/postgres.sh (start idempotent, refuses a port used by something
# else, waits for readiness, only `export` lines on stdout, exit 2 if the server died or never
# became ready; stop idempotent, keeps only the log; status exits 0/1).
#
# Installs moto on first use: a venv under $INFRA_RUN/../moto-venv with the pinned version
# (lean: `moto[s3,sqs]` + flask + flask-cors, ~30 s, 140 MB), re-created when it holds another
# version. Needs python3 with venv and access to PyPI.
#
# Environment:
#   MOTO_PORT     port to listen on (default 4566); bound to 127.0.0.1 only
#   MOTO_VENV     venv (default $INFRA_RUN/../moto-venv)
#   INFRA_RUN     run directory (default /tmp/replicator-infra/run), holding sqs.pid, sqs.log
#   MOTO_TIMEOUT  readiness timeout in seconds (default 60)
#
# No authentication is checked: clients pass any static credentials (the SQS tests use
# test / test explicitly, region us-east-1). The AWS_* variables are deliberately not exported
# here: tests/servers/s3.sh exports them for its own server (secret testsecret).
# State is in memory; reset it with `curl -X POST $MOTO_ENDPOINT/moto-api/reset`.
set -euo pipefail

VERSION=5.2.5
PORT=${MOTO_PORT:-4566}
RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
TIMEOUT=${MOTO_TIMEOUT:-60}
VENV=${MOTO_VENV:-$(dirname "$RUN")/moto-venv}
BIN=$VENV/bin/moto_server
PIDFILE=$RUN/sqs.pid
LOG=$RUN/sqs.log

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

# True if $1 is a live (not zombie) moto_server process. kill -0 alone is not enough: in
# containers whose init does not reap, a killed server lingers as a zombie.
is_server() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat == *"(moto_server) "[!ZX]* ]]
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

# Port the running server was started with (its -p argument).
running_port() {
    local -a argv
    mapfile -d '' -t argv 2>/dev/null <"/proc/$1/cmdline" || return 0
    local i
    for ((i = 0; i < ${#argv[@]} - 1; i++)); do
        [[ ${argv[i]} == -p ]] && { echo "${argv[i + 1]}"; return 0; }
    done
}

print_exports() {
    cat <<EOF
export SQS_ENDPOINT=http://127.0.0.1:$PORT
export MOTO_ENDPOINT=http://127.0.0.1:$PORT
EOF
}

# moto version in the venv if it is complete (moto_server + the server's flask deps), else nothing.
installed_version() {
    [[ -x $BIN ]] || return 0
    "$VENV/bin/python" -c 'import importlib.metadata as m, flask, flask_cors; print(m.version("moto"))' \
        2>/dev/null || true
}

# Idempotent: (re-)creates the venv when moto is missing, incomplete or another version.
install_moto() {
    local t0
    [[ $(installed_version) == "$VERSION" ]] && return 0
    t0=$(date +%s%N)
    log "installing moto $VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "moto[s3,sqs]==$VERSION" flask flask-cors >&2 ||
        die "pip install moto[s3,sqs]==$VERSION flask flask-cors failed"
    [[ $(installed_version) == "$VERSION" ]] || die "moto $VERSION not usable in $VENV after installing"
    log "installed ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
}

# Best-effort stop of our server (running or not) and removal of its pid file.
teardown() {
    local pid
    if pid=$(running_pid); then
        log "stopping moto_server pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do is_server "$pid" || break; sleep 0.05; done
        if is_server "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        for _ in $(seq 40); do is_server "$pid" || break; sleep 0.05; done
    fi
    rm -f "$PIDFILE"
}

cmd_start() {
    local t0 pid
    t0=$(date +%s%N)
    # bash's /dev/tcp and the server would both wrap a port > 65535 silently.
    if [[ ! $PORT =~ ^[0-9]{1,5}$ ]] || (( 10#$PORT < 1 || 10#$PORT > 65535 )); then
        die "invalid MOTO_PORT '$PORT'"
    fi

    # Reuse a running instance.
    if pid=$(running_pid); then
        local rport
        rport=$(running_port "$pid")
        [[ $rport == "$PORT" ]] || die "our moto_server (pid $pid) already runs on port $rport, not $PORT; run '$0 stop' first"
        if port_in_use "$PORT"; then
            log "reusing running moto_server (pid $pid, port $PORT)"
            print_exports
            return 0
        fi
        log "moto_server pid $pid does not accept connections; restarting it"
    fi
    teardown   # stale leftovers of an earlier run

    install_moto
    if port_in_use "$PORT"; then
        die "port 127.0.0.1:$PORT is already in use by another process (set MOTO_PORT to use another port)"
    fi

    mkdir -p "$RUN"
    : >"$LOG"
    t0=$(date +%s%N)   # start time without the install
    log "starting moto $VERSION on 127.0.0.1:$PORT"
    # Own session (like a daemon): survives this script, and a Ctrl-C meant for the test run does
    # not reach it (the runner stops it). stdout/stderr to the log so that `$(sqs.sh start)` returns.
    setsid "$BIN" -H 127.0.0.1 -p "$PORT" </dev/null >>"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"

    # Readiness: TCP connect every 50 ms; fail early if the server has gone away.
    local deadline=$(( $(date +%s) + TIMEOUT ))
    while ! port_in_use "$PORT"; do
        if ! is_alive "$pid"; then
            show_log
            teardown
            die "moto_server exited during startup" 2
        fi
        if (( $(date +%s) >= deadline )); then
            show_log
            teardown
            die "moto_server not accepting connections after ${TIMEOUT}s" 2
        fi
        sleep 0.05
    done

    is_server "$pid" || { show_log; teardown; die "pid $pid is not moto_server (is setsid forking?)" 2; }
    log "ready: pid $pid, port $PORT, log $LOG ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
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
