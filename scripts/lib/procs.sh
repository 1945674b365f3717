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

# free_port PYTHON: a free TCP port on 127.0.0.1, as the OS hands one out.
free_port() {
    "$1" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_http PYTHON PID PORT LOG: waits up to 30 s for the server PID
# to answer HTTP (any status) on 127.0.0.1:PORT. Returns 0 once it does;
# 1 when PID exited first (LOG's tail then goes to stderr); 2 on timeout.
wait_for_http() {
    local py="$1" pid="$2" port="$3" log="$4" i
    for i in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        if "$py" - "$port" 2>/dev/null <<'PYEOF'; then
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass
PYEOF
            return 0
        fi
        sleep 0.1
    done
    return 2
}
