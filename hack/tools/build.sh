#!/usr/bin/env bash
# Builds the pinned tool binaries into bin/. A tool is rebuilt only when its
# binary is missing or the module version, dependencies and flags it was
# built from differ from the stamp written beside it.
#
# Arguments select tools by name (a component of the kube multi-call binary
# selects kube). TOOL_JOBS builds run at once (default 1): one go build
# already keeps two cores busy, and on 2 cores two at once took longer from
# an empty cache than one after another (docs/performance.md, "Cold start");
# machines with more cores may gain from more.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${BIN:-$root/bin}
jobs=${TOOL_JOBS:-1}
mkdir -p "$bin/.stamps"
# The flags of the Makefile's own builds, so that the packages both compile
# (client-go, the API types; hack/tools pins the same versions as go.mod)
# are compiled once.
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath"

# name|module dir|package|module|extra ldflags (VERSION is substituted)|links
# Largest first, so the long build starts at once and the others fill in.
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

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# build NAME DIR PKG FLAGS STAMP LINKS builds one tool; its output goes to
# the log the caller chose, and its exit status to NAME.rc beside it.
build() {
  local name=$1 dir=$2 pkg=$3 flags=$4 stamp=$5 links=$6 start=$SECONDS l
  (cd "$root/$dir" && go build -ldflags "-s -w $flags" -o "$bin/$name.tmp" "$pkg") || return
  mv "$bin/$name.tmp" "$bin/$name" || return
  for l in $links; do
    ln -sfn "$name" "$bin/$l" || return
  done
  echo "$stamp" >"$bin/.stamps/$name" || return
  echo "built $name in $((SECONDS - start))s"
}

declare -A running=() # pid -> tool
failed=()
# reap waits for one build, prints its log and notes a failure.
reap() {
  local pid=
  wait -n -p pid || true # the status is read from the .rc file
  [[ -n $pid ]] || return 0
  local name=${running[$pid]}
  unset "running[$pid]"
  cat "$logs/$name.log"
  [[ $(cat "$logs/$name.rc" 2>/dev/null) == 0 ]] || failed+=("$name")
}

for entry in "${tools[@]}"; do
  IFS='|' read -r name dir pkg module flags links <<<"$entry"
  # shellcheck disable=SC2086 # links is a list of names
  selected "$name" $links || continue
  if [[ $module == LOCAL ]]; then
    # A tool of this repository: its stamp is the hash of its sources and
    # of the module files that pin its dependencies.
    version=$(cd "$root/$dir" && cat go.mod go.sum "$pkg"/*.go | sha256sum | cut -c1-16)
  else
    version=$(cd "$root/$dir" && go list -m -f '{{.Version}}' "$module")
    if [[ $pkg == ./* ]]; then
      version+="+$(cat "$root/$dir/$pkg"/*.go | sha256sum | cut -c1-16)"
    fi
  fi
  if [[ $flags == K8S ]]; then
    v=${version%%+*}
    minor=$(echo "$v" | cut -d. -f2)
    flags="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  fi
  flags=${flags//VERSION/${version%%+*}}
  # The dependencies' versions and the build flags are part of the stamp:
  # pinning a dependency differently rebuilds what uses it.
  deps=$(sha256sum <"$root/$dir/go.sum" | cut -c1-12)
  stamp="$module@$version deps:$deps $GOFLAGS $flags"
  uptodate=true
  [[ -x $bin/$name && -f $bin/.stamps/$name && $(cat "$bin/.stamps/$name") == "$stamp" ]] || uptodate=false
  for l in $links; do
    [[ $(readlink "$bin/$l" 2>/dev/null) == "$name" ]] || uptodate=false
  done
  $uptodate && continue
  while ((${#running[@]} >= jobs)); do reap; done
  echo "building $name ($module@$version)"
  (
    rc=0
    build "$name" "$dir" "$pkg" "$flags" "$stamp" "$links" >"$logs/$name.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/$name.rc"
  ) &
  running[$!]=$name
done
while ((${#running[@]})); do reap; done

if ((${#failed[@]})); then
  echo "tool build failed: ${failed[*]}" >&2
  exit 1
fi
