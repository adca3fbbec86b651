#!/usr/bin/env bash
# Run the product-service load-test suite. The first run creates .venv and installs requirements.
#
#   ./run_tests.sh headless [USERS] [DURATION_S] [HOST] [options] [-- locust args]
#   ./run_tests.sh ui [HOST] [options] [-- locust args]              web UI on 127.0.0.1:8089
#   ./run_tests.sh distributed [WORKERS] [USERS] [DURATION_S] [HOST] [options] [-- locust args]
#   ./run_tests.sh master [USERS] [DURATION_S] [HOST] [options] [-- locust args]   (waits for workers)
#   ./run_tests.sh worker MASTER_HOST [options] [-- locust args]
#   ./run_tests.sh test [pytest args]                                the project's tests
#   ./run_tests.sh --help                                            every mode and option
#
# This script keeps what belongs in a shell (the virtualenv, processes, signals); the arguments are
# parsed and validated by loadsuite/cli/run_args.py before any traffic.
set -uo pipefail
set -m  # background jobs keep SIGINT (bash ignores it in them otherwise), so Ctrl-C can be forwarded to Locust

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

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
check_health() { "$PY" -m loadsuite.cli.health "$1" "${2:-3}" ${3:+"$3"}; }  # URL [DEADLINE_S [PID: wait for it]]: 0 when /health answers 200

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
SERVICE_PID="" LOCUST_PID="" WORKER_PIDS=() SIGNALS=0 GRACE=50
STOP_TIMEOUT="${STOP_TIMEOUT:-10}"
cleanup() {  # TERM to every process group we started, KILL after GRACE tenths of a second
    local pid
    for pid in "${WORKER_PIDS[@]}" $LOCUST_PID $SERVICE_PID; do
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null   # the whole group: --processes forks
    done
    for pid in "${WORKER_PIDS[@]}" $LOCUST_PID $SERVICE_PID; do
        for _ in $(seq 1 "$GRACE"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
}
on_signal() {  # the first Ctrl-C/SIGTERM: Locust stops its users and writes its reports; the second: out at once
    SIGNALS=$((SIGNALS + 1))
    if [ "$SIGNALS" -gt 1 ]; then
        echo "run_tests.sh: second interrupt: stopped at once; the results${RESULTS:+ in $RESULTS} may be incomplete" >&2
        GRACE=0; trap - INT TERM; exit 130
    fi
    [ -n "$LOCUST_PID" ] && kill -INT "$LOCUST_PID" 2>/dev/null
    return 0
}
trap on_signal INT TERM
trap cleanup EXIT

# --- the target ------------------------------------------------------------------------------------
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
if [ "$MODE" != "worker" ] && [ -n "$HOST" ]; then   # before any results folder: nothing to report yet
    WHY="$(check_health "$HOST" 5)" || die "target $HOST is unreachable ($WHY): start the service or pass the right HOST" 3
fi
RESULTS_ROOT="${RESULTS_ROOT:-$ROOT/results}"
RESULTS="$RESULTS_ROOT/$RUN_ID"
if [ "$MODE" != "worker" ]; then
    n=1; while [ -e "$RESULTS" ]; do RESULTS="$RESULTS_ROOT/${RUN_ID}-$n"; n=$((n + 1)); done
    mkdir -p "$RESULTS" 2>/dev/null || die "results could not be written: cannot create $RESULTS: free space, fix permissions or set RESULTS_ROOT" 4
    ln -sfn "$(basename "$RESULTS")" "$RESULTS_ROOT/latest" 2>/dev/null
    RUN_ID="$(basename "$RESULTS")"
fi
export RUN_ID
export LOADSUITE_VERDICT_LAST=1   # this script prints the verdict block last, after Locust exits

if [ "$MODE" = "worker" ]; then
    :
elif [ -z "$HOST" ]; then
    PORT="$(free_port)"
    "$PY" -m product_service --host 127.0.0.1 --port "$PORT" --db "$RESULTS/service.db" --reset \
        > "$RESULTS/service.log" 2>&1 &
    SERVICE_PID=$!
    HOST="http://127.0.0.1:$PORT"
    WHY="$(check_health "$HOST" 20 "$SERVICE_PID")" \
        || die "the bundled product-service did not start ($WHY): see $RESULTS/service.log" 3
    echo "run_tests.sh: started the reference product-service at $HOST" >&2
fi

# --- Locust ----------------------------------------------------------------------------------------
REPORTS=(--csv "$RESULTS/stats" --csv-full-history --html "$RESULTS/report.html" --results-dir "$RESULTS")
RATE="${SPAWN_RATE:-$(( USERS > 10 ? USERS / 5 : 2 ))}"
LOAD=(-u "$USERS" -r "$RATE" -t "${DURATION}s")
[ "$SHAPE_ACTIVE" = "1" ] && LOAD=()   # the shape drives users and stops the run
LOCUST=("$PY" -m locust -f locustfile.py --stop-timeout "$STOP_TIMEOUT")

run_locust() {  # run Locust in the background so signals reach us, then wait for it
    "$@" &
    LOCUST_PID=$!
    local code
    while :; do
        wait "$LOCUST_PID" 2>/dev/null; code=$?   # no "Killed" job line: the aftermath says it in one line
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
                "${LOCUST[@]}" --worker --master-host 127.0.0.1 --master-port "$MASTER_PORT" "${LOCUST_EXTRA[@]}" \
                    > "$RESULTS/worker-$i.log" 2>&1 &
                WORKER_PIDS+=($!)
            done
        fi
        BIND=(--master-bind-host "${MASTER_BIND_HOST:-127.0.0.1}" --master-bind-port "$MASTER_PORT")
        echo "run_tests.sh: master on ${MASTER_BIND_HOST:-127.0.0.1}:$MASTER_PORT" >&2
        run_locust "${LOCUST[@]}" --master --headless "${EXPECT[@]}" "${BIND[@]}" --host "$HOST" "${LOAD[@]}" \
            "${REPORTS[@]}" "${LOCUST_EXTRA[@]}"; CODE=$? ;;
    worker)
        run_locust "${LOCUST[@]}" --worker --master-host "$MASTER_HOST" --master-port "${MASTER_PORT:-5557}" \
            "${LOCUST_EXTRA[@]}"; CODE=$? ;;
esac

# Locust killed or crashed, or its reports unwritable: summary.json and junit.xml still say what happened.
[ "$MODE" != "worker" ] && [ "$MODE" != "ui" ] && { "$PY" -m loadsuite.cli.aftermath "$RESULTS" "$CODE"; CODE=$?; }

if [ "$MODE" != "worker" ] && [ "$CODE" != "2" ] && [ "$ANALYSIS" = "1" ] \
    && [ "$(wc -l < "$RESULTS/stats_stats.csv" 2>/dev/null || echo 0)" -gt 1 ]; then
    "$PY" analyze_results.py "$RESULTS" > "$RESULTS/analysis.log" 2>&1 \
        || echo "run_tests.sh: the analysis failed (the run's own verdict stands): see $RESULTS/analysis.log" >&2
fi
[ "$MODE" != "worker" ] && echo "run_tests.sh: results in $RESULTS (exit code $CODE)" >&2
# The verdict block is the last thing on screen (Locust prints its final table after our listeners).
[ "$MODE" != "worker" ] && [ -f "$RESULTS/summary.json" ] && "$PY" -m loadsuite.cli.verdict "$RESULTS"
exit "$CODE"
