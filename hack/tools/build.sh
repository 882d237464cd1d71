#!/usr/bin/env bash
# Builds the pinned tool binaries into bin/. A tool is rebuilt only when its
# binary is missing or the module version, dependencies and flags it was
# built from differ from the stamp written beside it.
#
# Arguments select tools by name (a component of the kube multi-call binary
# selects kube). Tools build one after another: one go build already keeps
# two cores busy, and two at once took longer from an empty cache
# (docs/performance.md, "Cold start").
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${BIN:-$root/bin}
mkdir -p "$bin/.stamps"
# The flags of the Makefile's own builds, so that the packages both compile
# (client-go, the API types; hack/tools pins the same versions as go.mod)
# are compiled once.
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath"

# name|module dir|package|module (LOCAL: none)|extra ldflags (VERSION is
# substituted)|links to the binary
tools=(
  "kube|hack/tools|./kube|k8s.io/kubernetes|K8S|kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
  "kwok|hack/tools|sigs.k8s.io/kwok/cmd/kwok|sigs.k8s.io/kwok|-X sigs.k8s.io/kwok/pkg/consts.Version=VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=1.37.2|"
  "etcd|hack/tools/etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3||"
  "helm|hack/tools|helm.sh/helm/v3/cmd/helm|helm.sh/helm/v3|-X helm.sh/helm/v3/internal/version.version=VERSION|"
  "kwokctl|hack/tools|sigs.k8s.io/kwok/cmd/kwokctl|sigs.k8s.io/kwok|-X sigs.k8s.io/kwok/pkg/consts.Version=VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=1.37.2|"
  "controller-gen|hack/tools|sigs.k8s.io/controller-tools/cmd/controller-gen|sigs.k8s.io/controller-tools||"
  "imagebuild|hack/tools|./imagebuild|LOCAL||"
)

want=("$@")
selected() {
  [[ ${#want[@]} -eq 0 ]] && return 0
  local w n
  for w in "${want[@]}"; do
    for n in "$@"; do [[ $w == "$n" ]] && return 0; done
  done
  return 1
}

for entry in "${tools[@]}"; do
  IFS='|' read -r name dir pkg module flags links <<<"$entry"
  # shellcheck disable=SC2086 # links is a list of names
  selected "$name" $links || continue
  version=local
  if [[ $module != LOCAL ]]; then
    version=$(cd "$root/$dir" && go list -m -f '{{.Version}}' "$module")
  fi
  flags=${flags//VERSION/$version}
  if [[ $flags == K8S ]]; then
    minor=$(echo "$version" | cut -d. -f2)
    flags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  fi
  # A package of this repository adds the hash of its sources; the
  # module files and the build flags are part of every stamp, so pinning a
  # dependency differently rebuilds what uses it.
  if [[ $pkg == ./* ]]; then
    version+="+$(cat "$root/$dir/$pkg"/*.go | sha256sum | cut -c1-16)"
  fi
  deps=$(cat "$root/$dir/go.mod" "$root/$dir/go.sum" | sha256sum | cut -c1-12)
  stamp="$module@$version deps:$deps $GOFLAGS $flags"
  uptodate=true
  [[ -x $bin/$name && -f $bin/.stamps/$name && $(cat "$bin/.stamps/$name") == "$stamp" ]] || uptodate=false
  for l in $links; do
    [[ $(readlink "$bin/$l" 2>/dev/null) == "$name" ]] || uptodate=false
  done
  $uptodate && continue
  echo "building $name ($module@$version)"
  start=$SECONDS
  (cd "$root/$dir" && go build -ldflags "-s -w $flags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  for l in $links; do
    ln -sfn "$name" "$bin/$l"
  done
  echo "$stamp" >"$bin/.stamps/$name"
  echo "built $name in $((SECONDS - start))s"
done
