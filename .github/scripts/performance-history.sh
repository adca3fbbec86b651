#!/usr/bin/env bash
# The weekly job's run history, kept on a branch of its own (performance-history), as github-action-benchmark
# keeps its data on gh-pages: permanent (artifacts expire, an unused cache is evicted after 7 days, longer
# than a week's gap), browsable on GitHub, and every commit pins the trend charts of its run.
#
# The branch holds runs/<run id>/summary.json (and capacity.json) for every measured run, and trend/ with the
# latest history.md, history.json and charts written by `analyze_results.py --history runs --out trend`.
#
#   performance-history.sh fetch DIR                the branch into DIR; a new, empty history when there is none yet
#   performance-history.sh add DIR RUN_DIR          a run's summary.json (its host as a digest) and capacity.json
#                                                   into DIR/runs/<run id>/
#   performance-history.sh publish DIR MESSAGE      commit DIR and push it to the branch; prints the commit's SHA
#
# Environment: HISTORY_REMOTE (default $GITHUB_SERVER_URL/$GITHUB_REPOSITORY.git), HISTORY_BRANCH (default
# performance-history), GH_TOKEN (sent as the job's token over https), GIT_TIMEOUT_S (default 120, per git call
# that talks to the remote). Exit codes: 0 done, 1 the remote failed or refused the push, 2 bad usage.
set -euo pipefail

die() { echo "performance-history.sh: $1" >&2; exit "${2:-1}"; }

BRANCH="${HISTORY_BRANCH:-performance-history}"
REMOTE="${HISTORY_REMOTE:-${GITHUB_SERVER_URL:-https://github.com}/${GITHUB_REPOSITORY:-}.git}"
TIMEOUT="${GIT_TIMEOUT_S:-120}"

remote_git() {  # DIR ARGS...: a git call that talks to the remote, bounded in time, with the token when there is one
    local dir="$1"; shift
    local auth=()
    if [ -n "${GH_TOKEN:-}" ] && [[ "$REMOTE" == https://* ]]; then
        auth=(-c "http.extraheader=AUTHORIZATION: basic $(printf 'x-access-token:%s' "$GH_TOKEN" | base64 -w0)")
    fi
    GIT_TERMINAL_PROMPT=0 timeout "$TIMEOUT" git -C "$dir" "${auth[@]}" "$@"
}

fetch() {
    local dir="$1" code=0
    [ -e "$dir" ] && die "$dir already exists: pass a new folder" 2
    git -c init.defaultBranch="$BRANCH" init -q "$dir"
    git -C "$dir" remote add origin "$REMOTE"
    remote_git "$dir" ls-remote --exit-code --heads origin "$BRANCH" > /dev/null || code=$?
    case "$code" in
        0)  remote_git "$dir" fetch -q --depth=1 origin "$BRANCH" || die "cannot fetch branch $BRANCH from $REMOTE"
            git -C "$dir" checkout -q -B "$BRANCH" FETCH_HEAD
            echo "history: $(find "$dir/runs" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l) runs from branch $BRANCH" ;;
        2)  echo "history: branch $BRANCH does not exist yet: this run starts it" ;;
        *)  die "cannot reach $REMOTE (git exit $code): the history is not judged, and nothing is pushed" ;;
    esac
    mkdir -p "$dir/runs"
}

add() {
    local dir="$1" run="$2" id
    [ -f "$run/summary.json" ] || die "$run/summary.json: not found (pass a run folder, e.g. results/latest)" 2
    [ -d "$dir/runs" ] || die "$dir/runs: not found (run: performance-history.sh fetch $dir)" 2
    id="$(basename "$(cd "$run" && pwd -P)")"
    mkdir -p "$dir/runs/$id"
    # The branch never holds the target's URL (it may come from a secret): the host becomes a digest of it,
    # the same for the same host, so the history still groups runs by target.
    "${PYTHON:-python3}" - "$run/summary.json" "$dir/runs/$id/summary.json" <<'PY' || die "$run/summary.json: not a JSON object" 2
import hashlib, json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as source:
        data = json.load(source)
except (OSError, ValueError):
    sys.exit(1)
if not isinstance(data, dict):
    sys.exit(1)
if isinstance(data.get("host"), str) and data.get("bundled_service") is not True:
    data["host"] = "sha256:" + hashlib.sha256(data["host"].encode()).hexdigest()[:16]
with open(sys.argv[2], "w", encoding="utf-8") as target:
    json.dump(data, target, indent=1)
PY
    if [ -f "$run/capacity.json" ]; then cp "$run/capacity.json" "$dir/runs/$id/"; fi
    echo "history: added run $id"
}

publish() {
    local dir="$1" message="$2"
    git -C "$dir" rev-parse --git-dir > /dev/null 2>&1 || die "$dir: not a history checkout (run fetch first)" 2
    git -C "$dir" add -A
    if git -C "$dir" rev-parse -q --verify HEAD > /dev/null && git -C "$dir" diff --cached --quiet; then
        echo "history: nothing new to publish" >&2
    else
        git -C "$dir" -c user.name="github-actions[bot]" \
            -c user.email="41898282+github-actions[bot]@users.noreply.github.com" commit -q -m "$message"
        remote_git "$dir" push -q origin "HEAD:refs/heads/$BRANCH" \
            || die "the push to branch $BRANCH was refused or failed (did another run push first? run the job again)"
        echo "history: pushed to branch $BRANCH" >&2
    fi
    git -C "$dir" rev-parse HEAD
}

case "${1:-}" in
    fetch)   [ $# -eq 2 ] || die "usage: performance-history.sh fetch DIR" 2; fetch "$2" ;;
    add)     [ $# -eq 3 ] || die "usage: performance-history.sh add DIR RUN_DIR" 2; add "$2" "$3" ;;
    publish) [ $# -eq 3 ] || die "usage: performance-history.sh publish DIR MESSAGE" 2; publish "$2" "$3" ;;
    *)       die "usage: performance-history.sh fetch DIR | add DIR RUN_DIR | publish DIR MESSAGE" 2 ;;
esac
