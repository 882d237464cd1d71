#!/usr/bin/env bash
# Builds the local federation's container images as tarballs under
# bin/images (no container engine): the manager, the agent, the test web
# server, the batch program, a tampered batch program (same tag, other
# digest: what a cheating provider runs) and the sandbox (pause) image.
# Reproducible: the same sources give the same digests (bin/images/digests).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${IMAGES_DIR:-$root/bin/images}
tag=${IMAGE_TAG:-dev}
"$root/hack/tools/build.sh" imagebuild >/dev/null
mkdir -p "$out/build"

# name|package|extra ldflags
images=(
  "manager|./cmd/manager|"
  "agent|./cmd/agent|"
  "web|./hack/images/web|"
  "batch|./hack/images/batch|"
  "batch-tampered|./hack/images/batch|-X main.salt=tampered"
  "pause|./hack/images/pause|"
)
: >"$out/digests.new"
for entry in "${images[@]}"; do
  IFS='|' read -r name pkg flags <<<"$entry"
  bin=$out/build/$name
  (cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
    -ldflags "-s -w -buildid= $flags" -o "$bin" "$pkg")
  ref=docker.io/flotilla/${name%-tampered}:$tag
  exe=/${name%-tampered}
  "$root/bin/imagebuild" -ref "$ref" -o "$out/$name.tar" -entrypoint "$exe" "$exe=$bin" |
    sed "s|^|$name |" >>"$out/digests.new"
done
mv "$out/digests.new" "$out/digests"
cat "$out/digests"
