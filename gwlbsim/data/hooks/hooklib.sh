# Shared by the shipped tunnel hooks that route (routed.sh, nat.sh, local.sh); sourced, never run.
#
# The caller sets HOOK (its name, for messages and its state directory) and calls hook_start "$@" first.
# hook_start checks the arguments (CREATE|DESTROY gwi-X gwo-X ENI), appends the call to $GWLBSIM_HOOK_LOG when
# that is set, and takes a flock(1) on the network namespace itself (/proc/self/ns/net: one inode per
# namespace, so no lock file is needed), held until the hook exits: hooks for different tunnels may run at the
# same time, and each reads and changes the namespace's state under that lock.
#
# Routing tables: pick_table ENI prints a table number derived from the ENI id (0x10000000 + its low 28 bits)
# or, should that be in use (two ENIs sharing their low 28 bits), the next free one. Nothing stores it but the
# rules that point at it.
#
# Namespace-wide sysctls (forwarding, rp_filter): the first tunnel saves them (save_sysctls), every CREATE sets
# them (apply_sysctls), the last DESTROY puts them back (restore_sysctls). Which tunnel is first or last is
# the caller's to say, from the kernel's own state. The saved values are in
# /run/gwlbsim-$HOOK-hook/<device>-<inode of the namespace>.sysctl (appliance namespaces share /run); a file
# left by a namespace that died (its inode may be reused) is overwritten by the next first CREATE.

RULE_PREF=6081
TABLE_BASE=268435456  # 0x10000000: clear of main/local/default and of small numbers people pick by hand
TABLE_SPAN=268435456  # tables 0x10000000 to 0x1fffffff
# namespace-wide sysctls the routing hooks change (paths under /proc/sys), with the value tunnels need
GLOBAL_SYSCTLS="net/ipv4/ip_forward=1 net/ipv6/conf/all/forwarding=1 net/ipv4/conf/all/rp_filter=0"

die() { echo "$HOOK.sh: $*" >&2; exit 1; }

hook_start() {
    action=${1:?action} ingress=${2:?ingress device} egress=${3:?egress device} eni=${4:?ENI id in hex}
    if [ -n "${GWLBSIM_HOOK_LOG:-}" ]; then
        echo "$*" >> "$GWLBSIM_HOOK_LOG"
    fi
    case "$action" in
    CREATE|DESTROY) ;;
    *) echo "$HOOK.sh: unknown action $action" >&2; exit 2 ;;
    esac
    case "$ingress$egress" in
    *[!0-9A-Za-z_.-]*) die "unexpected device names $ingress $egress" ;;
    esac
    case "$eni" in
    *[!0-9a-fA-F]*) die "ENI id $eni is not hexadecimal" ;;
    esac
    STATE=/run/gwlbsim-$HOOK-hook
    ns=$(stat -L -c '%d-%i' /proc/self/ns/net) || die "cannot identify the network namespace"
    exec 9</proc/self/ns/net || die "cannot open the network namespace"
    flock -w 20 9 || die "another hook of this namespace held the lock for 20 s"
}

read_sys() { cat "/proc/sys/$1" 2>/dev/null; }

# "<family> <iif> <table>" for every rule at RULE_PREF with an "iif gwi-..." (every tunnel's), one a line
tunnel_rules() {
    for fam in 4 6; do
        ip -"$fam" rule show pref "$RULE_PREF" | awk -v fam="$fam" '{
            iif = ""; t = ""
            for (i = 1; i < NF; i++) { if ($i == "iif") iif = $(i + 1); if ($i == "lookup") t = $(i + 1) }
            if (iif ~ /^gwi-/ && t != "") print fam, iif, t
        }'
    done
}

table_in_use() {  # any rule pointing at it, or any route in it
    for fam in 4 6; do
        ip -"$fam" rule show | awk -v t="$1" '{ for (i = 1; i < NF; i++) if ($i == "lookup" && $(i + 1) == t) f = 1 }
            END { exit !f }' && return 0
    done
    [ -n "$(ip -4 route show table "$1" 2>/dev/null)$(ip -6 route show table "$1" 2>/dev/null)" ]
}

pick_table() {
    low=${1#"${1%???????}"}  # the last 7 hex digits (or all of them when fewer)
    first=$((TABLE_BASE + 0x$low % TABLE_SPAN))
    t=$first n=0
    while table_in_use "$t"; do
        n=$((n + 1))
        [ "$n" -lt 1000 ] || die "no free routing table near $first"
        t=$((TABLE_BASE + (t - TABLE_BASE + 1) % TABLE_SPAN))
    done
    echo "$t"
}

save_sysctls() {
    mkdir -p -m 700 "$STATE" && : > "$STATE/$ns.sysctl.new" || die "cannot write $STATE/$ns.sysctl.new"
    for kv in $GLOBAL_SYSCTLS; do
        echo "${kv%%=*}=$(read_sys "${kv%%=*}")" >> "$STATE/$ns.sysctl.new"
    done
    mv "$STATE/$ns.sysctl.new" "$STATE/$ns.sysctl" || die "cannot write $STATE/$ns.sysctl"
}

apply_sysctls() {
    for kv in $GLOBAL_SYSCTLS; do
        [ "$(read_sys "${kv%%=*}")" = "${kv#*=}" ] || echo "${kv#*=}" > "/proc/sys/${kv%%=*}" ||
            die "cannot set ${kv%%=*}"
    done
    # the ingress device takes packets with any source, also one of this namespace's own addresses
    echo 0 > "/proc/sys/net/ipv4/conf/$ingress/rp_filter" &&
        echo 1 > "/proc/sys/net/ipv4/conf/$ingress/accept_local" || die "cannot configure $ingress"
    # IPv6 must be on for both devices (it is unless someone turned it off): a TUN device without an
    # address still receives and forwards IPv6, and no neighbour discovery happens on it
    for dev in "$ingress" "$egress"; do
        [ "$(read_sys "net/ipv6/conf/$dev/disable_ipv6")" != 1 ] || echo 0 > "/proc/sys/net/ipv6/conf/$dev/disable_ipv6"
    done
}

restore_sysctls() {
    [ -f "$STATE/$ns.sysctl" ] || return 0
    while IFS== read -r key value; do
        [ -n "$value" ] && [ "$(read_sys "$key")" != "$value" ] && echo "$value" > "/proc/sys/$key"
    done < "$STATE/$ns.sysctl"
    rm -f "$STATE/$ns.sysctl"
}
