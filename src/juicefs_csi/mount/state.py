"""What the node has mounted, kept on disk so a restarted driver picks up where it left off.

Records hold no secrets. The inputs needed to remount a client (its Secret) are
kept beside them in a root-only file, because a client may die after a driver
restart, when no kubelet request will bring them again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TargetRecord:
    sub_path: str
    read_only: bool


@dataclass
class ClientRecord:
    key: str
    volume_id: str
    mountpoint: str
    metrics_port: int
    pid: int = 0
    targets: dict[str, TargetRecord] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientRecord:
        targets = {path: TargetRecord(**value) for path, value in data.pop("targets", {}).items()}
        return cls(**data, targets=targets)


@dataclass(frozen=True)
class PublishInputs:
    """The raw request material a client's settings are parsed from."""

    volume_id: str
    secrets: dict[str, str]
    volume_context: dict[str, str]
    mount_flags: list[str]


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.clients = root / "clients"
        self.formatted = root / "formatted"
        self.logs = root / "logs"
        for directory in (self.root, self.clients, self.formatted, self.logs):
            make_private_dir(directory)

    def save(self, record: ClientRecord) -> None:
        write_private(self.clients / f"{record.key}.json", asdict(record))

    def save_inputs(self, key: str, inputs: PublishInputs) -> None:
        write_private(self.clients / f"{key}.inputs.json", asdict(inputs))

    def load_all(self) -> list[tuple[ClientRecord, PublishInputs | None]]:
        loaded = []
        for path in sorted(self.clients.glob("*.json")):
            if path.name.endswith(".inputs.json"):
                continue
            record = ClientRecord.from_json(json.loads(path.read_text()))
            inputs_path = self.clients / f"{record.key}.inputs.json"
            inputs = PublishInputs(**json.loads(inputs_path.read_text())) if inputs_path.exists() else None
            loaded.append((record, inputs))
        return loaded

    def delete(self, key: str) -> None:
        for suffix in (".json", ".inputs.json"):
            (self.clients / f"{key}{suffix}").unlink(missing_ok=True)

    def log_path(self, key: str) -> Path:
        return self.logs / f"{key}.log"

    def is_formatted(self, fingerprint: str) -> bool:
        return (self.formatted / fingerprint).exists()

    def mark_formatted(self, fingerprint: str) -> None:
        os.close(os.open(self.formatted / fingerprint, os.O_WRONLY | os.O_CREAT, 0o600))


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def make_private_dir(path: Path) -> None:
    """Driver state is root's alone: records name volumes, inputs hold Secrets.

    Every directory created on the way is private too, not only the last one.
    """
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    os.chmod(missing[0] if missing else path, 0o700)


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace, created 0600 so a secret is never readable even for an instant.

    No fsync: the records only matter while the host (and so the page cache) stays up,
    since a reboot takes the mounts they describe with it.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover temp file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, sort_keys=True)
    os.replace(tmp, path)
