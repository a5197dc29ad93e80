#!/bin/sh
# gwlbtun-style tunnel hook for the "nat" deployment mode (two-arm NAT): traffic between the consumer VPCs'
# addresses goes back through the tunnel as in routed mode; traffic to anywhere else leaves by the appliance's
# own default route (its second arm), masqueraded, and conntrack puts the replies back into the tunnel the
# flow came from, where the tunnel handler returns them to GWLB with the flow's cookie.
#
# Called as: nat.sh CREATE|DESTROY <ingress gwi-X> <egress gwo-X> <ENI id in hex>
#
# CREATE, for tunnel X with routing table T (picked per ENI, see hooklib.sh) and conntrack zone Z:
#     ip route <each VPC range> dev gwo-X table T                 (IPv4 and IPv6)
#     ip rule  pref 6081 iif gwi-X lookup T                       (VPC ranges: back into the tunnel;
#                                                                  anything else falls through to the main
#                                                                  table: the default route, the second arm)
#     ip rule  pref 6082 fwmark T lookup T                        (replies from the second arm, below)
#     nftables table inet gwlbsim_nat_gwi-X:
#         untracked (priority -450, before conntrack's defragmentation at -400): from gwi-X to a VPC address:
#                 notrack, so traffic that goes back through the tunnel passes exactly as in routed mode
#                 (fragments are not reassembled, TCP is not state-checked)
#         zones (raw): from gwi-X to a non-VPC address: conntrack zone Z in the original direction only, so
#                 endpoints with overlapping addresses (the same 5-tuple from two ENIs) keep separate
#                 connections, and masquerade picks a distinct port for each in the shared reply zone
#         mangle: a connection that starts on gwi-X gets ct mark T; a packet of such a connection arriving
#                 on any device but a tunnel's (the reply from the internet) gets fwmark T
#         nat:    from gwi-X out of any device but gwo-X: masquerade
#     forwarding on, rp_filter 0 (see hooklib.sh).
# DESTROY: removes that tunnel's nftables table, rules and routes; the last tunnel puts the sysctls back.
#
# GWLBSIM_NAT_VPC_CIDRS: the consumer VPCs' ranges, which stay in the tunnel (default: the private ranges
# 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 fc00::/7). gwlbtun's overlapping NAT example asks
# AWS for the endpoint's VPC ranges instead; here every endpoint gets the same list.
# With GWLBSIM_HOOK_LOG set, each call is appended to that file (as passthrough.sh does).
set -u
HOOK=nat
. "$(dirname "$0")/hooklib.sh" || { echo "nat.sh: cannot read hooklib.sh beside it" >&2; exit 1; }
hook_start "$@"

MARK_PREF=6082
VPC=${GWLBSIM_NAT_VPC_CIDRS:-10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 fc00::/7}
NFT_TABLE=gwlbsim_nat_$ingress
v4=$(for c in $VPC; do case "$c" in *:*) ;; *) printf '%s, ' "$c" ;; esac; done)
v6=$(for c in $VPC; do case "$c" in *:*) printf '%s, ' "$c" ;; esac; done)
[ -n "$v4$v6" ] || die "GWLBSIM_NAT_VPC_CIDRS holds no address range"

# undo one tunnel (its ingress device): its nftables table, rules and routes; nothing else
remove_tunnel() {
    nft delete table inet "gwlbsim_nat_$1" 2>/dev/null
    tunnel_rules | while read -r fam iif t; do
        [ "$iif" = "$1" ] || continue
        ip -"$fam" rule del pref "$RULE_PREF" iif "$iif" lookup "$t"
        ip -"$fam" rule del pref "$MARK_PREF" fwmark "$t" lookup "$t" 2>/dev/null
        ip -"$fam" route flush table "$t" 2>/dev/null
    done
}

zone_in_use() { nft list ruleset 2>/dev/null | grep -q "ct original zone set $1\$"; }

case "$action" in
CREATE)
    remove_tunnel "$ingress"
    [ -n "$(tunnel_rules)" ] || save_sysctls
    t=$(pick_table "$eni") || exit 1
    z=$(((t - TABLE_BASE) % 65535 + 1)) n=0
    while zone_in_use "$z"; do
        n=$((n + 1))
        [ "$n" -lt 65535 ] || die "no free conntrack zone"
        z=$((z % 65535 + 1))
    done
    ok=1
    for c in $VPC; do
        ip route add "$c" dev "$egress" table "$t" || { ok=0; break; }
    done
    for fam in 4 6; do
        [ "$ok" = 1 ] || break
        ip -"$fam" rule add pref "$RULE_PREF" iif "$ingress" lookup "$t" &&
            ip -"$fam" rule add pref "$MARK_PREF" fwmark "$t" lookup "$t" || ok=0
    done
    untracked="" zones=""
    [ -z "$v4" ] || untracked="$untracked iifname \"$ingress\" ip daddr { ${v4%, } } notrack;"
    [ -z "$v6" ] || untracked="$untracked iifname \"$ingress\" ip6 daddr { ${v6%, } } notrack;"
    [ -z "$v4" ] || zones="$zones iifname \"$ingress\" ip daddr != { ${v4%, } } ct original zone set $z;"
    [ -z "$v6" ] || zones="$zones iifname \"$ingress\" ip6 daddr != { ${v6%, } } ct original zone set $z;"
    [ "$ok" = 0 ] || nft -f - <<EOF || ok=0
table inet $NFT_TABLE {
    chain untracked { type filter hook prerouting priority -450;$untracked }
    chain zones { type filter hook prerouting priority raw;$zones }
    chain marks {
        type filter hook prerouting priority mangle;
        iifname "$ingress" ct state new ct mark set $t;
        iifname != "gwi-*" ct mark $t meta mark set $t;
    }
    chain outbound { type nat hook postrouting priority srcnat; iifname "$ingress" oifname != "$egress" masquerade; }
}
EOF
    if [ "$ok" = 0 ]; then
        remove_tunnel "$ingress"
        ip route flush table "$t" 2>/dev/null
        ip -6 route flush table "$t" 2>/dev/null
        die "cannot set up NAT for $ingress -> $egress (table $t, zone $z)"
    fi
    apply_sysctls
    echo "nat.sh: $ingress: VPC ranges back out of $egress (table $t), the rest masqueraded (zone $z)"
    ;;
DESTROY)
    remove_tunnel "$ingress"
    [ -n "$(tunnel_rules)" ] || restore_sysctls
    ;;
esac
exit 0
