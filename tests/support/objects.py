"""Typed access to the metadata of lightkube objects."""

from __future__ import annotations

from typing import Protocol

from lightkube.models.meta_v1 import ObjectMeta


class HasMetadata(Protocol):
    @property
    def metadata(self) -> ObjectMeta | None: ...


def meta(obj: HasMetadata) -> ObjectMeta:
    """Objects read from the API always carry metadata; lightkube types it optional."""
    assert obj.metadata is not None
    return obj.metadata
