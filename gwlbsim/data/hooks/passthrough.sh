#!/bin/sh
# gwlbtun-style tunnel hook: one-arm passthrough.
# Called as: passthrough.sh CREATE|DESTROY <ingress gwi-X> <egress gwo-X> <ENI id in hex>
# On CREATE, every packet arriving on the ingress device is redirected, unchanged, out of the egress device,
# where the tunnel handler picks it up and returns it to GWLB. DESTROY removes that ingress qdisc (with its
# filter) again: the devices may outlive the hook. With GWLBSIM_HOOK_LOG set, each call is appended to that file (the conformance
# suite reads it to see which hooks ran).
set -eu
action=${1:?action} ingress=${2:?ingress device} egress=${3:?egress device}
if [ -n "${GWLBSIM_HOOK_LOG:-}" ]; then
    echo "$*" >> "$GWLBSIM_HOOK_LOG"
fi
case "$action" in
CREATE)
    tc qdisc add dev "$ingress" ingress
    tc filter add dev "$ingress" parent ffff: protocol all prio 1 u32 match u32 0 0 \
        action mirred egress redirect dev "$egress"
    ;;
DESTROY)
    tc qdisc del dev "$ingress" ingress 2>/dev/null || true
    ;;
*) echo "passthrough.sh: unknown action $action" >&2; exit 2 ;;
esac
