"""Every reason a packet is dropped anywhere in the project, in one place: the counters' names.

The codec's (a GENEVE datagram that is no usable GWLB packet), the fake GWLB's and the reference appliance's.
A member is a ``str`` (its value): it is the key of a drop counter, the ``reason`` of an error class, and what
status documents, metrics and reports print.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class DropReason(StrEnum):
    # the codec (gwlbsim.wire.geneve, gwlbsim.wire.flowkey, gwlbsim.wire.outer)
    MALFORMED = "malformed"
    TOO_SHORT = "too_short"
    BAD_VERSION = "bad_version"
    OPTIONS_BEYOND_PACKET = "options_beyond_packet"
    OPTION_OVERRUN = "option_overrun"
    BAD_PROTOCOL_TYPE = "bad_protocol_type"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    MISSING_GWLB_OPTION = "missing_gwlb_option"
    BAD_GWLB_OPTION_LENGTH = "bad_gwlb_option_length"
    DUPLICATE_GWLB_OPTION = "duplicate_gwlb_option"
    UNKNOWN_CRITICAL_OPTION = "unknown_critical_option"
    CONTROL_PACKET = "control_packet"
    NO_INNER_PACKET = "no_inner_packet"
    TRUNCATED_INNER = "truncated_inner"
    BAD_INNER_PACKET = "bad_inner_packet"
    BAD_OUTER = "bad_outer"
    # the fake GWLB (gwlbsim.model)
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    OVERSIZE = "oversize"
    TCP_NON_SYN_WITHOUT_FLOW = "tcp_non_syn_without_flow"
    NO_TARGET = "no_target"
    FAIL_OPEN_DROP = "fail_open_drop"
    TARGET_DEREGISTERED = "target_deregistered"
    NOT_TO_GWLB_NODE = "not_to_gwlb_node"
    UNKNOWN_SOURCE = "unknown_source"
    UNKNOWN_COOKIE = "unknown_cookie"
    STALE_COOKIE = "stale_cookie"
    WRONG_TARGET = "wrong_target"
    ATTACHMENT_MISMATCH = "attachment_mismatch"
    TUPLE_MISMATCH = "tuple_mismatch"
    SOURCE_PORT_MISMATCH = "source_port_mismatch"
    RESET_SENT = "reset_sent"
    # the reference appliance (gwlbsim.reference.core, .datapath, .worker)
    NOT_GENEVE_PORT = "not_geneve_port"
    OVERSIZE_INBOUND = "oversize_inbound"
    OVERSIZE_RETURN = "oversize_return"
    NO_FLOW = "no_flow"
    EXPIRED_FLOW = "expired_flow"
    BAD_RETURN_PACKET = "bad_return_packet"
    FLOW_CACHE_FULL = "flow_cache_full"
    TUNNEL_PENDING_OVERFLOW = "tunnel_pending_overflow"
    TUNNEL_CREATE_FAILED = "tunnel_create_failed"
    UNKNOWN_TUNNEL = "unknown_tunnel"
    TUN_WRITE_FAILED = "tun_write_failed"
    TUNNEL_DEVICE_GONE = "tunnel_device_gone"
    SEND_FAILED = "send_failed"
    UDP_TRUNCATED = "udp_truncated"
