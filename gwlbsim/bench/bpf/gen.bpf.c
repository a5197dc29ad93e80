// The benchmark's in-kernel generator (gwlbsim bench --generator xdp): an XDP program run by BPF_PROG_RUN in
// live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18), which transmits every frame the program returns
// XDP_TX for out of the device named in the run's context. One system call sends a batch of frames, with no
// socket, no skb and no copy from user space on the sending side, so one CPU offers several times what the
// socket generator can.
//
// The program paces itself, in bursts as the socket generator sends (frames one by one would cost the receiving
// CPU an interrupt each): when a burst is due it sends that many frames back to back; a run before the next
// burst is due, or after the stop time, returns XDP_DROP (the frame goes back to the run's page pool, unsent).
// So one system call, which user space interrupts (a signal) after the stop time, sends a whole measurement at
// an even rate; a generator that fell behind catches up, as the socket generator does. It also notes the
// sequence number of the first frame sent at or after the window's start.
//
// Each frame sent gets the next flow's frame prefix (Ethernet, outer headers and GENEVE header, inner IPv4/UDP
// headers: everything before the stamp, prebuilt per flow by gwlbsim/bench/xdpgen.py) and then the stamp
// (flow index, sequence number, send time: gwlbsim/bench/traffic.py) over the frame the run was given, whose
// padding stays as it was built. Flows go round-robin and sequence numbers count up from the state's, as in the
// socket generator.
//
// The prefix size and the state's layout are mirrored in gwlbsim/bench/xdpgen.py.

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define PREFIX_MAX 128

struct prefix {
    __u8 bytes[PREFIX_MAX];
};

struct state {
    __u64 seq;       /* the next packet's sequence number */
    __u64 due;       /* when the next burst is due (CLOCK_MONOTONIC ns, times 256) */
    __u64 period;    /* ns between packets, times 256; 0: as fast as it goes */
    __u64 start;     /* the measured window's start (ns) */
    __u64 stop;      /* no frame is sent at or after this (ns) */
    __u64 s0;        /* the first sequence number sent at or after start; ~0 until then */
    __u32 flows;     /* how many prefixes there are */
    __u32 next_flow; /* the next packet's flow */
    __u32 length;    /* prefix length: where the stamp goes */
    __u32 burst;     /* frames per burst (paced) */
    __u32 left;      /* frames left to send in the current burst */
    __u32 pad;
};

struct stamp {
    __u32 flow;
    __u32 seq;
    __u64 sent;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1); /* sized to the traffic's flow count at load */
    __type(key, __u32);
    __type(value, struct prefix);
} prefixes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct state);
} state SEC(".maps");

SEC("xdp")
int generate(struct xdp_md *ctx)
{
    __u32 zero = 0;
    struct state *st = bpf_map_lookup_elem(&state, &zero);
    if (!st)
        return XDP_ABORTED;
    __u64 now = bpf_ktime_get_ns();
    if (now >= st->stop)
        return XDP_DROP;
    if (st->period && !st->left) {
        if (now * 256 < st->due)
            return XDP_DROP;
        st->left = st->burst;
        st->due += st->period * st->burst;
    }
    __u32 flow = st->next_flow;
    struct prefix *p = bpf_map_lookup_elem(&prefixes, &flow);
    __u32 len = st->length;
    if (!p || len < 1 || len > PREFIX_MAX)
        return XDP_ABORTED;
    if (bpf_xdp_store_bytes(ctx, 0, p->bytes, len))
        return XDP_ABORTED;
    struct stamp s = {bpf_htonl(flow), bpf_htonl((__u32)st->seq), bpf_cpu_to_be64(now)};
    if (bpf_xdp_store_bytes(ctx, len, &s, sizeof(s)))
        return XDP_ABORTED;
    if (st->s0 == ~0ULL && now >= st->start)
        st->s0 = st->seq;
    st->seq += 1;
    if (st->left)
        st->left -= 1;
    st->next_flow = flow + 1 < st->flows ? flow + 1 : 0;
    return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
