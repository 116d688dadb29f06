"""Volumes this controller created, on disk: answers must survive a controller restart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from juicefs_csi.mount.state import make_private_dir, write_private


@dataclass(frozen=True)
class VolumeRecord:
    volume_id: str
    sub_path: str
    capacity_bytes: int
    parameters: dict[str, str]


class VolumeRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        make_private_dir(root)

    def _path(self, volume_id: str) -> Path:
        return self.root / f"{volume_id}.json"

    def get(self, volume_id: str) -> VolumeRecord | None:
        try:
            return VolumeRecord(**json.loads(self._path(volume_id).read_text()))
        except FileNotFoundError:
            return None

    def put(self, record: VolumeRecord) -> None:
        write_private(self._path(record.volume_id), asdict(record))

    def delete(self, volume_id: str) -> None:
        self._path(volume_id).unlink(missing_ok=True)
