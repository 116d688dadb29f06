"""Mount pod names: the Go driver's public names, Kubernetes syntax limits, and the settings hash."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

import pytest

from juicefs_csi.mountpod import names
from juicefs_csi.mountpod.names import (
    dns_label,
    is_dns_label,
    is_dns_subdomain,
    is_label_value,
    is_qualified_name,
    is_reference_key,
    label_value,
    mount_dir_name,
    mount_pod_name,
    mount_pod_selector,
    mount_secret_name,
    new_suffix,
    reference_key,
    settings_hash,
)
from juicefs_csi.volume.options import parse_mount_options
from juicefs_csi.volume.settings import VolumeSettings, parse_volume_settings

SECRETS = {
    "name": "myjfs",
    "metaurl": "redis://:meta-pw-Q1@redis:6379/1",
    "storage": "s3",
    "bucket": "https://b.s3.amazonaws.com",
    "access-key": "AKIA-Q2",
    "secret-key": "secret-key-Q3",
    "envs": '{"TOKEN": "env-secret-Q4"}',
}


def volume(**secret_overrides: str) -> VolumeSettings:
    return parse_volume_settings("pvc-0a1b", {**SECRETS, **secret_overrides}, {"mountOptions": "cache-size=100"})


# --------------------------------------------------------------------------
# the Go driver's public names
# --------------------------------------------------------------------------


def test_public_names_are_the_go_drivers() -> None:
    """Dashboards, `kubectl jfs`, PDBs and Prometheus relabelling select on these exact strings."""
    assert (names.LABEL_APP_NAME, names.APP_NAME_MOUNT) == ("app.kubernetes.io/name", "juicefs-mount")
    assert names.LABEL_VOLUME_ID == "volume-id"
    assert names.LABEL_HASH == "juicefs-hash"
    assert names.LABEL_UPGRADE_UUID == "juicefs-upgrade-uuid"
    assert names.ANN_UNIQUE_ID == "juicefs-uniqueid"
    assert names.ANN_FS_UUID == "juicefs-uuid"
    assert names.ANN_DELETE_DELAY == "juicefs-delete-delay"
    assert names.ANN_DELETE_AT == "juicefs-delete-at"
    assert names.ANN_CLEAN_CACHE == "juicefs-clean-cache"
    assert names.ANN_IMMEDIATE_RECONCILER == "juicefs-immediate-reconciler"
    assert names.FINALIZER == "juicefs.com/finalizer"
    assert names.CONFIG_MAP_NAME == "juicefs-csi-driver-config"
    assert names.CONFIG_MAP_KEY == "config.yaml"
    assert (names.METRICS_PORT, names.METRICS_PORT_NAME) == (9567, "metrics")
    assert names.MOUNT_CONTAINER == "jfs-mount"


def test_reference_key_follows_the_go_rule() -> None:
    """Go: fmt.Sprintf("juicefs-%x", sha256(target))[:63]; a Go-created pod's refs must be recognised."""
    target = "/var/lib/kubelet/pods/0d5c/volumes/kubernetes.io~csi/pvc-0a1b/mount"
    expected = ("juicefs-" + hashlib.sha256(target.encode()).hexdigest())[:63]
    assert reference_key(target) == expected
    assert len(expected) == 63
    assert is_qualified_name(expected)


def test_reference_keys_differ_per_target_and_are_recognised() -> None:
    first, second = reference_key("/a/mount"), reference_key("/b/mount")
    assert first != second
    assert is_reference_key(first) and is_reference_key(second)
    assert not is_reference_key("juicefs-uniqueid")
    assert not is_reference_key("juicefs-delete-delay")
    assert not is_reference_key(first[:-1])


# --------------------------------------------------------------------------
# name helpers
# --------------------------------------------------------------------------


def test_mount_pod_name_keeps_the_go_form_when_it_fits() -> None:
    assert mount_pod_name("node-1", "pvc-0a1b", "abcdef") == "juicefs-node-1-pvc-0a1b-abcdef"


@pytest.mark.parametrize(
    ("node", "unique_id"),
    [
        ("ip-10-0-0-1.ec2.internal", "pvc-0a1b"),
        ("node-1", "Static_Volume.V1"),
        ("n" * 63, "pvc-" + "1" * 36),
        ("node-1", "x" * 253),
    ],
)
def test_mount_pod_name_is_a_dns_label_of_at_most_63(node: str, unique_id: str) -> None:
    name = mount_pod_name(node, unique_id, "abcdef")
    assert is_dns_label(name)
    assert len(name) <= 63
    assert name.startswith("juicefs-")
    assert name.endswith("-abcdef")


def test_mount_pod_name_is_deterministic_given_the_suffix() -> None:
    node, unique_id = "n" * 63, "pvc-" + "1" * 36
    assert mount_pod_name(node, unique_id, "abcdef") == mount_pod_name(node, unique_id, "abcdef")
    assert mount_pod_name(node, unique_id, "abcdef") != mount_pod_name(node, unique_id, "ghijkl")


def test_shortened_names_do_not_collide() -> None:
    """Cut names carry a digest of node and id: ids that differ only past the cut stay apart."""
    node = "n" * 40
    first = mount_pod_name(node, "pvc-" + "1" * 40 + "a", "abcdef")
    second = mount_pod_name(node, "pvc-" + "1" * 40 + "b", "abcdef")
    assert first != second
    # sanitising alone must not merge two nodes either
    assert mount_pod_name("a.b", "v", "abcdef") != mount_pod_name("a-b", "v", "abcdef")


@pytest.mark.parametrize("suffix", ["abcde", "abcdefg", "ABCDEF", "abc12f", ""])
def test_mount_pod_name_rejects_bad_suffixes(suffix: str) -> None:
    with pytest.raises(ValueError, match="6 lowercase letters"):
        mount_pod_name("node", "pvc", suffix)


def test_new_suffix_is_six_lowercase_letters() -> None:
    suffixes = {new_suffix() for _ in range(50)}
    assert all(re.fullmatch(r"[a-z]{6}", suffix) for suffix in suffixes)
    assert len(suffixes) > 1


def test_mount_secret_name() -> None:
    assert mount_secret_name("pvc-0a1b") == "juicefs-pvc-0a1b-secret"
    long_name = mount_secret_name("X_" * 200)
    assert is_dns_subdomain(long_name)
    assert long_name.startswith("juicefs-") and long_name.endswith("-secret")
    assert mount_secret_name("A_b") != mount_secret_name("a-b")


def test_mount_dir_name() -> None:
    assert mount_dir_name("pvc-0a1b", "abcdef") == "pvc-0a1b-abcdef"
    assert mount_dir_name("Static_V.1", "abcdef") == "Static_V.1-abcdef"
    long_dir = mount_dir_name("v" * 253, "abcdef")
    assert len(long_dir) <= 255 - 48
    assert "/" not in long_dir


def test_label_value_keeps_valid_ids_and_fixes_others() -> None:
    assert label_value("pvc-0a1b") == "pvc-0a1b"
    assert label_value("Static_V.1") == "Static_V.1"
    for raw in ("v" * 64, "-starts-with-dash", "has space", "a" * 253):
        fixed = label_value(raw)
        assert is_label_value(fixed), raw
        assert fixed
    assert label_value("v" * 64) != label_value("v" * 65)


def test_dns_label() -> None:
    assert dns_label("pvc-0a1b") == "pvc-0a1b"
    assert is_dns_label(dns_label("Static_V.1"))
    assert is_dns_label(dns_label("x" * 100))


def test_mount_pod_selector() -> None:
    assert mount_pod_selector("pvc-0a1b") == {"app.kubernetes.io/name": "juicefs-mount", "volume-id": "pvc-0a1b"}


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("app", True),
        ("app.kubernetes.io/name", True),
        ("example.com/a_b.c-d", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-app", False),
        ("Example.com/x", False),
        ("/x", False),
        ("a/b/c", False),
        ("", False),
    ],
)
def test_qualified_names(key: str, valid: bool) -> None:
    assert is_qualified_name(key) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [("", True), ("a", True), ("A-b_c.d", True), ("a" * 63, True), ("a" * 64, False), ("-a", False), ("a b", False)],
)
def test_label_values(value: str, valid: bool) -> None:
    assert is_label_value(value) is valid


# --------------------------------------------------------------------------
# settings hash
# --------------------------------------------------------------------------

POD = {"image": "juicedata/mount:ce-v1.4.2", "resources": {"limits": {"memory": "5Gi"}}}


def test_hash_is_63_hex_and_a_label_value() -> None:
    value = settings_hash(volume(), POD)
    assert re.fullmatch(r"[0-9a-f]{63}", value)
    assert is_label_value(value)


def test_hash_is_stable() -> None:
    """Pinned: after a change no running mount pod is reused by new publishes, so it must be deliberate."""
    assert settings_hash(volume(), POD) == settings_hash(volume(), dict(POD))
    assert settings_hash(volume(), POD) == "a5d4aa7c5432cad1b5dab8b87618e905f326cb5e1e819bad77d9f37c3a625a0"


def test_hash_ignores_key_order() -> None:
    reordered = {"resources": {"limits": {"memory": "5Gi"}}, "image": "juicedata/mount:ce-v1.4.2"}
    assert settings_hash(volume(), POD) == settings_hash(volume(), reordered)


@pytest.mark.parametrize(
    "overrides",
    [
        {"metaurl": "redis://:other-password@redis:6379/1"},
        {"access-key": "AKIA-other"},
        {"secret-key": "other-secret"},
        {"envs": '{"TOKEN": "other"}'},
        {"metaurl": "redis://:meta-pw-Q1@redis:6379/2"},
        {"bucket": "https://other.s3.amazonaws.com"},
        {"trash-days": "3"},
    ],
)
def test_hash_changes_with_credentials(overrides: dict[str, str]) -> None:
    assert settings_hash(volume(**overrides), POD) != settings_hash(volume(), POD)


def test_hash_changes_with_options_delay_and_pod_material() -> None:
    base = volume()
    reference = settings_hash(base, POD)
    with_options = dataclasses.replace(base, options=parse_mount_options(["cache-size=200"]))
    assert settings_hash(with_options, POD) != reference
    assert settings_hash(dataclasses.replace(base, delete_delay=60.0), POD) != reference
    assert settings_hash(base, {**POD, "image": "juicedata/mount:ce-v1.4.3"}) != reference
    assert settings_hash(base, {**POD, "resources": {"limits": {"memory": "6Gi"}}}) != reference


def test_hash_ignores_volume_id_and_sub_path() -> None:
    """Go row M3: they reach the pod only through templates, which are hashed once filled."""
    base = volume()
    reference = settings_hash(base, POD)
    assert settings_hash(dataclasses.replace(base, volume_id="pvc-other"), POD) == reference
    assert settings_hash(dataclasses.replace(base, sub_path="a/b"), POD) == reference


def test_hash_needs_the_slow_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The label is world-readable in the namespace: guessing a password from it costs PBKDF2 rounds."""
    assert names.FINGERPRINT_ROUNDS >= 100_000
    reference = settings_hash(volume(), POD)
    monkeypatch.setattr(names, "FINGERPRINT_ROUNDS", 1)
    assert settings_hash(volume(), POD) != reference


def test_hash_material_holds_no_secret_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    original = hashlib.sha256

    def spy(data: bytes = b"") -> Any:
        seen.append(bytes(data))
        return original(data)

    monkeypatch.setattr(hashlib, "sha256", spy)
    settings_hash(volume(), POD)
    material = b"".join(seen)
    assert b"redis://redis:6379/1" in material
    for secret in (b"meta-pw-Q1", b"AKIA-Q2", b"secret-key-Q3", b"env-secret-Q4"):
        assert secret not in material
