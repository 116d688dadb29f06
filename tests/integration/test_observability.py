"""The driver's /metrics, each juicefs client's own metrics, and the JSON log."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.driver import (
    DriverProcess,
    counter_value,
    driver_metrics,
    expect_rpc_error,
    http_get,
    metric_samples,
)
from tests.support.waiting import wait_until

Code = grpc.StatusCode
FAMILIES = (
    "juicefs_volume_errors",
    "juicefs_volume_del_errors",
    "juicefs_volume_path_health",
    "juicefs_csi_rpc_duration_seconds",
    "juicefs_mount_client_info",
)


def fail_publish(driver: DriverProcess, workdir: Path, secrets: dict[str, str]) -> None:
    expect_rpc_error(
        Code.INVALID_ARGUMENT,
        driver.publish,
        "pv-fail",
        workdir / "pods/fail/mount",
        secrets,
        {"mountOptions": "no-such-option"},
    )


def test_driver_metrics_expose_the_go_driver_families(driver: DriverProcess) -> None:
    families = {family.name for family in text_string_to_metric_families(driver_metrics(driver))}
    assert set(FAMILIES) <= families, families


def test_failed_publish_is_counted_with_its_code(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    before = driver_metrics(driver)
    fail_publish(driver, workdir, sqlite_secret)
    fail_publish(driver, workdir, sqlite_secret)
    after = driver_metrics(driver)
    assert counter_value(after, "juicefs_volume_errors") == counter_value(before, "juicefs_volume_errors") + 2
    buckets = metric_samples(after, "juicefs_csi_rpc_duration_seconds_bucket")
    failed = [
        value
        for labels, value in buckets
        if labels.get("method") == "NodePublishVolume"
        and labels.get("code") == "INVALID_ARGUMENT"
        and labels.get("le") == "+Inf"
    ]
    assert failed == [2.0], buckets
    assert not [
        labels for labels, _ in buckets if labels.get("method") == "NodePublishVolume" and labels["code"] == "OK"
    ]


def test_failed_publish_counter_keeps_the_go_driver_series_name(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    fail_publish(driver, workdir, sqlite_secret)
    assert metric_samples(driver_metrics(driver), "juicefs_volume_errors") == [({"node_name": "test-node"}, 1.0)]


def test_failed_unpublish_is_counted(driver: DriverProcess, workdir: Path) -> None:
    target = workdir / "pods/stuck/mount"
    target.mkdir(parents=True)
    (target / "someone-elses-file").write_text("not ours to delete")
    before = counter_value(driver_metrics(driver), "juicefs_volume_del_errors")
    with pytest.raises(grpc.RpcError):
        driver.unpublish("pv-stuck", target)
    assert (target / "someone-elses-file").exists()
    assert counter_value(driver_metrics(driver), "juicefs_volume_del_errors") == before + 1


@pytest.mark.mounts
def test_path_health_follows_stats_and_unpublish(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    target = workdir / "pods/health/mount"
    driver.publish("pv-health", target, sqlite_secret, {"subPath": "health"})
    stats = driver.volume_stats("pv-health", target)
    assert not stats.volume_condition.abnormal
    health = metric_samples(driver_metrics(driver), "juicefs_volume_path_health")
    assert [
        value
        for labels, value in health
        if labels.get("volume_id") == "pv-health" and labels.get("volume_path") == str(target)
    ] == [1.0], health
    driver.unpublish("pv-health", target)
    assert not metric_samples(driver_metrics(driver), "juicefs_volume_path_health")


@pytest.mark.mounts
def test_client_info_names_a_port_serving_the_clients_own_metrics(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    target = workdir / "pods/client/mount"
    driver.publish("pv-client", target, sqlite_secret, {"subPath": "client"})
    info = [
        labels
        for labels, value in metric_samples(driver_metrics(driver), "juicefs_mount_client_info")
        if labels.get("volume_id") == "pv-client" and value == 1.0
    ]
    assert len(info) == 1, info
    port = int(info[0]["metrics_port"])
    assert info[0]["mountpoint"].startswith(str(driver.mount_root))
    client_metrics = http_get(f"http://127.0.0.1:{port}/metrics")
    own = [line for line in client_metrics.splitlines() if line.startswith("juicefs_")]
    assert own, client_metrics[:500]
    assert any(line.startswith("juicefs_fuse_ops") or line.startswith("juicefs_uptime") for line in own), own[:20]

    driver.unpublish("pv-client", target)

    def gone() -> bool:
        samples = metric_samples(driver_metrics(driver), "juicefs_mount_client_info")
        return not [labels for labels, _ in samples if labels.get("volume_id") == "pv-client"]

    wait_until(gone, 20, "the stopped client's info series is gone")


@pytest.mark.mounts
def test_every_log_line_is_a_json_object(driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path) -> None:
    target = workdir / "pods/log/mount"
    driver.publish("pv-log", target, sqlite_secret, {"subPath": "log"})
    fail_publish(driver, workdir, sqlite_secret)
    driver.unpublish("pv-log", target)
    driver.restart()
    lines = driver.log_text().splitlines()
    assert len(lines) > 5
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
        assert isinstance(entry["msg"], str) and entry["level"] in {"debug", "info", "warning", "error", "critical"}
    messages = {json.loads(line)["msg"] for line in lines}
    assert {"volume published", "rpc failed", "volume unpublished", "driver started"} <= messages
