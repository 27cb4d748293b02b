# Helpers shared by the tests/servers/<name>.sh scripts; sourced, never run. A server script
# defines LOG (its log file), running_pid, running_port PID, cmd_start and cmd_stop, then ends
# with `server_main "$@"`.

SCRIPT_NAME=$(basename "$0")
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { log "error: $1"; exit "${2:-1}"; }

# True if something (ours or not) accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The end of the server's log on stderr, for a post-mortem.
show_log() {
    if [[ -s $LOG ]]; then
        log "---- last lines of $LOG ----"
        tail -n 40 "$LOG" >&2
        log "----"
    fi
}

cmd_status() {
    local pid
    if pid=$(running_pid); then
        log "running: pid $pid, port $(running_port "$pid")"
        return 0
    fi
    log "not running"
    return 1
}

server_main() {
    case ${1:-} in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        *) echo "usage: $0 start|stop|status" >&2; exit 64 ;;
    esac
}
