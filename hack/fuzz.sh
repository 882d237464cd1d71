#!/usr/bin/env bash
# Runs every Go fuzz target of the repository for a bounded time each
# (FUZZTIME, default 30s). Go runs one fuzz target per invocation, so each
# is found and run on its own; a failure prints the target and the input
# Go saved under testdata/fuzz, and the script exits non-zero.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context
# deadline exceeded" when -fuzztime ends while a worker is busy
# (go.dev/issue/75804, fixed in Go 1.27): no input is written and nothing
# is wrong with the target. Such a run is tried again once; a failure that
# writes an input, panics, or repeats fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
failed=()
out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() {
  go test -run '^$' -fuzz "^$2\$" -fuzztime "$fuzztime" "$1" 2>&1 | tee "$out"
}
coordinator_deadline() {
  grep -q 'context deadline exceeded' "$out" && ! grep -qE 'Failing input written|panic:' "$out"
}
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  echo "==> $pkg $name ($fuzztime)"
  if run "$pkg" "$name"; then
    continue
  fi
  if coordinator_deadline; then
    echo "==> $pkg $name: the fuzz coordinator's deadline (go.dev/issue/75804), no input written; once more"
    if run "$pkg" "$name"; then
      continue
    fi
  fi
  failed+=("$pkg $name")
done < <(git ls-files '*_test.go' | grep -v '^hack/tools/' | xargs grep -Ho '^func Fuzz[A-Za-z0-9_]*' | sed 's/:func /:/' | sort)
if ((${#failed[@]})); then
  printf 'fuzz target failed: %s\n' "${failed[@]}"
  exit 1
fi
echo "every fuzz target ran $fuzztime without a failure"
