#!/usr/bin/env bash
# The suite's reliability loop (docs/reliability.md#a-suite-that-is-green-every-time): `make test`
# RUNS times in a row, each in a fresh clone of REF (its own virtualenv, exported models, build/ and
# ports), optionally with `stress-ng --cpu 1` keeping one core busy. One line per run; each run's
# output in DIR/run-N.log, a failed run's clone kept for its server logs (build/logs), the results
# in DIR/results.tsv. Exits 1 if any run failed.
#
#   tests/fresh_clone_loop.sh [-n RUNS] [-d DIR] [-r REF] [--stress]
#
# Two loops at once in two shells load each other the way a second `make test` does.
set -uo pipefail

runs=10 dir="" ref=HEAD stress=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    -d) dir=$2; shift 2 ;;
    -r) ref=$2; shift 2 ;;
    --stress) stress=1; shift ;;
    *) echo "usage: $0 [-n RUNS] [-d DIR] [-r REF] [--stress]" >&2; exit 2 ;;
  esac
done
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --short "$ref")
dir=${dir:-$repo/reports/fresh-clone-loop-$commit-$$}
mkdir -p "$dir"
printf 'run\tcommit\texit\tseconds\tsummary\n' > "$dir/results.tsv"

hog=""
if [ "$stress" = 1 ]; then
  command -v stress-ng >/dev/null || { echo "stress-ng missing: apt-get install stress-ng" >&2; exit 2; }
  stress-ng --cpu 1 --quiet & hog=$!
  trap 'kill "$hog" 2>/dev/null' EXIT
fi

failed=0
for i in $(seq 1 "$runs"); do
  clone="$dir/clone-$i"
  git clone -q "$repo" "$clone" && git -C "$clone" checkout -q "$commit"
  start=$(date +%s)
  (cd "$clone" && make test) > "$dir/run-$i.log" 2>&1
  rc=$?
  seconds=$(( $(date +%s) - start ))
  summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^(FAILED|ERROR) ' "$dir/run-$i.log" | tail -n 1 | tr -d '=' | sed 's/^ *//')
  printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$commit" "$rc" "$seconds" "$summary" >> "$dir/results.tsv"
  printf 'run %2d of %d: exit %d in %4d s: %s\n' "$i" "$runs" "$rc" "$seconds" "$summary"
  if [ "$rc" = 0 ]; then
    rm -rf "$clone"
  else
    failed=$((failed + 1))
    grep -E '^(FAILED|ERROR) ' "$dir/run-$i.log" | sed 's/^/    /'
  fi
done
echo "$((runs - failed)) of $runs runs green at $commit; results in $dir/results.tsv"
[ "$failed" = 0 ]
