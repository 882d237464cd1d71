#!/usr/bin/env bash
# Runs every Go fuzz target of the repository for a bounded time each
# (FUZZTIME, default 30s). Go runs one fuzz target per invocation, so each
# is found and run on its own; a failure prints the target and the input
# Go saved under testdata/fuzz, and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
failed=()
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  echo "==> $pkg $name ($fuzztime)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"; then
    failed+=("$pkg $name")
  fi
done < <(git ls-files '*_test.go' | grep -v '^hack/tools/' | xargs grep -Ho '^func Fuzz[A-Za-z0-9_]*' | sed 's/:func /:/' | sort)
if ((${#failed[@]})); then
  printf 'fuzz target failed: %s\n' "${failed[@]}"
  exit 1
fi
echo "every fuzz target ran $fuzztime without a failure"
