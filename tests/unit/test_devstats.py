"""/proc/net/dev read right: each device's receive drops, by name."""

from __future__ import annotations

from pathlib import Path

from gwlbsim.linuxio.devstats import GoneDevicesDrops, receive_drops

SAMPLE = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0 0
gwi-2b8ee1d4db0c51:  4800  100    1   42    0     0   0   0   0   0    0    7    0     0       0          0
  eth0:99999999999 123456 0 3 0 0 0 0 5 5 0 0 0 0 0 0
"""

def test_each_device_s_receive_drops_by_name(tmp_path: Path) -> None:
    f = tmp_path / "dev"
    f.write_text(SAMPLE)
    assert receive_drops(f) == {"lo": 0, "gwi-2b8ee1d4db0c51": 42, "eth0": 3}  # not the transmit side's 7


def test_an_unreadable_file_gives_no_figures(tmp_path: Path) -> None:
    assert receive_drops(tmp_path / "missing") == {}


def test_this_namespace_s_devices_are_read() -> None:
    assert "lo" in receive_drops()


def test_gone_devices_keep_what_they_dropped(tmp_path: Path) -> None:
    f = tmp_path / "dev"
    f.write_text(SAMPLE)
    gone = GoneDevicesDrops(f)
    gone.add(t for t in ["gwi-2b8ee1d4db0c51", "eth0", "not-there"])  # any iterable; an unknown name adds 0
    assert gone.total == 45
