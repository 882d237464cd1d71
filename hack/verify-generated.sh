#!/usr/bin/env bash
# Fails when regenerating deepcopy code, CRDs or RBAC changes any of them:
# the committed (or working-tree) copies are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
generated=(api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac/role.yaml charts/flotilla-hub/crds charts/flotilla-hub/files)
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
for g in "${generated[@]}"; do
  mkdir -p "$before/$(dirname "$g")"
  cp -r "$g" "$before/$g"
done
make --no-print-directory generate manifests >/dev/null
stale=0
for g in "${generated[@]}"; do
  if ! diff -r -u "$before/$g" "$g"; then
    stale=1
  fi
done
if [[ $stale == 1 ]]; then
  echo "generated files were stale (now regenerated, see the diff above): commit them"
  exit 1
fi
echo "generated files are up to date"
