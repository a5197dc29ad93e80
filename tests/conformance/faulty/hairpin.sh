#!/bin/sh
# Calibration appliance: a kernel-only GENEVE reflector ("bump in the wire" with no tunnel devices and no
# user-space datapath). Correct but different from the reference: the suite must not fail it for that.
#
# Run as the appliance command, inside the appliance's network namespace:
#     sh hairpin.sh {address} {gwlb_address} {health_port}
#
# Every UDP datagram a GWLB node sends to <address>:6081 is reflected by netfilter NAT:
#   prerouting:  destination rewritten to the datagram's own source address, port 6081 (DNAT);
#   forwarding:  the kernel routes it back out of the interface it came in on (ip_forward=1);
#   postrouting: source rewritten to <address>, source port left as it was (SNAT without a port range
#                keeps the port unless that would clash with another connection, which here it cannot: the
#                reply tuple <node>:6081 <- <address>:<GWLB's source port> is unique per GWLB flow).
# The GWLB so gets each datagram back byte for byte (GENEVE header, options and inner packet untouched)
# with the outer addresses swapped: from <address>:<GWLB's source port> to <node>:6081. The outer TTL is
# decremented by the forwarding; the inner packet is not touched at all.
#
# Conntrack: NAT rules see only the first datagram of each (node, source port) pair; later ones take the
# same translation from the conntrack entry. That is what we want, since the decision only depends on the
# tuple. Conntrack's defragmentation reassembles IPv4 fragments before NAT, and the forwarding path
# fragments the reflected datagram again to the original fragment size, so datagrams larger than the link
# MTU get through too.
#
# Malformed GENEVE is reflected as it came (nothing here parses it): a real appliance would drop it.
#
# A plain HTTP health listener answers 200 to GET / on <health_port>. The shell stays as its parent so
# that its trap can run: on SIGTERM (or INT/HUP) it stops the listener, removes the nft table and the
# sysctl changes it made, and exits 0. If the listener dies on its own, the same cleanup runs and the
# script exits with the listener's status.

address=${1:?usage: hairpin.sh ADDRESS GWLB_ADDRESS HEALTH_PORT}
gwlb_address=${2:?usage: hairpin.sh ADDRESS GWLB_ADDRESS HEALTH_PORT}
health_port=${3:?usage: hairpin.sh ADDRESS GWLB_ADDRESS HEALTH_PORT}
table=gwlbsim_hairpin
geneve=6081
child=
saved=

say() { echo "hairpin: $*" >&2; }

# --- sysctls: remember the old value of each one we change, to put it back on exit --------------------
setsys() {  # setsys KEY VALUE  (KEY as a path under /proc/sys)
    f=/proc/sys/$1
    [ -w "$f" ] || { say "cannot write $f"; return 1; }
    old=$(cat "$f") || return 1
    printf '%s\n' "$2" > "$f" || return 1
    saved="$saved $1=$old"
}

restore_sysctls() {
    for kv in $saved; do
        printf '%s\n' "${kv#*=}" > "/proc/sys/${kv%%=*}" 2>/dev/null || true
    done
    saved=
}

cleanup() {
    trap - TERM INT HUP
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null
        child=
    fi
    nft delete table ip "$table" 2>/dev/null
    restore_sysctls
}

trap 'cleanup; exit 0' TERM INT HUP

# The interface that faces the GWLB (the one the reflected datagrams leave by): used only to switch off
# ICMP redirects there. Forwarding a datagram back out of the interface it arrived on, to a sender on the
# same link, would otherwise make the kernel send the GWLB node an ICMP redirect now and then.
dev=$(ip -4 -o route get "$gwlb_address" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
if [ -z "$dev" ]; then
    say "no route to the GWLB address $gwlb_address"
    exit 1
fi

setsys net/ipv4/ip_forward 1 &&
    setsys net/ipv4/conf/all/send_redirects 0 &&
    setsys net/ipv4/conf/"$dev"/send_redirects 0 || { cleanup; exit 1; }

# Which datagrams: any sender that is not this namespace itself, rather than only {gwlb_address}. A GWLB
# has one node address per zone, and with cross-zone load balancing a node of another zone than ours
# sends to us too; each node must get its own datagrams back, so the match is on "not local" and the DNAT
# goes to the datagram's own source address. (Local senders are left alone: nothing here is a GWLB.)
# The "table; delete table; table {...}" sequence replaces a table left by an earlier run that was killed
# hard, in one transaction.
if ! nft -f - <<EOF
table ip $table
delete table ip $table
table ip $table {
    chain reflect {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $address udp dport $geneve fib saddr type != local counter dnat to ip saddr:$geneve
    }
    chain source {
        type nat hook postrouting priority srcnat; policy accept;
        meta l4proto udp ct status dnat ct original ip daddr $address ct original proto-dst $geneve counter snat to $address
    }
}
EOF
then
    say "cannot install the nftables table $table"
    cleanup
    exit 1
fi
say "reflecting UDP $address:$geneve back to its senders (GWLB $gwlb_address via $dev); health on port $health_port"

python3 -c '
import http.server, signal, sys

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path.split("?", 1)[0] == "/"
        body = b"healthy\n" if ok else b"not found\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Health).serve_forever()
' "$health_port" &
child=$!

# wait returns early when a trapped signal arrives; the trap then cleans up and exits 0
wait "$child"
status=$?
child=
say "health listener exited with status $status"
cleanup
exit "$status"
