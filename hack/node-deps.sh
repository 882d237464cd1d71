#!/usr/bin/env bash
# Installs the Debian packages a real node of the local federation needs
# (containerd, runc, the CNI plugins, iptables for kube-proxy) when any is
# missing. Nothing here starts a daemon: the local federation starts its own
# containerd per node. Needs root (or passwordless sudo) only when something
# is missing.
set -euo pipefail

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
[[ ${#need[@]} -eq 0 ]] && exit 0

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! sudo -n true 2>/dev/null; then
    # Not fatal: everything but the real-node tests works without them.
    echo "real nodes need ${need[*]} (Debian packages); install them as root, or set FLOTILLA_SKIP_REAL_NODES=1" >&2
    exit 0
  fi
  sudo=(sudo -n)
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
