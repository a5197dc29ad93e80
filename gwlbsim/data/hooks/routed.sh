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
# leaves rules, not a wrong number), and disappears with the namespace. Hooks for different tunnels may
# run at the same time: each holds a flock(1) on the namespace itself (/proc/self/ns/net: one inode per
# namespace, so no lock file is needed) while it reads and changes that state. One thing lives in a file:
# the namespace-wide sysctl values found before the first tunnel changed them, in
# /run/gwlbsim-routed-hook/<device>-<inode of the namespace>.sysctl (appliance namespaces share /run).
# That file is only trusted while tunnels of ours exist: one left by a namespace that died (its inode may
# be reused) is overwritten by the next first CREATE, and the last DESTROY removes it.
# Per-device settings (rp_filter, accept_local of gwi-X) go away with the device and are not undone.
#
# With GWLBSIM_HOOK_LOG set, each call is appended to that file (as passthrough.sh does).
set -u
action=${1:?action} ingress=${2:?ingress device} egress=${3:?egress device} eni=${4:?ENI id in hex}
if [ -n "${GWLBSIM_HOOK_LOG:-}" ]; then
    echo "$*" >> "$GWLBSIM_HOOK_LOG"
fi

PREF=6081
TABLE_BASE=268435456  # 0x10000000: clear of main/local/default and of small numbers people pick by hand
TABLE_SPAN=268435456  # tables 0x10000000 to 0x1fffffff
STATE=/run/gwlbsim-routed-hook
# namespace-wide sysctls this hook may change (paths under /proc/sys), with the value tunnels need
GLOBAL="net/ipv4/ip_forward=1 net/ipv6/conf/all/forwarding=1 net/ipv4/conf/all/rp_filter=0"

die() { echo "routed.sh: $*" >&2; exit 1; }

case "$ingress$egress" in
*[!0-9A-Za-z_.-]*) die "unexpected device names $ingress $egress" ;;
esac
case "$action:$eni" in
CREATE:|CREATE:*[!0-9a-fA-F]*) die "ENI id $eni is not hexadecimal" ;;
esac

ns=$(stat -L -c '%d-%i' /proc/self/ns/net) || die "cannot identify the network namespace"
exec 9</proc/self/ns/net || die "cannot open the network namespace"
flock -w 20 9 || die "another hook of this namespace held the lock for 20 s"

# "<family> <iif> <table>" for every rule of ours (all tunnels), one a line
our_rules() {
    for fam in 4 6; do
        ip -"$fam" rule show pref "$PREF" | awk -v fam="$fam" '{
            iif = ""; t = ""
            for (i = 1; i < NF; i++) { if ($i == "iif") iif = $(i + 1); if ($i == "lookup") t = $(i + 1) }
            if (iif ~ /^gwi-/ && t != "") print fam, iif, t
        }'
    done
}

table_in_use() {  # any rule pointing at it, or any route in it
    ip -4 rule show | awk -v t="$1" '{ for (i = 1; i < NF; i++) if ($i == "lookup" && $(i + 1) == t) f = 1 } END { exit !f }' && return 0
    ip -6 rule show | awk -v t="$1" '{ for (i = 1; i < NF; i++) if ($i == "lookup" && $(i + 1) == t) f = 1 } END { exit !f }' && return 0
    [ -n "$(ip -4 route show table "$1" 2>/dev/null)$(ip -6 route show table "$1" 2>/dev/null)" ]
}

# undo the rules and routes of one tunnel (its ingress device): what CREATE added, nothing else
remove_tunnel() {
    our_rules | while read -r fam iif t; do
        [ "$iif" = "$1" ] || continue
        ip -"$fam" rule del pref "$PREF" iif "$iif" lookup "$t"
        # the route may already be gone with its device; only ours is ever in this table
        ip -"$fam" route del default table "$t" 2>/dev/null
        [ -z "$(ip -"$fam" route show table "$t" 2>/dev/null)" ] ||
            echo "routed.sh: table $t (IPv$fam) still holds routes not ours; left alone" >&2
    done
}

read_sys() { cat "/proc/sys/$1" 2>/dev/null; }

case "$action" in
CREATE)
    # a tunnel of the same name left over (hook killed, appliance restarted with the same ENI): start clean
    remove_tunnel "$ingress"
    if [ -z "$(our_rules)" ]; then  # the first tunnel: remember how the namespace was
        mkdir -p -m 700 "$STATE" && : > "$STATE/$ns.sysctl.new" || die "cannot write $STATE/$ns.sysctl.new"
        for kv in $GLOBAL; do
            echo "${kv%%=*}=$(read_sys "${kv%%=*}")" >> "$STATE/$ns.sysctl.new"
        done
        mv "$STATE/$ns.sysctl.new" "$STATE/$ns.sysctl" || die "cannot write $STATE/$ns.sysctl"
    fi
    low=${eni#"${eni%???????}"}  # the last 7 hex digits (or all of them when fewer)
    t=$((TABLE_BASE + 0x$low % TABLE_SPAN))
    n=0
    while table_in_use "$t"; do
        n=$((n + 1))
        [ "$n" -lt 1000 ] || die "no free routing table near $((TABLE_BASE + 0x$low % TABLE_SPAN))"
        t=$((TABLE_BASE + (t - TABLE_BASE + 1) % TABLE_SPAN))
    done
    ok=1
    for fam in 4 6; do
        ip -"$fam" route add default dev "$egress" table "$t" &&
            ip -"$fam" rule add pref "$PREF" iif "$ingress" lookup "$t" || { ok=0; break; }
    done
    if [ "$ok" = 0 ]; then
        remove_tunnel "$ingress"
        for fam in 4 6; do ip -"$fam" route del default table "$t" 2>/dev/null; done
        die "cannot route $ingress to $egress (table $t)"
    fi
    for kv in $GLOBAL; do
        [ "$(read_sys "${kv%%=*}")" = "${kv#*=}" ] || echo "${kv#*=}" > "/proc/sys/${kv%%=*}" ||
            die "cannot set ${kv%%=*}"
    done
    echo 0 > "/proc/sys/net/ipv4/conf/$ingress/rp_filter" &&
        echo 1 > "/proc/sys/net/ipv4/conf/$ingress/accept_local" || die "cannot configure $ingress"
    # IPv6 must be on for both devices (it is unless someone turned it off): a TUN device without an
    # address still receives and forwards IPv6, and no neighbour discovery happens on it
    for dev in "$ingress" "$egress"; do
        [ "$(read_sys "net/ipv6/conf/$dev/disable_ipv6")" != 1 ] || echo 0 > "/proc/sys/net/ipv6/conf/$dev/disable_ipv6"
    done
    echo "routed.sh: $ingress -> $egress through table $t"
    ;;
DESTROY)
    remove_tunnel "$ingress"
    if [ -z "$(our_rules)" ] && [ -f "$STATE/$ns.sysctl" ]; then  # the last tunnel: put the namespace back
        while IFS== read -r key value; do
            [ -n "$value" ] && [ "$(read_sys "$key")" != "$value" ] && echo "$value" > "/proc/sys/$key"
        done < "$STATE/$ns.sysctl"
        rm -f "$STATE/$ns.sysctl"
    fi
    ;;
*) echo "routed.sh: unknown action $action" >&2; exit 2 ;;
esac
exit 0
