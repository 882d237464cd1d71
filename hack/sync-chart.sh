#!/usr/bin/env bash
# Copies what the hub chart shares with config/ (CRDs, the manager's
# generated RBAC, admission policies, tenant roles) into charts/flotilla-hub,
# so there is one source for each. Run by `make manifests`; `make verify`
# fails when the copies are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/flotilla-hub
rm -f "$chart"/crds/*.yaml "$chart"/files/admission/*.yaml
mkdir -p "$chart/crds" "$chart/files/admission"
cp config/crd/bases/*.yaml "$chart/crds/"
cp config/admission/*-policy.yaml "$chart/files/admission/"
cp config/rbac/role.yaml "$chart/files/manager-role.yaml"
cp config/rbac/tenant_role.yaml "$chart/files/tenant_role.yaml"
