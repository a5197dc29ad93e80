// The benchmark's in-kernel return counter (gwlbsim bench --split-cpus): a tcx ingress program on the device
// returns arrive on. A return's stamp (flow index, sequence number, send time: gwlbsim/bench/traffic.py) is read
// in place (direct packet access, no copy: the CPU it runs on is the measured subject's) where the traffic puts
// it: after the inner IPv4/UDP headers of a GENEVE datagram to 6081, or after the UDP header of a plain inner
// packet to 5001 (the kernel-forwarding subject). Its latency (now - send time, in microseconds, plus one so
// that 0 means "not back") is written to the slot of its sequence number, and the packet is dropped here: no
// user-space receiver competes for the CPUs it measures, so a subject offered more than it can take is
// measured, not the receiver's receive livelock. Anything else goes on (TCX_NEXT).
//
// The slot count and the counter indexes are mirrored in gwlbsim/bench/sink.py.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define SLOTS (1 << 24) /* sequence numbers kept: 16 Mi (a window of 5.5 s at 3 Mpps) */
#define GENEVE_PORT 6081
#define PLAIN_PORT 5001

enum counter { C_RETURNS, C_DUPLICATES, C_COUNT };

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, SLOTS);
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, __u64); /* an array map's values are 8-byte aligned anyway, also in its mmap */
} slots SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, C_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

struct stamp {
    __u32 flow;
    __u32 seq;
    __u64 sent;
};

static __always_inline void count(__u32 which)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &which);
    if (c)
        *c += 1;
}

/* the UDP payload of the IPv4/UDP packet at *p (moved there), and its destination port: 1; 0 when it is not
   one; -1 when it runs past data_end */
static __always_inline int udp_payload(void **p, void *data_end, __u16 *dport)
{
    struct iphdr *ip = *p;
    if ((void *)(ip + 1) > data_end)
        return -1;
    if (ip->version != 4 || ip->protocol != IPPROTO_UDP || ip->ihl < 5)
        return 0;
    struct udphdr *udp = (void *)ip + ip->ihl * 4;
    if ((void *)(udp + 1) > data_end)
        return -1;
    *dport = bpf_ntohs(udp->dest);
    *p = udp + 1;
    return 1;
}

/* the stamp of the return at data (read in place): 1; 0 when it is not a return; -1 when the headers run past
   data_end (the linear part of the packet) */
static __always_inline int find_stamp(void *data, void *data_end, struct stamp **out)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return -1;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return 0;
    void *p = eth + 1;
    __u16 dport = 0;
    int r = udp_payload(&p, data_end, &dport);
    if (r <= 0)
        return r;
    if (dport == GENEVE_PORT) {
        __u8 *g = p;
        if ((void *)(g + 2) > data_end)
            return -1;
        p = g + 8 + (g[0] & 0x3f) * 4;
        r = udp_payload(&p, data_end, &dport);
        if (r <= 0)
            return r;
    }
    if (dport != PLAIN_PORT)
        return 0;
    if (p + sizeof(struct stamp) > data_end)
        return -1;
    *out = p;
    return 1;
}

SEC("tc")
int count_returns(struct __sk_buff *skb)
{
    if (skb->protocol != bpf_htons(ETH_P_IP))
        return TC_ACT_UNSPEC;
    struct stamp *sp = 0;
    int r = find_stamp((void *)(long)skb->data, (void *)(long)skb->data_end, &sp);
    if (r < 0 && skb->len > skb->data_end - skb->data) { /* headers beyond the linear part: pull them in */
        if (bpf_skb_pull_data(skb, skb->len < 512 ? skb->len : 512))
            return TC_ACT_UNSPEC;
        r = find_stamp((void *)(long)skb->data, (void *)(long)skb->data_end, &sp);
    }
    if (r <= 0 || !sp)
        return TC_ACT_UNSPEC;
    struct stamp s = *sp;
    __u64 now = bpf_ktime_get_ns(), sent = bpf_be64_to_cpu(s.sent);
    __u32 key = bpf_ntohl(s.seq) & (SLOTS - 1);
    __u64 *slot = bpf_map_lookup_elem(&slots, &key);
    if (!slot)
        return TC_ACT_SHOT;
    if (*slot)
        count(C_DUPLICATES);
    *slot = (now > sent ? (now - sent) / 1000 : 0) + 1;
    count(C_RETURNS);
    return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
