"""CreateVolume/ControllerExpandVolume capacity: whole GiB quotas within the requested range."""

from __future__ import annotations

import pytest

from juicefs_csi.csi.controller import _capacity
from juicefs_csi.csi.proto import csi_pb2
from juicefs_csi.errors import InvalidArgument, OutOfRange

GIB = 1 << 30
MIB = 1 << 20


def capacity(required: int = 0, limit: int = 0) -> int:
    return _capacity(csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit))


def test_no_range_means_no_quota() -> None:
    assert _capacity(csi_pb2.CapacityRange()) == 0
    assert capacity(0, 0) == 0


@pytest.mark.parametrize(
    ("required", "limit", "expected"),
    [
        (1, 0, GIB),
        (MIB, 0, GIB),
        (GIB - 1, 0, GIB),
        (GIB, 0, GIB),
        (GIB + 1, 0, 2 * GIB),
        (3 * GIB // 2, 0, 2 * GIB),
        (10 * GIB, 0, 10 * GIB),
        (100 * GIB + 1, 0, 101 * GIB),
        (1 << 50, 0, 1 << 50),
        (GIB, GIB, GIB),
        (GIB, 2 * GIB, GIB),
        (GIB + 1, 2 * GIB, 2 * GIB),
        (MIB, GIB, GIB),
        (5 * GIB, 10 * GIB + 1, 5 * GIB),
        (0, GIB, GIB),
        (0, 5 * GIB, 5 * GIB),
    ],
)
def test_rounds_up_to_whole_gib_within_the_limit(required: int, limit: int, expected: int) -> None:
    result = capacity(required, limit)
    assert result == expected
    assert result % GIB == 0
    assert result >= required
    assert not limit or result <= limit


@pytest.mark.parametrize(
    ("required", "limit"),
    [
        (MIB, 500 * MIB),
        (GIB + 1, 3 * GIB // 2),
        (GIB + 1, 2 * GIB - 1),
        (0, GIB - 1),
        (0, 1),
    ],
)
def test_rounding_past_the_limit_is_out_of_range(required: int, limit: int) -> None:
    with pytest.raises(OutOfRange) as info:
        capacity(required, limit)
    assert str(limit) in str(info.value)


@pytest.mark.parametrize(("limit", "expected"), [(3 * GIB // 2, GIB), (10 * GIB + 1, 10 * GIB)])
def test_limit_only_uses_the_largest_whole_gib_within_it(limit: int, expected: int) -> None:
    assert capacity(0, limit) == expected


def test_required_above_limit_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="larger than limit"):
        capacity(2 * GIB, GIB)


@pytest.mark.parametrize(("required", "limit"), [(-1, 0), (0, -1), (-GIB, -GIB), (GIB, -1), (-1, GIB)])
def test_negative_bytes_are_invalid(required: int, limit: int) -> None:
    with pytest.raises(InvalidArgument, match="negative"):
        capacity(required, limit)
