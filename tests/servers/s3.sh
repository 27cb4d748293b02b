#!/usr/bin/env bash
# Throwaway S3-compatible server (tests/s3-server: s3s-fs library + TCP_NODELAY) for the
# integration tests and for s3db.js (tests/js).
#
#   eval "$(tests/servers/s3.sh start)"   # start (or reuse) and export S3_ENDPOINT + AWS vars
#   tests/servers/s3.sh status             # exit 0 if our instance is running
#   tests/servers/s3.sh stop               # stop it and delete its data
#
# Same contract as tests/servers/postgres.sh (start idempotent, refuses a port used by something
# else, waits for readiness, only `export` lines on stdout, exit 2 if the server died or never
# became ready; stop idempotent, keeps only the log; status exits 0/1).
#
# Builds nothing: the binary comes from the workspace build (`cargo build -p s3-test-server`,
# or `cargo build --workspace`).
#
# Environment:
#   S3_PORT        port to listen on (default 8014); bound to 127.0.0.1 only
#   S3_SERVER_BIN  server binary (default $CARGO_TARGET_DIR/debug/s3-test-server, target dir
#                  defaulting to <repo>/target)
#   INFRA_RUN      run directory (default /tmp/replicator-infra/run), holding
#                  s3/ (buckets; bucket `s3db` is pre-created), s3.pid, s3.log
#   S3_TIMEOUT     readiness timeout in seconds (default 30)
#
# Credentials test / testsecret (SigV4 is verified), region us-east-1, path-style.
set -euo pipefail

ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=${S3_SERVER_BIN:-$TARGET/debug/s3-test-server}
PORT=${S3_PORT:-8014}
RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
TIMEOUT=${S3_TIMEOUT:-30}
ACCESS_KEY=test
SECRET_KEY=testsecret
BUCKET=s3db
DATA=$RUN/s3
PIDFILE=$RUN/s3.pid
LOG=$RUN/s3.log

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

# True if $1 is a live (not zombie) s3-test-server process. kill -0 alone is not enough: in
# containers whose init does not reap, a killed server lingers as a zombie.
is_server() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat == *"(s3-test-server) "[!ZX]* ]]
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

# Port the running server was started with (its --port argument).
running_port() {
    local -a argv
    mapfile -d '' -t argv <"/proc/$1/cmdline" 2>/dev/null || return 0
    local i
    for ((i = 0; i < ${#argv[@]} - 1; i++)); do
        [[ ${argv[i]} == --port ]] && { echo "${argv[i + 1]}"; return 0; }
    done
}

print_exports() {
    cat <<EOF
export S3_ENDPOINT=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export S3_BUCKET=$BUCKET
EOF
}

# Best-effort stop of our server (running or not) and removal of its data.
teardown() {
    local pid
    if pid=$(running_pid); then
        log "stopping s3-test-server pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do is_server "$pid" || break; sleep 0.05; done
        if is_server "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -rf "$DATA" "$PIDFILE"
}

cmd_start() {
    local t0 pid
    t0=$(date +%s%N)

    # Reuse a running instance.
    if pid=$(running_pid); then
        local rport
        rport=$(running_port "$pid")
        [[ $rport == "$PORT" ]] || die "our s3-test-server (pid $pid) already runs on port $rport, not $PORT; run '$0 stop' first"
        if port_in_use "$PORT"; then
            log "reusing running s3-test-server (pid $pid, port $PORT)"
            print_exports
            return 0
        fi
        log "s3-test-server pid $pid does not accept connections; restarting it"
    fi
    teardown   # stale leftovers of an earlier run

    [[ -x $BIN ]] || die "$BIN not found: build the workspace first (cargo build -p s3-test-server), or set S3_SERVER_BIN"
    if port_in_use "$PORT"; then
        die "port 127.0.0.1:$PORT is already in use by another process (set S3_PORT to use another port)"
    fi

    mkdir -p "$RUN" "$DATA"
    : >"$LOG"
    log "starting on 127.0.0.1:$PORT, data in $DATA"
    # Own session (like a daemon): survives this script, and a Ctrl-C meant for the test run does
    # not reach it (the runner stops it). stdout/stderr to the log so that `$(s3.sh start)` returns.
    setsid "$BIN" --port "$PORT" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
        --root "$DATA" --bucket "$BUCKET" </dev/null >>"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"

    # Readiness: TCP connect every 50 ms; fail early if the server has gone away.
    local deadline=$(( $(date +%s) + TIMEOUT ))
    while ! port_in_use "$PORT"; do
        if ! is_alive "$pid"; then
            show_log
            teardown
            die "s3-test-server exited during startup" 2
        fi
        if (( $(date +%s) >= deadline )); then
            show_log
            teardown
            die "s3-test-server not accepting connections after ${TIMEOUT}s" 2
        fi
        sleep 0.05
    done

    is_server "$pid" || { show_log; teardown; die "pid $pid is not s3-test-server (is setsid forking?)" 2; }
    log "ready: pid $pid, port $PORT, data $DATA, log $LOG ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
    print_exports
}

cmd_stop() {
    if running_pid >/dev/null || [[ -e $DATA || -e $PIDFILE ]]; then
        teardown
        log "stopped and removed $DATA"
    else
        log "not running"
    fi
}

server_main "$@"
