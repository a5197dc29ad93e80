from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlbsim.wire import eni


@pytest.mark.parametrize(("value", "text"), [(0x2B8EE1D4DB0C51C4, "5bqWvzLwwkk"), (0xABC, "JM"), (0, "0"),
                                             (59, "X"), (60, "10")])
def test_base60_examples(value: int, text: str) -> None:
    assert eni.to_base60(value) == text
    assert eni.from_base60(text) == value


@given(st.integers(0, 2**64 - 1))
def test_base60_round_trip_and_fits_device_names(value: int) -> None:
    gwi, gwo = eni.device_names(value)
    assert len(gwi) <= eni.IFNAMSIZ and len(gwo) <= eni.IFNAMSIZ
    assert eni.from_base60(gwi[4:]) == value


def test_hex_form() -> None:
    assert eni.to_hex(0xABC) == "0000000000000abc"
    assert eni.from_hex("eni-2b8ee1d4db0c51c4") == eni.from_hex("2B8EE1D4DB0C51C4") == 0x2B8EE1D4DB0C51C4
    for bad in ("", "xyz", "12345678901234567", "eni-"):
        with pytest.raises(ValueError):
            eni.from_hex(bad)
    with pytest.raises(ValueError):
        eni.from_base60("Y")
    with pytest.raises(ValueError):
        eni.to_base60(-1)
