"""The contract every mount strategy (process, mount pod) fulfils for the Node service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from juicefs_csi.mount.state import PublishInputs
from juicefs_csi.volume.settings import VolumeSettings


@dataclass(frozen=True)
class PublishRequest:
    settings: VolumeSettings
    target: str
    read_only: bool
    inputs: PublishInputs


@dataclass(frozen=True)
class PublishedTarget:
    volume_id: str
    target: str
    client_mountpoint: str
    metrics_port: int


class Mounter(Protocol):
    async def start(self) -> None:
        """Adopt or repair what an earlier run left mounted."""

    async def close(self) -> None:
        """Stop background work; mounts and clients stay up for the next run."""

    async def publish(self, request: PublishRequest) -> PublishedTarget:
        """Make `request.target` serve the volume; idempotent for the same request."""

    async def unpublish(self, target: str) -> None:
        """Unbind the target; the last one stops the volume's client. Unknown targets are fine."""

    def published(self, target: str) -> PublishedTarget | None:
        """The volume bound at a target, if this node published it."""
