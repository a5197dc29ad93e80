#!/bin/sh
# gwlbtun-style tunnel hook for the "routed" deployment mode: one arm, the kernel routes every packet from
# gwi-X back out of gwo-X (no tc mirred), so netfilter's FORWARD hooks (iptables, nftables) see the traffic
# and the appliance's forwarding policy applies to it. A routed path decrements the inner TTL / hop limit.
#
# Called as: routed.sh CREATE|DESTROY <ingress gwi-X> <egress gwo-X> <ENI id in hex>
#
# CREATE: every packet arriving on gwi-X (IPv4 and IPv6) is routed by the kernel out of gwo-X, where the
# tunnel handler picks it up and returns it to GWLB:
#     ip rule  pref 6081 iif gwi-X lookup T        (IPv4 and IPv6)
#     ip route default dev gwo-X table T          (IPv4 and IPv6)
#     forwarding on (IPv4 and IPv6), rp_filter 0 on gwi-X and 'all', accept_local 1 on gwi-X.
# T is derived from the ENI id (0x10000000 + its low 28 bits), so overlapping endpoints (same inner
# addresses, different ENIs) each get their own table; should two ENIs share their low 28 bits, the next
# free table is taken. T is never stored anywhere but in the rule itself: DESTROY reads it back from there.
# DESTROY: removes that tunnel's rules and routes (the tables are then empty, which is all a table's
# removal is), and when it was the last tunnel, puts the namespace-wide sysctls back as they were.
#
# Which tunnels exist is read from the kernel: the rules at preference 6081 with "iif gwi-...". That count
# is namespace-local, cannot drift from reality (a hook killed half-way or an appliance that crashed
# leaves rules, not a wrong number), and disappears with the namespace. Locking, table choice and the saved
# sysctls are hooklib.sh's (beside this file). Per-device settings (rp_filter, accept_local of gwi-X) go away
# with the device and are not undone.
#
# With GWLBSIM_HOOK_LOG set, each call is appended to that file (as passthrough.sh does).
set -u
HOOK=routed
. "$(dirname "$0")/hooklib.sh" || { echo "routed.sh: cannot read hooklib.sh beside it" >&2; exit 1; }
hook_start "$@"

# undo the rules and routes of one tunnel (its ingress device): what CREATE added, nothing else
remove_tunnel() {
    tunnel_rules | while read -r fam iif t; do
        [ "$iif" = "$1" ] || continue
        ip -"$fam" rule del pref "$RULE_PREF" iif "$iif" lookup "$t"
        # the route may already be gone with its device; only ours is ever in this table
        ip -"$fam" route del default table "$t" 2>/dev/null
        [ -z "$(ip -"$fam" route show table "$t" 2>/dev/null)" ] ||
            echo "routed.sh: table $t (IPv$fam) still holds routes not ours; left alone" >&2
    done
}

case "$action" in
CREATE)
    # a tunnel of the same name left over (hook killed, appliance restarted with the same ENI): start clean
    remove_tunnel "$ingress"
    [ -n "$(tunnel_rules)" ] || save_sysctls  # the first tunnel: remember how the namespace was
    t=$(pick_table "$eni") || exit 1
    ok=1
    for fam in 4 6; do
        ip -"$fam" route add default dev "$egress" table "$t" &&
            ip -"$fam" rule add pref "$RULE_PREF" iif "$ingress" lookup "$t" || { ok=0; break; }
    done
    if [ "$ok" = 0 ]; then
        remove_tunnel "$ingress"
        for fam in 4 6; do ip -"$fam" route del default table "$t" 2>/dev/null; done
        die "cannot route $ingress to $egress (table $t)"
    fi
    apply_sysctls
    echo "routed.sh: $ingress -> $egress through table $t"
    ;;
DESTROY)
    remove_tunnel "$ingress"
    [ -n "$(tunnel_rules)" ] || restore_sysctls  # the last tunnel: put the namespace back
    ;;
esac
exit 0
