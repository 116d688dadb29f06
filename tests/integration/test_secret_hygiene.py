"""Secrets never show: not in any process's argv, not in the driver's log, not in gRPC errors, not readable on disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest

from juicefs_csi.csi.proto import csi_pb2
from tests.support.driver import GIB, DriverProcess, capability, expect_rpc_error
from tests.support.observe import all_cmdlines
from tests.support.slow_failures import distinctive, slow_failure, start_slow_failures

Code = grpc.StatusCode


@pytest.fixture
def secret_values() -> dict[str, str]:
    return {
        "access-key": distinctive("AKHYG"),
        "secret-key": distinctive("SKHYG"),
        "env-value": distinctive("ENVHYG"),
        "session-token": distinctive("STHYG"),
        "password": distinctive("PWHYG"),
    }


@pytest.fixture
def loaded_secret(sqlite_secret: dict[str, str], secret_values: dict[str, str]) -> dict[str, str]:
    """The SQLite volume, with S3-ish credentials and an environment secret riding along."""
    return {
        **sqlite_secret,
        "access-key": secret_values["access-key"],
        "secret-key": secret_values["secret-key"],
        "envs": json.dumps({"JFS_HYGIENE_TOKEN": secret_values["env-value"]}),
        "format-options": f"session-token={secret_values['session-token']}",
    }


def leaks(text: str, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value in text]


def create_gib_volume(driver: DriverProcess, name: str, secrets: dict[str, str]) -> csi_pb2.Volume:
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
        volume_capabilities=[capability()],
        secrets=secrets,
    )
    volume: csi_pb2.Volume = driver.controller.CreateVolume(request, timeout=60).volume
    return volume


@pytest.mark.mounts
def test_no_secret_in_any_argv_or_the_driver_log_while_mounted(
    driver: DriverProcess, loaded_secret: dict[str, str], secret_values: dict[str, str], workdir: Path
) -> None:
    volume = create_gib_volume(driver, "pvc-hygiene", loaded_secret)
    a, b = workdir / "pods/a/mount", workdir / "pods/b/mount"
    driver.publish(volume.volume_id, a, loaded_secret, dict(volume.volume_context))
    driver.publish(volume.volume_id, b, loaded_secret, dict(volume.volume_context), readonly=True)
    (a / "f").write_text("data")

    pids = driver.client_pids()
    assert pids, "no juicefs client is running: the scan below would prove nothing"
    # The secret did reach the clients (through their environment), so it is there to leak.
    assert any(secret_values["env-value"] in Path(f"/proc/{pid}/environ").read_text(errors="replace") for pid in pids)

    leaked = {pid: leaks(argv, secret_values) for pid, argv in all_cmdlines().items()}
    assert not {pid: names for pid, names in leaked.items() if names}, leaked

    assert not leaks(driver.log_text(), secret_values)
    for path in driver.state_dir.rglob("*"):
        if path.is_file() and not path.name.endswith(".inputs.json"):
            assert not leaks(path.read_text(errors="replace"), secret_values), path


@pytest.fixture(scope="module", autouse=True)
def _start_slow_failures(request: pytest.FixtureRequest) -> None:
    """The unreachable-Redis publish waits out the driver's ready timeout: start it now, in the background."""
    start_slow_failures({item.name for item in request.session.items})


def test_no_secret_in_errors_or_the_log_when_publish_fails(
    driver: DriverProcess, sqlite_secret: dict[str, str], secret_values: dict[str, str], workdir: Path
) -> None:
    password = secret_values["password"]
    values = {**secret_values, "encoded-password": quote(password + "@/", safe="")}
    carrier = {
        "name": "carrier",
        "metaurl": f"redis://:{password}@127.0.0.1:1/1",
        "access-key": secret_values["access-key"],
        "secret-key": secret_values["secret-key"],
        "envs": json.dumps({"JFS_HYGIENE_TOKEN": secret_values["env-value"]}),
    }
    quick_failures: list[tuple[dict[str, str], dict[str, str]]] = [
        # the password inside a meta URL with a wrong scheme
        ({**carrier, "metaurl": f"ftp://user:{password}@host/1"}, {}),
        # ... with a control character
        ({**carrier, "metaurl": f"redis://:{password}@127.0.0.1:1/1\nx"}, {}),
        # ... percent-encoded, in a Secret that parses but comes with a bad mount option
        ({**carrier, "metaurl": f"redis://:{values['encoded-password']}@host:1/1"}, {"mountOptions": "no-such-option"}),
        # a secret value under an invalid variable name
        ({**sqlite_secret, "envs": json.dumps({"BAD-NAME": secret_values["env-value"]})}, {}),
        # a credential in a field that is validated
        ({**sqlite_secret, "access-key": secret_values["access-key"], "compress": secret_values["secret-key"]}, {}),
    ]
    for n, (bad, context) in enumerate(quick_failures):
        details = expect_rpc_error(Code.INVALID_ARGUMENT, driver.publish, f"pv-bad-{n}", workdir / "t", bad, context)
        assert not leaks(details, values), (n, details)
    controller_failure = expect_rpc_error(
        Code.INVALID_ARGUMENT,
        driver.controller.CreateVolume,
        csi_pb2.CreateVolumeRequest(name="pvc-x", volume_capabilities=[capability(block=True)], secrets=carrier),
        timeout=10,
    )
    assert not leaks(controller_failure, values)
    assert not leaks(driver.log_text(), values)

    # A client that really starts with the secrets and fails (Redis unreachable), on a private driver.
    slow = slow_failure("unreachable-redis-with-secrets")
    slow_values = {key: value for key, value in slow.secrets.items() if key != "name"}
    slow_values["password"] = slow.secrets["metaurl"].split("://:", 1)[1].split("@", 1)[0]
    slow_values["env-value"] = json.loads(slow.secrets["envs"])["JFS_SLOW_TOKEN"]
    assert slow.code != Code.OK
    assert slow.details, "the failure should say why"
    assert not leaks(slow.details, slow_values), slow.details
    assert slow.argv_leaks == []
    assert "rpc failed" in slow.log_text
    assert not leaks(slow.log_text, slow_values)


@pytest.mark.mounts
def test_state_holding_secrets_is_private(
    driver: DriverProcess, loaded_secret: dict[str, str], secret_values: dict[str, str], workdir: Path
) -> None:
    driver.publish("pv-private", workdir / "pods/p/mount", loaded_secret, {"subPath": "p"})
    holders = [
        path
        for path in driver.state_dir.rglob("*")
        if path.is_file() and secret_values["access-key"] in path.read_text(errors="replace")
    ]
    assert holders, "expected the remount inputs to be kept on disk"
    for path in holders:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for directory in path.relative_to(driver.state_dir).parents:
            if directory != Path("."):
                full = driver.state_dir / directory
                assert stat.S_IMODE(full.stat().st_mode) == 0o700, full


@pytest.mark.mounts
def test_all_driver_state_is_private(driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path) -> None:
    create_gib_volume(driver, "pvc-state", sqlite_secret)
    driver.publish("pv-state", workdir / "pods/s/mount", sqlite_secret, {"subPath": "pvc-state"})
    wrong = []
    for path in [driver.state_dir, *driver.state_dir.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            wrong.append(f"{oct(mode)} {path.relative_to(driver.state_dir.parent)}")
    assert not wrong, wrong
