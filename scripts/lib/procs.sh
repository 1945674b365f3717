# Shell helpers the scripts share; source it, do not run it.

# stop_pid PID: SIGTERM (and SIGCONT, so that a stopped process can act on
# it), up to 5 s' grace, then SIGKILL; reaps it when it is our child. Only
# ever given a pid the calling script started itself.
stop_pid() {
    local pid="$1" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
