"""On-disk state: the controller's volume registry and the node's client records and inputs."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict
from pathlib import Path

import pytest

from juicefs_csi.controller.registry import VolumeRecord, VolumeRegistry
from juicefs_csi.mount.state import ClientRecord, PublishInputs, StateStore, TargetRecord, fingerprint

SECRET = "Zq9-S3cr3t-Xy7"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def client_record(key: str = "pvc-1-0f979b87fa10943d") -> ClientRecord:
    return ClientRecord(
        key=key,
        volume_id="pvc-1",
        mountpoint=f"/var/lib/juicefs/mnt/{key}",
        metrics_port=9601,
        pid=4242,
        targets={
            "/var/lib/kubelet/pods/a/volumes/x/mount": TargetRecord("pvc-1", False),
            "/var/lib/kubelet/pods/b/volumes/x/mount": TargetRecord("pvc-1/sub", True),
        },
    )


def publish_inputs() -> PublishInputs:
    return PublishInputs(
        volume_id="pvc-1",
        secrets={"name": "myjfs", "metaurl": f"redis://:{SECRET}@h:6379/1", "secret-key": SECRET},
        volume_context={"subPath": "pvc-1", "mountOptions": "cache-size=100"},
        mount_flags=["allow_other"],
    )


# --------------------------------------------------------------------------
# VolumeRegistry
# --------------------------------------------------------------------------


def test_registry_round_trip(tmp_path: Path) -> None:
    registry = VolumeRegistry(tmp_path / "volumes")
    record = VolumeRecord("pvc-1", "pvc-1", 5 << 30, {"mountOptions": "writeback", "capacity": "5Gi"})
    registry.put(record)
    assert registry.get("pvc-1") == record
    assert VolumeRegistry(tmp_path / "volumes").get("pvc-1") == record


def test_registry_creates_its_root(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "volumes"
    VolumeRegistry(root)
    assert root.is_dir()
    VolumeRegistry(root)


def test_registry_missing_volume(tmp_path: Path) -> None:
    registry = VolumeRegistry(tmp_path)
    assert registry.get("pvc-missing") is None
    registry.delete("pvc-missing")


def test_registry_put_replaces_and_delete_removes(tmp_path: Path) -> None:
    registry = VolumeRegistry(tmp_path)
    registry.put(VolumeRecord("pvc-1", "pvc-1", 1 << 30, {}))
    registry.put(VolumeRecord("pvc-1", "pvc-1", 2 << 30, {"a": "b"}))
    assert registry.get("pvc-1") == VolumeRecord("pvc-1", "pvc-1", 2 << 30, {"a": "b"})
    registry.put(VolumeRecord("pvc-2", "pvc-2", 0, {}))
    registry.delete("pvc-1")
    assert registry.get("pvc-1") is None
    assert registry.get("pvc-2") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pvc-2.json"]


@pytest.mark.parametrize("volume_id", ["pvc-1", "pvc.with.dots", "a.json", "x.tmp"])
def test_registry_leaves_no_temporary_files(tmp_path: Path, volume_id: str) -> None:
    registry = VolumeRegistry(tmp_path)
    registry.put(VolumeRecord(volume_id, volume_id, 0, {}))
    assert [p.name for p in tmp_path.iterdir()] == [f"{volume_id}.json"]
    assert registry.get(volume_id) == VolumeRecord(volume_id, volume_id, 0, {})


def test_registry_put_is_an_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = VolumeRegistry(tmp_path)
    old = VolumeRecord("pvc-1", "pvc-1", 1 << 30, {})
    registry.put(old)

    def crash(src: object, dst: object) -> None:
        raise OSError("crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="crash"):
        registry.put(VolumeRecord("pvc-1", "pvc-1", 9 << 30, {}))
    assert registry.get("pvc-1") == old


# --------------------------------------------------------------------------
# StateStore
# --------------------------------------------------------------------------


def test_state_directories_are_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    for directory in (store.root, store.clients, store.formatted, store.logs):
        assert directory.is_dir()
        assert mode(directory) == 0o700


def test_state_directories_are_made_private_again(tmp_path: Path) -> None:
    root = tmp_path / "state"
    (root / "clients").mkdir(parents=True)
    os.chmod(root, 0o755)
    os.chmod(root / "clients", 0o777)
    StateStore(root)
    assert mode(root) == 0o700
    assert mode(root / "clients") == 0o700


def test_client_record_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record = client_record()
    store.save(record)
    store.save_inputs(record.key, publish_inputs())
    loaded = StateStore(tmp_path).load_all()
    assert loaded == [(record, publish_inputs())]
    assert isinstance(loaded[0][0].targets["/var/lib/kubelet/pods/b/volumes/x/mount"], TargetRecord)


def test_record_without_inputs_loads_with_none(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(client_record("k1"))
    store.save(client_record("k2"))
    store.save_inputs("k2", publish_inputs())
    loaded = store.load_all()
    assert [(record.key, inputs is not None) for record, inputs in loaded] == [("k1", False), ("k2", True)]


def test_save_replaces_the_record(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record = client_record()
    store.save(record)
    record.targets.pop("/var/lib/kubelet/pods/a/volumes/x/mount")
    record.pid = 99
    store.save(record)
    [(loaded, _)] = store.load_all()
    assert loaded.pid == 99
    assert list(loaded.targets) == ["/var/lib/kubelet/pods/b/volumes/x/mount"]


def test_inputs_file_holding_secrets_is_0600(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_inputs("k1", publish_inputs())
    path = store.clients / "k1.inputs.json"
    assert SECRET in path.read_text()
    assert mode(path) == 0o600


def test_record_file_is_0600_and_holds_no_secret(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(client_record("k1"))
    path = store.clients / "k1.json"
    assert mode(path) == 0o600
    assert SECRET not in path.read_text()
    assert json.loads(path.read_text()) == asdict(client_record("k1"))


def test_files_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        store = StateStore(tmp_path)
        store.save(client_record("k1"))
        store.save_inputs("k1", publish_inputs())
    finally:
        os.umask(previous)
    assert mode(store.clients / "k1.json") == 0o600
    assert mode(store.clients / "k1.inputs.json") == 0o600


def test_secret_file_is_never_written_with_a_wider_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is created 0600 before the first byte is written, not chmod-ed afterwards."""
    store = StateStore(tmp_path)
    real_open = os.open
    modes: list[int] = []

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        modes.append(mode)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    store.save_inputs("k1", publish_inputs())
    assert modes == [0o600]


def test_save_is_an_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path)
    store.save_inputs("k1", publish_inputs())
    before = (store.clients / "k1.inputs.json").read_text()

    def crash(src: object, dst: object) -> None:
        raise OSError("crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    changed = PublishInputs("pvc-1", {"name": "other"}, {}, [])
    with pytest.raises(OSError, match="crash"):
        store.save_inputs("k1", changed)
    assert (store.clients / "k1.inputs.json").read_text() == before


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(client_record("k1"))
    store.save_inputs("k1", publish_inputs())
    store.save(client_record("k1"))
    assert sorted(p.name for p in store.clients.iterdir()) == ["k1.inputs.json", "k1.json"]


def test_stray_temporary_files_are_not_loaded(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(client_record("k1"))
    (store.clients / "k2.json.tmp").write_text("{half a rec")
    assert [record.key for record, _ in store.load_all()] == ["k1"]


def test_delete_removes_record_and_inputs(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(client_record("k1"))
    store.save_inputs("k1", publish_inputs())
    store.save(client_record("k2"))
    store.delete("k1")
    store.delete("k1")
    store.delete("never-existed")
    assert sorted(p.name for p in store.clients.iterdir()) == ["k2.json"]


def test_formatted_markers(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    marker = fingerprint("k1", "redis://h/1", "myjfs")
    assert not store.is_formatted(marker)
    store.mark_formatted(marker)
    store.mark_formatted(marker)
    assert store.is_formatted(marker)
    assert StateStore(tmp_path).is_formatted(marker)


def test_log_path(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.log_path("k1") == tmp_path / "logs" / "k1.log"


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (("k", "url", None), ("k", "url", None), True),
        (("k", "url"), ("url", "k"), False),
        (("k", "url", "s3"), ("k", "url", None), False),
        (("k", {"b": 1, "a": 2}), ("k", {"a": 2, "b": 1}), True),
        (("k", Path("/x")), ("k", "/x"), True),
    ],
)
def test_fingerprint(a: tuple[object, ...], b: tuple[object, ...], equal: bool) -> None:
    assert (fingerprint(*a) == fingerprint(*b)) is equal
    assert len(fingerprint(*a)) == 32
    assert int(fingerprint(*a), 16) >= 0


def test_fingerprint_is_stable_across_releases() -> None:
    """It names the `formatted` markers: a change runs `juicefs format` again for every volume after an upgrade."""
    assert fingerprint("k1", "redis://h/1", "myjfs", "s3", None) == "3520b74e9089ff1a1bf093ce61c9609d"
