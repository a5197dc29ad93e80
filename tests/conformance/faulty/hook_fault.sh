#!/bin/sh
# A shipped routing hook with one deliberate fault, for proving the conformance suite's deployment requirements.
# Called as: hook_fault.sh FAULT <path of the shipped hook> CREATE|DESTROY gwi-X gwo-X ENI
#
# Faults of the two-arm NAT hook (nat.sh; each one a real way to get two-arm NAT wrong):
#   no-reply-route   the internet's replies are not steered back into the tunnel (the fwmark rule is missing:
#                    they follow the main table, out of the second arm again)
#   routes-inbound   whatever arrives on the second arm for a VPC address is routed into the tunnel, also packets
#                    of flows the internet side started (a rule by incoming interface instead of by connection)
#   no-zones         no conntrack zone per endpoint: the same 5-tuple from two endpoints is one connection (as
#                    gwlbtun's create-nat-overlapping.sh does)
# Faults of the local-termination hook (local.sh):
#   no-fwmark-accept the local service's connections do not keep their SYN's mark, so their replies (the SYN-ACK
#                    first) are routed by the main table, not into the flow's tunnel
set -u
fault=${1:?fault} hook=${2:?shipped hook}
shift 2
sh "$hook" "$@" || exit
[ "$1" = CREATE ] || exit 0
table=$(ip -4 rule show pref 6081 | awk -v d="$2" '$0 ~ "iif " d " " { for (i = 1; i < NF; i++) if ($i == "lookup") print $(i + 1) }')
[ -n "$table" ] || { echo "hook_fault.sh: no table for $2" >&2; exit 1; }
case "$fault" in
no-reply-route)
    for fam in 4 6; do ip -"$fam" rule del pref 6082 fwmark "$table" lookup "$table"; done ;;
routes-inbound)
    uplink=$(ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1) }')
    for fam in 4 6; do
        ip -"$fam" rule show pref 6080 | grep -q "iif $uplink" || ip -"$fam" rule add pref 6080 iif "$uplink" lookup "$table"
    done ;;
no-zones)
    nft delete chain inet "gwlbsim_nat_$2" zones ;;
no-fwmark-accept)
    echo 0 > /proc/sys/net/ipv4/tcp_fwmark_accept ;;
*) echo "hook_fault.sh: unknown fault $fault" >&2; exit 2 ;;
esac
