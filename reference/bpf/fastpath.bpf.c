// The reference appliance's kernel fast path (gwlb-reference --datapath kernel): two tc programs.
//
// geneve_in (tcx ingress of the device GENEVE arrives on): a GENEVE datagram in GWLB's own layout (IPv4, no
// IP options or fragments, UDP to 6081, version 0, no O or C bit, exactly the three options of the configured
// class: ENI id, attachment id, cookie, in any order) carrying an unfragmented IPv4 packet or an IPv6 packet
// without extension headers (the protocol type saying which), for an ENI whose tunnel the Python side has
// opened (marked ready, and not closed for its retirement), passing the checks the stack would make (the IPv4
// header's checksum; the UDP checksum unless zero or checked by the device; a frame to this host, to an address
// GENEVE is received on): the flow is
// learnt (header byte for byte and the outer addressing, keyed by ENI and the symmetric inner flow key), the
// outer headers are stripped and the inner packet is redirected into the tunnel's gwi- as if received there.
// Headers outside the linear data (a jumbo frame, say) are made linear first; the rest of the packet stays
// where it is. Anything else goes on to the stack, where the Python datapath's socket receives it (and drops
// what is malformed, with its reason) or the stack drops it first.
//
// tunnel_out (tcx egress of every gwi-/gwo-): such an IPv4 or IPv6 packet of a flow in the map, of an open
// tunnel, with the next hop toward its GWLB node known, that came in through a tunnel (not a local service's
// reply, not a second arm's NAT reply: those may carry checksums left to the device) and is not GSO, gets the
// outer Ethernet/IPv4/UDP/GENEVE headers (the flow's latest header, GWLB's source port to 6081, addresses
// swapped, checksums right, as the Python path writes them) and is redirected out of that device. Anything else
// goes on to the TUN device, where the Python datapath reads it.
//
// The key layout, the value layout and the counter indexes are mirrored in reference/kernelpath.py.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define GENEVE_PORT 6081
#define GENEVE_LEN 40 /* 8-byte base header + 32 bytes of options: GWLB's layout */
#define OUTER_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr) + GENEVE_LEN)
#define MAX_INNER 8500
/* what the fast path reads of a datagram: the outer headers and the inner IP header (IPv4 with the most options,
   or IPv6) with its ports; made linear first where it is not */
#define PULL_LEN (OUTER_LEN + 64)
#define RETURN_TTL 64
#define REFRESH_NS 1000000000ULL /* gwlbsim.linuxio.linkpath.REFRESH */
/* "not mine": tcx goes on to the next program and the device's classic tc filters (TCX_NEXT) */
#define PASS TC_ACT_UNSPEC
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8) /* Linux 6.3: the packet left is IPv6 (skb->protocol follows) */
#endif

struct flow_key {
    __u64 eni;
    __u8 proto;
    __u8 family; /* 4 or 6 */
    __u16 lo_port; /* the lower (address, port) end of the flow, network order */
    __u16 hi_port;
    __u16 pad;
    __u8 lo_addr[16]; /* an IPv4 address in the first 4 bytes, the rest zero */
    __u8 hi_addr[16];
};

struct flow_val {
    __u8 header[GENEVE_LEN];
    __u32 gwlb_addr; /* GWLB's address (the outer source it came from), network order */
    __u32 self_addr; /* ours (the outer destination) */
    __u16 gwlb_port; /* GWLB's source port, network order */
    __u16 pad;
    __u32 pad2;
    __u64 last_seen; /* when its latest packet from GWLB came (CLOCK_MONOTONIC_COARSE ns: a tick late at most) */
};

struct tunnel_val {
    __u32 gwi_ifindex;
    __u32 gwo_ifindex;
    __u64 last_seen;
    __u64 packets_in; /* what this path carried for the tunnel: inner packets and bytes, each way */
    __u64 bytes_in;
    __u64 packets_out;
    __u64 bytes_out;
};

struct nexthop_val {
    __u32 ifindex;
    __u8 src_mac[6];
    __u8 dst_mac[6];
    __u64 next_refresh; /* coarse time after which one return goes through the IP layer (Python) */
};

struct config_val {
    __u16 option_class; /* host order */
    __u8 udp_checksum;
    __u8 pad[5];
};

enum counter {
    C_IN_FAST,      /* datagrams decapsulated into a tunnel here */
    C_IN_FAST_BYTES,
    C_IN_PASSED,    /* datagrams to 6081 left to the Python datapath */
    C_OUT_FAST,     /* returns encapsulated here */
    C_OUT_FAST_BYTES,
    C_OUT_PASSED,   /* tunnel packets left to the Python datapath (no flow, no next hop, other layouts) */
    C_IN_REDIRECT_FAILED,
    C_OUT_REDIRECT_FAILED,
    C_COUNT,
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1000000);
    __type(key, struct flow_key);
    __type(value, struct flow_val);
} flows SEC(".maps");

/* the open tunnels, by ENI; one copy per CPU, each counting what its CPU carried (no atomic operations per
   packet): the Python side writes the devices into every copy and reads the latest time and the sums. A tunnel
   about to be retired is taken out (closed) first: from then on its packets are the Python datapath's, both
   ways, so that the decision to retire it is made where its packets are handled */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, struct tunnel_val);
} tunnels SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 131072);
    __type(key, __u32);
    __type(value, __u64);
} devices SEC(".maps");

/* the addresses GENEVE is received on: the one the Python datapath's socket listens on, or every IPv4
   address of the namespace when it listens on all (kept current by the Python side) */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u8);
} own_addrs SEC(".maps");

#define DEVICE_SLOTS 65536 /* reference/kernelpath.py DEVICE_SLOTS */
struct device_slot {
    __u32 ifindex;
    __u32 pad;
    __u64 eni;
};

/* the tunnel devices again, each at its index modulo DEVICE_SLOTS when that slot was free: found without
   hashing (an array lookup is a few instructions); a device whose slot another holds is in devices alone */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, DEVICE_SLOTS);
    __type(key, __u32);
    __type(value, struct device_slot);
} device_slots SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct nexthop_val);
} nexthops SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct config_val);
} config SEC(".maps");

/* all the counters in one per-CPU entry: one lookup counts a packet and its bytes */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64[C_COUNT]);
} counters SEC(".maps");

/* where a piece of a packet that is not in its linear data is copied to be summed */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u8[256]);
} scratch SEC(".maps");

/* this CPU's counters, indexed by enum counter (always there: an array's only entry) */
static __always_inline __u64 *counts(void)
{
    __u32 zero = 0;
    return bpf_map_lookup_elem(&counters, &zero);
}

static __always_inline void count(enum counter which)
{
    __u64 *c = counts();
    if (c)
        c[which] += 1;
}

/* the ENI of the tunnel device ifindex, or NULL for any other device */
static __always_inline __u64 *tunnel_of(__u32 ifindex)
{
    __u32 slot = ifindex & (DEVICE_SLOTS - 1);
    struct device_slot *d = bpf_map_lookup_elem(&device_slots, &slot);
    if (d && ifindex && d->ifindex == ifindex)
        return &d->eni;
    return bpf_map_lookup_elem(&devices, &ifindex);
}

/* the ends of a flow ordered as the Python datapath orders them: by address, then by port (host order) */
static __always_inline void order(struct flow_key *k, const void *src, const void *dst, __u32 alen, __u16 sport,
                                  __u16 dport)
{
    int lower = 0, decided = 0;
#pragma unroll
    for (int i = 0; i < 16; i += 4) {
        if (i < alen && !decided) {
            __u32 s = bpf_ntohl(*(const __u32 *)(src + i)), d = bpf_ntohl(*(const __u32 *)(dst + i));
            if (s != d) {
                lower = s < d;
                decided = 1;
            }
        }
    }
    if (!decided)
        lower = bpf_ntohs(sport) <= bpf_ntohs(dport);
    const void *lo = lower ? src : dst, *hi = lower ? dst : src;
    k->lo_port = lower ? sport : dport;
    k->hi_port = lower ? dport : sport;
    __builtin_memset(k->lo_addr, 0, 32);
    __builtin_memcpy(k->lo_addr, lo, 4);
    __builtin_memcpy(k->hi_addr, hi, 4);
    if (alen == 16) {
        __builtin_memcpy(k->lo_addr + 4, lo + 4, 12);
        __builtin_memcpy(k->hi_addr + 4, hi + 4, 12);
    }
}

/* the ports of a TCP or UDP header at l4 (0, 0 for other protocols); 0 when they are cut off */
static __always_inline int ports(__u8 proto, void *l4, void *data_end, __u16 *sport, __u16 *dport)
{
    *sport = *dport = 0;
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
        return 1;
    __u16 *p = l4;
    if ((void *)(p + 2) > data_end)
        return 0;
    *sport = p[0];
    *dport = p[1];
    return 1;
}

/* the symmetric key of the packet at data..data_end, whose length is len: an unfragmented IPv4 packet, or an
   IPv6 packet without extension headers (the Python datapath walks those), its length field matching; 0 when
   it is not one the fast path takes */
static __always_inline int inner_key(void *data, void *data_end, __u32 len, __u64 eni, struct flow_key *k)
{
    struct iphdr *ip = data;
    __u16 sport, dport;
    if ((void *)(ip + 1) > data_end)
        return 0;
    k->eni = eni;
    k->pad = 0;
    if (ip->version == 4) {
        if (ip->ihl < 5 || ip->ihl * 4 > len || (ip->frag_off & bpf_htons(0x3fff)) || bpf_ntohs(ip->tot_len) != len)
            return 0;
        if (!ports(ip->protocol, data + ip->ihl * 4, data_end, &sport, &dport))
            return 0;
        k->proto = ip->protocol;
        k->family = 4;
        order(k, &ip->saddr, &ip->daddr, 4, sport, dport);
        return 1;
    }
    struct ipv6hdr *ip6 = data;
    if (ip6->version != 6 || (void *)(ip6 + 1) > data_end || bpf_ntohs(ip6->payload_len) + sizeof(*ip6) != len)
        return 0;
    switch (ip6->nexthdr) {
    case 0: case 43: case 44: case 51: case 60: case 135: case 139: case 140: case 253: case 254:
        return 0; /* extension headers */
    }
    if (!ports(ip6->nexthdr, ip6 + 1, data_end, &sport, &dport))
        return 0;
    k->proto = ip6->nexthdr;
    k->family = 6;
    order(k, &ip6->saddr, &ip6->daddr, 16, sport, dport);
    return 1;
}

/* whether two 40-byte GENEVE headers are the same, byte for byte */
static __always_inline int same_header(const __u8 *a, const __u8 *b)
{
    __u64 x[GENEVE_LEN / 8], y[GENEVE_LEN / 8];
    __builtin_memcpy(x, a, GENEVE_LEN);
    __builtin_memcpy(y, b, GENEVE_LEN);
    return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

static __always_inline __u16 fold(__u64 sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)sum;
}

#define SUM_FAILED (~0ULL)

/* adds the ones' sum of the n bytes at offset at (n a constant multiple of 4, at most 256): in place where the
   linear data holds them, else copied out first; 0, or -1 if the packet is shorter */
static __always_inline int add_piece(struct __sk_buff *skb, __u32 at, __u32 n, __u64 *sum)
{
    __u8 *here = (__u8 *)(long)skb->data + (at & 0x3fff);
    if ((void *)(here + n) <= (void *)(long)skb->data_end) {
        *sum += (__u32)bpf_csum_diff(0, 0, (void *)here, n, 0);
        return 0;
    }
    __u32 zero = 0;
    __u8 *chunk = bpf_map_lookup_elem(&scratch, &zero);
    if (!chunk || bpf_skb_load_bytes(skb, at, chunk, n))
        return -1;
    *sum += (__u32)bpf_csum_diff(0, 0, (void *)chunk, n, 0);
    return 0;
}

/* ones' sum (unfolded, words in memory order) of the len bytes at offset at of the packet: 256-byte pieces,
   then one for each bit of what is left (128 down to 4 bytes), then the last 1 to 3 bytes zero-padded;
   SUM_FAILED if the packet is shorter */
__attribute__((noinline)) __u64 inner_sum(struct __sk_buff *skb, __u32 at, __u32 len)
{
    /* a global function: verified once, on its own, for any arguments (not again at each call) */
    if (!skb || len > MAX_INNER + sizeof(struct udphdr) + GENEVE_LEN)
        return SUM_FAILED;
    __u64 sum = 0;
    for (int i = 0; i < MAX_INNER / 256 && len >= 256; i++) {
        if (add_piece(skb, at, 256, &sum))
            return SUM_FAILED;
        at += 256;
        len -= 256;
    }
#pragma unroll
    for (__u32 n = 128; n >= 4; n >>= 1) {
        if (len & n) {
            if (add_piece(skb, at, n, &sum))
                return SUM_FAILED;
            at += n;
        }
    }
    if (len & 3) {
        __u8 tail[4] = {0, 0, 0, 0};
        __u32 n = (len & 3) - 1;
        asm volatile("%0 &= 3" : "+r"(n)); /* so that the verifier knows 1 <= n + 1 <= 4 */
        if (bpf_skb_load_bytes(skb, at, tail, n + 1))
            return SUM_FAILED;
        sum += *(__u32 *)tail;
    }
    return sum;
}

/* the ones' sum of an IPv4 header without options, its checksum field included */
static __always_inline __u64 ip_header_sum(const struct iphdr *ip)
{
    __u64 s = 0;
    const __u16 *w = (const void *)ip;
#pragma unroll
    for (int i = 0; i < 10; i++)
        s += w[i];
    return s;
}

/* the ones' sum of a UDP datagram's pseudo header (addresses and length in network order) */
static __always_inline __u64 pseudo_sum(__u32 saddr, __u32 daddr, __u16 udp_len)
{
    return (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16) + bpf_htons(IPPROTO_UDP) + udp_len;
}

/* the kernel's own sk_buff, for the one field the context does not show: whether (and how) the device checked
   the checksum (CO-RE: its layout is the running kernel's) */
extern void *bpf_cast_to_kern_ctx(void *) __ksym;
struct sk_buff___fastpath {
    __u8 ip_summed : 2;
} __attribute__((preserve_access_index));
#define CHECKSUM_UNNECESSARY 1 /* the device checked it */
#define CHECKSUM_PARTIAL 3     /* sent from this host: the field holds a partial sum, trusted as the stack does */

/* whether the frame passes the checks the stack makes on the way to the UDP socket */
static __always_inline int stack_takes(struct __sk_buff *skb, struct iphdr *ip, struct udphdr *udp)
{
    if (fold(ip_header_sum(ip)) != 0xffff || bpf_ntohs(ip->tot_len) + sizeof(struct ethhdr) > skb->len)
        return 0;
    if (skb->pkt_type != PACKET_HOST)
        return 0; /* a frame to another station's address (the device promiscuous): the IP layer drops it */
    if (!udp->check)
        return 1;
    struct sk_buff___fastpath *kskb = bpf_cast_to_kern_ctx(skb);
    __u8 state = BPF_CORE_READ_BITFIELD(kskb, ip_summed);
    if (state == CHECKSUM_UNNECESSARY || state == CHECKSUM_PARTIAL)
        return 1;
    __u32 len = bpf_ntohs(udp->len);
    __u64 sum = inner_sum(skb, sizeof(struct ethhdr) + sizeof(struct iphdr), len);
    if (sum == SUM_FAILED)
        return 0;
    return fold(sum + pseudo_sum(ip->saddr, ip->daddr, udp->len)) == 0xffff;
}

SEC("tc")
int geneve_in(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return PASS;
    __u32 want = skb->len < PULL_LEN ? skb->len : PULL_LEN;
    if (data + want > data_end) {
        /* the headers are not all in the linear data (a jumbo frame from a NIC, or a packet socket's frame
           longer than a page): looked at in a copy first, so that only a datagram to 6081 is made linear */
        struct {
            struct iphdr ip;
            struct udphdr udp;
        } h;
        if (bpf_skb_load_bytes(skb, sizeof(*eth), &h, sizeof(h)) || h.ip.protocol != IPPROTO_UDP ||
            h.ip.ihl != 5 || h.udp.dest != bpf_htons(GENEVE_PORT))
            return PASS;
        if (bpf_skb_pull_data(skb, want))
            goto pass;
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
        eth = data;
        if ((void *)(eth + 1) > data_end)
            goto pass;
    }
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
        (ip->frag_off & bpf_htons(0x3fff)))
        return PASS;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > data_end || udp->dest != bpf_htons(GENEVE_PORT))
        return PASS;
    if (skb->gso_size)
        goto pass; /* aggregated datagrams (UDP GRO): one at a time through the socket */
    __u8 *g = (void *)(udp + 1);
    if ((void *)(g + GENEVE_LEN) > data_end)
        goto pass;
    __u32 zero = 0;
    struct config_val *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg)
        goto pass;
    /* version 0 and 8 words of options; no O (control) or C (critical) bit; inner IPv4 or IPv6 */
    if (g[0] != 8 || (g[1] & 0xc0))
        goto pass;
    __u16 ptype = ((__u16)g[2] << 8) | g[3];
    if (ptype != ETH_P_IP && ptype != ETH_P_IPV6)
        goto pass;
    __u64 eni = 0;
    int seen = 0;
    __u32 off = 8;
#pragma unroll
    for (int i = 0; i < 3; i++) {
        if (off + 4 > GENEVE_LEN)
            goto pass;
        __u16 cls = ((__u16)g[off] << 8) | g[off + 1];
        __u8 type = g[off + 2];
        __u8 words = g[off + 3] & 0x1f;
        if (cls != cfg->option_class)
            goto pass;
        if (type == 1 && words == 2 && off + 12 <= GENEVE_LEN) {
            __u64 v = 0;
#pragma unroll
            for (int b = 0; b < 8; b++)
                v = (v << 8) | g[off + 4 + b];
            eni = v;
            seen |= 1;
        } else if (type == 2 && words == 2) {
            seen |= 2;
        } else if (type == 3 && words == 1) {
            seen |= 4;
        } else {
            goto pass;
        }
        off += 4 + words * 4;
    }
    if (seen != 7 || off != GENEVE_LEN)
        goto pass;
    struct tunnel_val *t = bpf_map_lookup_elem(&tunnels, &eni);
    if (!t)
        goto pass; /* a new ENI, or its tunnel is not ready yet (the Python side creates it) or closed */
    void *inner = g + GENEVE_LEN;
    __u32 inner_len = bpf_ntohs(ip->tot_len) - (sizeof(*ip) + sizeof(*udp) + GENEVE_LEN);
    if (inner_len > MAX_INNER || bpf_ntohs(udp->len) != inner_len + sizeof(*udp) + GENEVE_LEN)
        goto pass;
    struct flow_key k;
    /* the Python side checks and counts what does not add up */
    if (!inner_key(inner, data_end, inner_len, eni, &k) || k.family != (ptype == ETH_P_IP ? 4 : 6))
        goto pass;
    /* what the stack checks before a datagram reaches a socket, checked here too, so that what it would drop
       goes to it (and is dropped and counted there) instead of being carried on: the IPv4 header's checksum,
       a length within what arrived, and a UDP checksum the device has not checked (none when zero) */
    if (!stack_takes(skb, ip, udp))
        goto pass;
    __u64 now = bpf_ktime_get_coarse_ns(); /* no clock read per packet */
    struct flow_val *cur = bpf_map_lookup_elem(&flows, &k);
    if (cur && same_header(cur->header, g) && cur->gwlb_addr == ip->saddr && cur->self_addr == ip->daddr &&
        cur->gwlb_port == udp->source) {
        cur->last_seen = now; /* the common case: nothing but the time changed (an LRU update costs an entry) */
    } else {
        /* a new or changed flow: only from a datagram the Python datapath's socket would receive (to an address
           of this host's, the one it listens on if it listens on one); the stack forwards or refuses others */
        if (!bpf_map_lookup_elem(&own_addrs, &ip->daddr))
            goto pass;
        struct flow_val v;
        __builtin_memcpy(v.header, g, GENEVE_LEN);
        v.gwlb_addr = ip->saddr;
        v.self_addr = ip->daddr;
        v.gwlb_port = udp->source;
        v.pad = 0;
        v.pad2 = 0;
        v.last_seen = now;
        if (bpf_map_update_elem(&flows, &k, &v, BPF_ANY))
            goto pass;
    }
    t->last_seen = now;
    t->packets_in++; /* this CPU's copy: no atomic operation */
    t->bytes_in += inner_len;
    __u32 gwi = t->gwi_ifindex;
    /* an IPv6 packet inside: the flag makes skb->protocol say so (a kernel without it refuses the call and
       leaves the packet as it was, for the Python datapath) */
    if (bpf_skb_adjust_room(skb, -(__s32)(sizeof(*ip) + sizeof(*udp) + GENEVE_LEN), BPF_ADJ_ROOM_MAC,
                            ptype == ETH_P_IP ? 0 : BPF_F_ADJ_ROOM_DECAP_L3_IPV6)) {
        count(C_IN_REDIRECT_FAILED);
        goto pass;
    }
    __u64 *c = counts();
    if (c) {
        c[C_IN_FAST] += 1;
        c[C_IN_FAST_BYTES] += inner_len + GENEVE_LEN; /* as the Python datapath counts them */
    }
    return bpf_redirect(gwi, BPF_F_INGRESS);
pass:
    count(C_IN_PASSED);
    return PASS;
}

SEC("tc")
int tunnel_out(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    __u32 ifindex = skb->ifindex;
    __u64 *eni = tunnel_of(ifindex);
    if (!eni)
        return PASS;
    __u64 eni_id = *eni;
    /* only what came in through a tunnel (from GWLB, whole checksums) goes back here; this namespace's own
       packets (a local service's replies) and what came in on another device (a second arm's NAT replies, or
       anything from a namespace behind a veth) may carry a checksum the device is left to finish, and GSO
       packets are to be cut first: the TUN device does both for the Python datapath */
    __u32 from = skb->ingress_ifindex;
    if (skb->gso_size || !tunnel_of(from))
        goto pass;
    /* a closed tunnel (about to be retired) is the Python datapath's both ways */
    struct tunnel_val *t = bpf_map_lookup_elem(&tunnels, &eni_id);
    if (!t)
        goto pass;
    struct flow_key k;
    __u32 inner_len = skb->len;
    if (inner_len > MAX_INNER || !inner_key(data, data_end, inner_len, eni_id, &k) ||
        skb->protocol != bpf_htons(k.family == 4 ? ETH_P_IP : ETH_P_IPV6))
        goto pass;
    struct flow_val *f = bpf_map_lookup_elem(&flows, &k);
    if (!f)
        goto pass;
    struct nexthop_val *nh = bpf_map_lookup_elem(&nexthops, &f->gwlb_addr);
    __u32 zero = 0;
    struct config_val *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!nh || !cfg)
        goto pass;
    /* once a second per GWLB address, one return takes the Python datapath, which sends it through the IP
       layer: the kernel's neighbour entry for GWLB stays confirmed (and a changed address is learnt), as
       returns straight to the link would never do */
    __u64 now = bpf_ktime_get_coarse_ns(); /* no clock read per packet */
    if (now >= nh->next_refresh) {
        nh->next_refresh = now + REFRESH_NS;
        goto pass;
    }
    /* everything the outer headers need, copied before the packet moves */
    struct flow_val v = *f;
    struct nexthop_val hop = *nh;
    __u8 udp_checksum = cfg->udp_checksum;
    if (bpf_skb_change_head(skb, OUTER_LEN, 0)) {
        count(C_OUT_REDIRECT_FAILED);
        return TC_ACT_SHOT;
    }
    data = (void *)(long)skb->data;
    data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    __u8 *g = (void *)(udp + 1);
    if ((void *)(g + GENEVE_LEN) > data_end)
        return TC_ACT_SHOT;
    __builtin_memcpy(eth->h_dest, hop.dst_mac, 6);
    __builtin_memcpy(eth->h_source, hop.src_mac, 6);
    eth->h_proto = bpf_htons(ETH_P_IP);
    __u16 ip_len = sizeof(*ip) + sizeof(*udp) + GENEVE_LEN + inner_len;
    ip->version = 4;
    ip->ihl = 5;
    ip->tos = 0;
    ip->tot_len = bpf_htons(ip_len);
    ip->id = 0;
    ip->frag_off = bpf_htons(0x4000); /* DF: returns are atomic datagrams */
    ip->ttl = RETURN_TTL;
    ip->protocol = IPPROTO_UDP;
    ip->check = 0;
    ip->saddr = v.self_addr;
    ip->daddr = v.gwlb_addr;
    ip->check = ~fold(ip_header_sum(ip));
    udp->source = v.gwlb_port;
    udp->dest = bpf_htons(GENEVE_PORT);
    udp->len = bpf_htons(ip_len - sizeof(*ip));
    udp->check = 0;
    __builtin_memcpy(g, v.header, GENEVE_LEN);
    if (udp_checksum) {
        /* ones' sum of the pseudo header, the UDP header, the GENEVE header (from the copy on the stack) and
           the inner packet (in place where the linear data holds it) */
        __u64 sum = pseudo_sum(v.self_addr, v.gwlb_addr, udp->len) + udp->source + udp->dest + udp->len;
        __u32 *hw = (__u32 *)v.header;
#pragma unroll
        for (int i = 0; i < GENEVE_LEN / 4; i++)
            sum += hw[i];
        __u64 inner = inner_sum(skb, OUTER_LEN, inner_len);
        if (inner == SUM_FAILED)
            return TC_ACT_SHOT;
        sum += inner;
        __u16 c = ~fold(sum);
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
        udp = data + sizeof(*eth) + sizeof(*ip);
        if ((void *)(udp + 1) > data_end)
            return TC_ACT_SHOT;
        udp->check = c ? c : 0xffff;
    }
    t->packets_out++;
    t->bytes_out += inner_len;
    __u64 *c = counts();
    if (c) {
        c[C_OUT_FAST] += 1;
        c[C_OUT_FAST_BYTES] += inner_len;
    }
    return bpf_redirect(hop.ifindex, 0);
pass:
    count(C_OUT_PASSED);
    return PASS;
}

char LICENSE[] SEC("license") = "GPL";
