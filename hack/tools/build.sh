#!/usr/bin/env bash
# Builds the pinned tool binaries into bin/. A tool is rebuilt only when its
# binary is missing or the module version (and flags) it was built from differ
# from the stamp written beside it, so bumping a version in go.mod rebuilds
# exactly the tools of that module.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${BIN:-$root/bin}
mkdir -p "$bin/.stamps"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

# name|module dir|package|module|extra ldflags (VERSION is substituted)
tools=(
  "controller-gen|hack/tools|sigs.k8s.io/controller-tools/cmd/controller-gen|sigs.k8s.io/controller-tools|"
  "etcd|hack/tools/etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3|"
  "kwok|hack/tools|sigs.k8s.io/kwok/cmd/kwok|sigs.k8s.io/kwok|-X sigs.k8s.io/kwok/pkg/consts.Version=VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=1.37.2"
  "kwokctl|hack/tools|sigs.k8s.io/kwok/cmd/kwokctl|sigs.k8s.io/kwok|-X sigs.k8s.io/kwok/pkg/consts.Version=VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=1.37.2"
  "helm|hack/tools|helm.sh/helm/v3/cmd/helm|helm.sh/helm/v3|-X helm.sh/helm/v3/internal/version.version=VERSION"
  "kube-apiserver|hack/tools|k8s.io/kubernetes/cmd/kube-apiserver|k8s.io/kubernetes|K8S"
  "kube-controller-manager|hack/tools|k8s.io/kubernetes/cmd/kube-controller-manager|k8s.io/kubernetes|K8S"
  "kube-scheduler|hack/tools|k8s.io/kubernetes/cmd/kube-scheduler|k8s.io/kubernetes|K8S"
  "kubectl|hack/tools|k8s.io/kubernetes/cmd/kubectl|k8s.io/kubernetes|K8S"
  "kubelet|hack/tools|k8s.io/kubernetes/cmd/kubelet|k8s.io/kubernetes|K8S"
  "kube-proxy|hack/tools|k8s.io/kubernetes/cmd/kube-proxy|k8s.io/kubernetes|K8S"
  "imagebuild|hack/tools|./imagebuild|LOCAL|"
)

want=("$@")
selected() {
  [[ ${#want[@]} -eq 0 ]] && return 0
  local w
  for w in "${want[@]}"; do [[ $w == "$1" ]] && return 0; done
  return 1
}

for entry in "${tools[@]}"; do
  IFS='|' read -r name dir pkg module flags <<<"$entry"
  selected "$name" || continue
  if [[ $module == LOCAL ]]; then
    # A tool of this repository: its stamp is the hash of its sources and
    # of the module files that pin its dependencies.
    version=$(cd "$root/$dir" && cat go.mod go.sum "$pkg"/*.go | sha256sum | cut -c1-16)
  else
    version=$(cd "$root/$dir" && go list -m -f '{{.Version}}' "$module")
  fi
  if [[ $flags == K8S ]]; then
    minor=$(echo "$version" | cut -d. -f2)
    flags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  fi
  flags=${flags//VERSION/$version}
  stamp="$module@$version $flags"
  if [[ -x $bin/$name && -f $bin/.stamps/$name && $(cat "$bin/.stamps/$name") == "$stamp" ]]; then
    continue
  fi
  echo "building $name ($module@$version)"
  start=$SECONDS
  (cd "$root/$dir" && go build -ldflags "-s -w $flags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$stamp" >"$bin/.stamps/$name"
  echo "built $name in $((SECONDS - start))s"
done
