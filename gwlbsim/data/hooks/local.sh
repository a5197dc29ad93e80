#!/bin/sh
# gwlbtun-style tunnel hook for the "local" deployment mode (local termination): TCP flows to the ports in
# GWLBSIM_LOCAL_PORTS are answered by a service in the appliance's own namespace (a transparent proxy or
# responder listening on that port with IP_TRANSPARENT, e.g. gwlb-reference --local-responder PORT); its replies
# leave through the flow's gwo-X, where the tunnel handler returns them to GWLB with the flow's header. Every
# other packet is routed back out of gwo-X as in routed mode.
#
# Called as: local.sh CREATE|DESTROY <ingress gwi-X> <egress gwo-X> <ENI id in hex>
#
# CREATE, for tunnel X with routing table T (picked per ENI, see hooklib.sh) and table L = T + 0x10000000:
#     ip route default dev gwo-X table T;  ip route local default dev lo table L      (IPv4 and IPv6)
#     ip rule  pref 6080 iif gwi-X fwmark T lookup L     (diverted packets: delivered to the local listener)
#     ip rule  pref 6081 iif gwi-X lookup T              (everything else: back out of gwo-X)
#     ip rule  pref 6082 fwmark T lookup T               (the listener's replies: out of gwo-X)
#     nftables table inet gwlbsim_local_gwi-X:
#         untracked (priority -450, before the defragmentation TPROXY needs): from gwi-X, anything but TCP to
#                 a terminated port is not tracked, so it passes exactly as in routed mode (fragments too)
#         divert (mangle): TCP from gwi-X to a terminated port gets fwmark T and TPROXY to the same port (the
#                 listener sees the original addresses)
#     net.ipv4.tcp_fwmark_accept 1: a connection the listener accepts keeps its SYN's mark T, so its replies
#     (SYN-ACK included) are routed by rule 6082 into the flow's own gwo-X; forwarding on, rp_filter 0 (see
#     hooklib.sh); the last DESTROY puts all of them back.
# DESTROY: removes that tunnel's nftables table, rules and routes; the last tunnel puts the sysctls back.
#
# GWLBSIM_LOCAL_PORTS: the TCP ports terminated (default 7780, the port gwlb-conformance --mode local checks).
# With GWLBSIM_HOOK_LOG set, each call is appended to that file (as passthrough.sh does).
set -u
HOOK=local
. "$(dirname "$0")/hooklib.sh" || { echo "local.sh: cannot read hooklib.sh beside it" >&2; exit 1; }
hook_start "$@"
GLOBAL_SYSCTLS="$GLOBAL_SYSCTLS net/ipv4/tcp_fwmark_accept=1"

DIVERT_PREF=6080 MARK_PREF=6082
PORTS=$(echo "${GWLBSIM_LOCAL_PORTS:-7780}" | tr ' ' ',')
case "$PORTS" in
''|*[!0-9,]*|,*|*,|*,,*) die "GWLBSIM_LOCAL_PORTS must be TCP port numbers, not '${GWLBSIM_LOCAL_PORTS:-}'" ;;
esac

remove_tunnel() {
    nft delete table inet "gwlbsim_local_$1" 2>/dev/null
    tunnel_rules | while read -r fam iif t; do
        [ "$iif" = "$1" ] || continue
        l=$((t + TABLE_SPAN))
        ip -"$fam" rule del pref "$RULE_PREF" iif "$iif" lookup "$t"
        ip -"$fam" rule del pref "$DIVERT_PREF" iif "$iif" fwmark "$t" lookup "$l" 2>/dev/null
        ip -"$fam" rule del pref "$MARK_PREF" fwmark "$t" lookup "$t" 2>/dev/null
        ip -"$fam" route flush table "$t" 2>/dev/null
        ip -"$fam" route flush table "$l" 2>/dev/null
    done
}

case "$action" in
CREATE)
    remove_tunnel "$ingress"
    [ -n "$(tunnel_rules)" ] || save_sysctls
    t=$(pick_table "$eni") || exit 1
    l=$((t + TABLE_SPAN))
    ! table_in_use "$l" || die "routing table $l is in use already"
    ok=1
    for fam in 4 6; do
        all=0.0.0.0/0
        [ "$fam" = 4 ] || all=::/0
        ip -"$fam" route add default dev "$egress" table "$t" &&
            ip -"$fam" route add local "$all" dev lo table "$l" &&
            ip -"$fam" rule add pref "$DIVERT_PREF" iif "$ingress" fwmark "$t" lookup "$l" &&
            ip -"$fam" rule add pref "$RULE_PREF" iif "$ingress" lookup "$t" &&
            ip -"$fam" rule add pref "$MARK_PREF" fwmark "$t" lookup "$t" || { ok=0; break; }
    done
    divert=""
    for port in $(echo "$PORTS" | tr ',' ' '); do
        for fam in ip ip6; do
            nfproto=ipv4
            [ "$fam" = ip ] || nfproto=ipv6
            divert="$divert        iifname \"$ingress\" meta nfproto $nfproto tcp dport $port meta mark set $t tproxy $fam to :$port;
"
        done
    done
    [ "$ok" = 0 ] || nft -f - <<EOF || ok=0
table inet gwlbsim_local_$ingress {
    chain untracked {
        type filter hook prerouting priority -450;
        iifname "$ingress" ip frag-off & 0x1fff != 0 notrack;
        iifname "$ingress" meta l4proto != tcp notrack;
        iifname "$ingress" tcp dport != { $PORTS } notrack;
    }
    chain divert {
        type filter hook prerouting priority mangle;
$divert
    }
}
EOF
    if [ "$ok" = 0 ]; then
        remove_tunnel "$ingress"
        for fam in 4 6; do
            ip -"$fam" route flush table "$t" 2>/dev/null
            ip -"$fam" route flush table "$l" 2>/dev/null
        done
        die "cannot set up local termination for $ingress -> $egress (tables $t, $l)"
    fi
    apply_sysctls
    echo "local.sh: $ingress: TCP ports $PORTS answered here, the rest back out of $egress (table $t)"
    ;;
DESTROY)
    remove_tunnel "$ingress"
    [ -n "$(tunnel_rules)" ] || restore_sysctls
    ;;
esac
exit 0
