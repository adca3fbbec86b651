#!/usr/bin/env bash
# Run the product-service load-test suite. The first run creates .venv and installs requirements.
#
#   ./run_tests.sh headless [USERS] [DURATION_S] [HOST] [options] [-- locust args]
#   ./run_tests.sh ui [HOST] [options] [-- locust args]              web UI on 127.0.0.1:8089
#   ./run_tests.sh distributed [WORKERS] [USERS] [DURATION_S] [HOST] [options] [-- locust args]
#   ./run_tests.sh master [USERS] [DURATION_S] [HOST] [options] [-- locust args]   (waits for workers)
#   ./run_tests.sh worker MASTER_HOST [options] [-- locust args]
#   ./run_tests.sh capacity [HOST] [--workers N] [--require-capacity RATE] [options]   the capacity finder
#   ./run_tests.sh test [pytest args]                                the project's tests
#   ./run_tests.sh --help                                            every mode and option
#
# This script keeps what belongs in a shell (the virtualenv, processes, signals); the arguments are
# parsed and validated by loadsuite/cli/run_args.py before any traffic.
set -uo pipefail
# No job control (set -m): Locust runs in this script's own process group, which a terminal makes its foreground
# group, so Locust owns the keyboard (w/W/s/S) and the terminal's Ctrl-C, Ctrl-Z and hangup reach it and this
# script alike. The bundled service and local workers get a session of their own (detached): the terminal's
# signals never reach them; this script stops them.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

die() { echo "run_tests.sh: $1" >&2; exit "${2:-2}"; }

# --- the virtualenv -------------------------------------------------------------------------------
ensure_python() {
    local requirements="$1"
    if [ "${USE_SYSTEM_PYTHON:-0}" = "1" ]; then PY="${PYTHON:-python3}"; return; fi
    local venv="$ROOT/.venv" stamp="$ROOT/.venv/.installed-$(basename "$requirements")"
    local want; want="$(cat requirements.txt "$requirements" | sha256sum | cut -d' ' -f1)"
    # The first run says what it does, step by step, and shows pip's own progress (stderr).
    if [ ! -x "$venv/bin/python" ]; then
        echo "run_tests.sh: [1/2] creating .venv with ${PYTHON:-python3} (first run only)" >&2
        "${PYTHON:-python3}" -m venv "$venv" || die "cannot create .venv: install python3-venv (Debian: apt-get install python3-venv)"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "run_tests.sh: [2/2] installing $requirements into .venv (a few minutes the first time; pip's progress follows)" >&2
        "$venv/bin/python" -m pip install --disable-pip-version-check -r "$requirements" >&2 \
            || die "pip install -r $requirements failed: check the network to the package index and retry"
        echo "$want" > "$stamp"
        if [ "$requirements" != requirements.txt ] && grep -qx -- '-r requirements.txt' "$requirements"; then
            # It installed requirements.txt too: a later headless run (the tests start many) has nothing to do.
            cat requirements.txt requirements.txt | sha256sum | cut -d' ' -f1 > "$venv/.installed-requirements.txt"
        fi
        echo "run_tests.sh: .venv ready; later runs skip this while $requirements is unchanged" >&2
    fi
    PY="$venv/bin/python"
}

start_detached() {  # LOG COMMAND...: in a session of its own, out of the terminal's reach; $! is its pid
    local log="$1"; shift
    if command -v setsid >/dev/null 2>&1; then  # not a group leader here: setsid execs in place, no fork
        ( exec setsid "$@" ) > "$log" 2>&1 < /dev/null &
    else
        ( exec "$PY" -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' "$@" ) \
            > "$log" 2>&1 < /dev/null &
    fi
}
free_port() { "$PY" -m loadsuite.cli.ports; }
check_health() { "$PY" -m loadsuite.cli.health "$1" "${2:-10}" ${3:+"$3"}; }  # URL [DEADLINE_S [PID]]: 0 once /health answers 200, asking again until DEADLINE_S

# --- arguments ------------------------------------------------------------------------------------
if [ "${1:-}" = "test" ]; then
    shift
    ensure_python requirements-dev.txt
    exec "$PY" -m pytest "$@"
fi
ensure_python requirements.txt
PLAN="$("$PY" -m loadsuite.cli.run_args "$@")" || exit 2   # one line on stderr says why
eval "$PLAN"

# --- processes we own, stopped whatever happens ----------------------------------------------------
SERVICE_PID="" LOCUST_PID="" WORKER_PIDS=() SIGNALS=0 GRACE=50 HUNG_UP=0 TTY_STATE=""
STOP_TIMEOUT="${STOP_TIMEOUT:-10}"
# Locust's keyboard listener puts the terminal in cbreak mode; a Locust killed at once cannot restore it.
if [ -t 0 ] && "$PY" -c 'import os, sys; sys.exit(os.tcgetpgrp(0) != os.getpgrp())' 2>/dev/null; then
    TTY_STATE="$(stty -g 2>/dev/null)"   # only in the foreground: a background job touching the terminal is stopped
fi
descendants() { local c; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do echo "$c"; descendants "$c"; done; }
cleanup() {  # TERM to everything we started, KILL after GRACE tenths of a second
    local pid pids=()
    # Locust shares our process group (its --processes children too): those go by pid, the detached ones by group.
    [ -n "$LOCUST_PID" ] && pids+=($(descendants "$LOCUST_PID"))
    for pid in "${WORKER_PIDS[@]}" $LOCUST_PID "${pids[@]}" $SERVICE_PID; do
        kill -0 "$pid" 2>/dev/null || continue
        kill -CONT -- "-$pid" 2>/dev/null; kill -CONT "$pid" 2>/dev/null   # a suspended run (Ctrl-Z) cannot stop
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${WORKER_PIDS[@]}" $LOCUST_PID "${pids[@]}" $SERVICE_PID; do
        for _ in $(seq 1 "$GRACE"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    if [ -n "$TTY_STATE" ] && [ "$HUNG_UP" = "0" ]; then
        trap '' TTOU; stty "$TTY_STATE" 2>/dev/null   # ignored SIGTTOU: restoring never stops us
    fi
}
on_signal() {  # the first Ctrl-C/SIGTERM: Locust stops its users and writes its reports; the second: out at once
    SIGNALS=$((SIGNALS + 1))
    if [ "$SIGNALS" -gt 1 ]; then
        echo "run_tests.sh: second interrupt: stopped at once; the results${RESULTS:+ in $RESULTS} may be incomplete" >&2
        GRACE=0; trap - INT TERM; exit 130
    fi
    # A terminal's Ctrl-C reached Locust as well (one process group); Locust counts the two as one (LOADSUITE_SUPERVISED).
    [ -n "$LOCUST_PID" ] && kill -INT "$LOCUST_PID" 2>/dev/null
    return 0
}
on_hangup() {  # the terminal closed: the run ends as after Ctrl-C, the rest of the console goes to console.log
    [ "$HUNG_UP" = "1" ] && return 0   # the kernel and the login shell each send one
    HUNG_UP=1
    if [ -n "${RESULTS:-}" ] && [ -d "$RESULTS" ]; then exec >>"$RESULTS/console.log" 2>&1; else exec >/dev/null 2>&1; fi
    echo "run_tests.sh: the terminal closed (SIGHUP): the run stops as after Ctrl-C; its console continues here"
    [ -n "$LOCUST_PID" ] && kill -HUP "$LOCUST_PID" 2>/dev/null
    return 0
}
on_suspend() {  # Ctrl-Z: the terminal stopped Locust (our process group); pause the detached workers, then ourselves
    local pid
    for pid in "${WORKER_PIDS[@]}"; do kill -STOP -- "-$pid" 2>/dev/null; done
    [ -n "$LOCUST_PID" ] && kill -STOP "$LOCUST_PID" 2>/dev/null   # also when the signal came from kill, not a key
    kill -STOP $$
    # `fg` (SIGCONT) resumes us and our process group here
    [ -n "$LOCUST_PID" ] && kill -CONT "$LOCUST_PID" 2>/dev/null
    for pid in "${WORKER_PIDS[@]}"; do kill -CONT -- "-$pid" 2>/dev/null; done
    return 0
}
trap on_signal INT TERM
trap on_hangup HUP
trap on_suspend TSTP
trap cleanup EXIT
export LOADSUITE_SUPERVISED=1   # Locust: this script forwards every signal and owns the second-interrupt rule
export LOADSUITE_CONSOLE_LOG=""  # set below, once the run has a folder: where Locust writes after a hangup

# --- the target ------------------------------------------------------------------------------------
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
if [ "$MODE" != "worker" ] && [ -n "$HOST" ]; then   # before any results folder: nothing to report yet
    WHY="$(check_health "$HOST" "$READY_S")" || die "target $HOST is $WHY" 3   # unreachable, not ready, or not the service
fi
RESULTS_ROOT="${RESULTS_ROOT:-$ROOT/results}"
RESULTS=""
if [ "$MODE" != "worker" ]; then   # a folder this run alone created, and results/latest naming it (one line and 4 if not)
    RESULTS="$("$PY" -m loadsuite.cli.run_folder "$RESULTS_ROOT" "$RUN_ID")" || exit 4
    RUN_ID="$(basename "$RESULTS")"
    LOADSUITE_CONSOLE_LOG="$RESULTS/console.log"
fi
export RUN_ID
export LOADSUITE_VERDICT_LAST=1   # this script prints the verdict block last, after Locust exits

if [ "$MODE" = "worker" ]; then
    :
elif [ -z "$HOST" ]; then
    PORT="$(free_port)"
    start_detached "$RESULTS/service.log" \
        "$PY" -m product_service --host 127.0.0.1 --port "$PORT" --db "$RESULTS/service.db" --reset
    SERVICE_PID=$!
    HOST="http://127.0.0.1:$PORT"
    export LOADSUITE_BUNDLED_SERVICE=1   # summary.json says so: the run history compares bundled runs whatever the port
    WHY="$(check_health "$HOST" 20 "$SERVICE_PID")" \
        || die "the bundled product-service did not start ($WHY): see $RESULTS/service.log" 3
    echo "run_tests.sh: started the reference product-service at $HOST" >&2
fi

# --- Locust ----------------------------------------------------------------------------------------
[ "$MODE" != "worker" ] && for note in "${RUN_NOTES[@]}"; do echo "$note" >&2; done   # e.g. a sale too late to open
REPORTS=(--csv "$RESULTS/stats" --csv-full-history --html "$RESULTS/report.html" --results-dir "$RESULTS")
RATE="${SPAWN_RATE:-$(( USERS > 10 ? USERS / 5 : 2 ))}"
LOAD=(-u "$USERS" -r "$RATE" -t "${DURATION}s")
[ "$SHAPE_ACTIVE" = "1" ] && LOAD=()   # the shape drives users and stops the run
LOCUST=("$PY" -m locust -f locustfile.py --stop-timeout "$STOP_TIMEOUT")

run_locust() {  # Locust in the background of this script (traps run while it works), then wait for it
    # In our process group with our stdin: on a terminal Locust's keys work; a background job gets no terminal.
    if [ -t 0 ] && [ -z "$TTY_STATE" ]; then   # a background job of a terminal: no keyboard for Locust
        ( trap - INT QUIT; exec "$@" ) < /dev/null &
    else
        ( trap - INT QUIT; exec "$@" ) <&0 &   # a background job starts with SIGINT ignored: Ctrl-C must reach it
    fi
    LOCUST_PID=$!
    local code
    while :; do
        wait "$LOCUST_PID" 2>/dev/null; code=$?   # blocks until Locust exits or a trapped signal arrives
        kill -0 "$LOCUST_PID" 2>/dev/null || break
    done
    LOCUST_PID=""
    return "$code"
}

CODE=0
case "$MODE" in
    headless)
        run_locust "${LOCUST[@]}" --headless --host "$HOST" "${LOAD[@]}" "${REPORTS[@]}" "${LOCUST_EXTRA[@]}"; CODE=$? ;;
    ui)
        echo "run_tests.sh: web UI on http://${WEB_HOST:-127.0.0.1}:${WEB_PORT:-8089} (target $HOST)" >&2
        run_locust "${LOCUST[@]}" --host "$HOST" --web-host "${WEB_HOST:-127.0.0.1}" --web-port "${WEB_PORT:-8089}" \
            --class-picker "${REPORTS[@]}" "${LOCUST_EXTRA[@]}"; CODE=$? ;;
    distributed|master)
        MASTER_PORT="${MASTER_PORT:-$(free_port)}"
        EXPECT=(); [ "$MODE" = "distributed" ] && EXPECT=(--expect-workers "$WORKERS")
        [ "$MODE" = "master" ] && EXPECT=(--expect-workers "${EXPECT_WORKERS:-1}")
        if [ "$MODE" = "distributed" ]; then
            for i in $(seq 1 "$WORKERS"); do
                start_detached "$RESULTS/worker-$i.log" \
                    "${LOCUST[@]}" --worker --master-host 127.0.0.1 --master-port "$MASTER_PORT" "${LOCUST_EXTRA[@]}"
                WORKER_PIDS+=($!)
            done
        fi
        BIND=(--master-bind-host "${MASTER_BIND_HOST:-127.0.0.1}" --master-bind-port "$MASTER_PORT")
        echo "run_tests.sh: master on ${MASTER_BIND_HOST:-127.0.0.1}:$MASTER_PORT" >&2
        run_locust "${LOCUST[@]}" --master --headless "${EXPECT[@]}" "${BIND[@]}" --host "$HOST" "${LOAD[@]}" \
            "${REPORTS[@]}" "${LOCUST_EXTRA[@]}"; CODE=$? ;;
    capacity)   # one Locust process (or a master and WORKERS local workers) runs the whole search, step by step
        SEARCH=(--capacity-search ${REQUIRE_CAPACITY:+--require-capacity "$REQUIRE_CAPACITY"})
        if [ "$WORKERS" -gt 0 ]; then
            MASTER_PORT="${MASTER_PORT:-$(free_port)}"
            for i in $(seq 1 "$WORKERS"); do
                start_detached "$RESULTS/worker-$i.log" "${LOCUST[@]}" --worker --master-host 127.0.0.1 \
                    --master-port "$MASTER_PORT" --capacity-search "${LOCUST_EXTRA[@]}"
                WORKER_PIDS+=($!)
            done
            run_locust "${LOCUST[@]}" --master --headless --expect-workers "$WORKERS" --master-bind-host 127.0.0.1 \
                --master-bind-port "$MASTER_PORT" --host "$HOST" -u "$WORKERS" -r "$WORKERS" "${SEARCH[@]}" \
                "${REPORTS[@]}" "${LOCUST_EXTRA[@]}"; CODE=$?
        else
            run_locust "${LOCUST[@]}" --headless --host "$HOST" -u 1 -r 1 "${SEARCH[@]}" "${REPORTS[@]}" \
                "${LOCUST_EXTRA[@]}"; CODE=$?
        fi ;;
    worker)
        run_locust "${LOCUST[@]}" --worker --master-host "$MASTER_HOST" --master-port "${MASTER_PORT:-5557}" \
            "${LOCUST_EXTRA[@]}"; CODE=$? ;;
esac

# Locust killed or crashed, or its reports unwritable: summary.json and junit.xml still say what happened.
[ "$MODE" != "worker" ] && [ "$MODE" != "ui" ] && { "$PY" -m loadsuite.cli.aftermath "$RESULTS" "$CODE"; CODE=$?; }

if [ "$MODE" != "worker" ] && [ "$CODE" != "2" ] && [ "$ANALYSIS" = "1" ] \
    && [ -f "$RESULTS/summary.json" ] && [ "$(wc -l < "$RESULTS/stats_stats.csv" 2>/dev/null || echo 0)" -gt 1 ]; then
    "$PY" analyze_results.py "$RESULTS" > "$RESULTS/analysis.log" 2>&1 \
        || echo "run_tests.sh: the analysis failed (the run's own verdict stands): see $RESULTS/analysis.log" >&2
fi
[ "$MODE" = "ui" ] && [ ! -f "$RESULTS/summary.json" ] && echo "run_tests.sh: no test was started in the web UI: nothing to judge" >&2
[ "$MODE" != "worker" ] && echo "run_tests.sh: results in $RESULTS (exit code $CODE)" >&2
# The verdict block is the last thing on screen (Locust prints its final table after our listeners).
[ "$MODE" != "worker" ] && [ -f "$RESULTS/summary.json" ] && "$PY" -m loadsuite.cli.verdict "$RESULTS" --exit-code "$CODE"
exit "$CODE"
