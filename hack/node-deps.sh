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
[[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
