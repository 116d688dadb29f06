"""gRPC edge helpers: the socket path kubelet gives us, and the secrets a request carries."""

from __future__ import annotations

from typing import Any

import pytest

from juicefs_csi.csi.proto import csi_pb2
from juicefs_csi.csi.server import STATUS_CODES, request_secret_values, socket_path
from juicefs_csi.errors import ErrorKind


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("unix:///csi/csi.sock", "/csi/csi.sock"),
        ("unix:/csi/csi.sock", "/csi/csi.sock"),
        ("/csi/csi.sock", "/csi/csi.sock"),
        (
            "unix:///var/lib/kubelet/plugins/csi.juicefs.com/csi.sock",
            "/var/lib/kubelet/plugins/csi.juicefs.com/csi.sock",
        ),
        ("/a", "/a"),
    ],
)
def test_socket_path(endpoint: str, path: str) -> None:
    assert socket_path(endpoint) == path


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:10000", "tcp:///csi.sock", "localhost:10000", "csi.sock", "", "http://h/csi.sock"]
)
def test_socket_path_rejects_non_unix_endpoints(endpoint: str) -> None:
    with pytest.raises(ValueError, match="unix socket"):
        socket_path(endpoint)


def test_request_secret_values_extracts_every_value_and_the_meta_password() -> None:
    request = csi_pb2.NodePublishVolumeRequest(
        volume_id="pvc-1",
        secrets={
            "name": "myjfs",
            "metaurl": "redis://user:p%40ss-w0rd@redis:6379/1",
            "access-key": "ak-123",
            "secret-key": "sk-456",
        },
    )
    values = request_secret_values(request)
    assert values == {"myjfs", "redis://user:p%40ss-w0rd@redis:6379/1", "ak-123", "sk-456", "p@ss-w0rd"}


@pytest.mark.parametrize(
    "request_",
    [
        csi_pb2.ProbeRequest(),
        csi_pb2.NodeUnpublishVolumeRequest(volume_id="pvc-1", target_path="/x"),
        csi_pb2.NodePublishVolumeRequest(volume_id="pvc-1"),
        object(),
        None,
    ],
)
def test_requests_without_secrets_have_no_secret_values(request_: Any) -> None:
    assert request_secret_values(request_) == set()


@pytest.mark.parametrize(
    "metaurl", ["", "ftp://u:pw@h/1", "redis://h\n/1", "redis://", "redis://h:6379/1", "sqlite3:///x.db"]
)
def test_bad_or_passwordless_meta_urls_add_nothing(metaurl: str) -> None:
    request = csi_pb2.DeleteVolumeRequest(volume_id="pvc-1", secrets={"metaurl": metaurl, "secret-key": "sk-456"})
    assert request_secret_values(request) == {metaurl, "sk-456"}


def test_secrets_without_metaurl() -> None:
    request = csi_pb2.CreateVolumeRequest(name="pvc-1", secrets={"token": "tok-1"})
    assert request_secret_values(request) == {"tok-1"}


def test_request_secret_values_on_a_plain_object() -> None:
    class Request:
        secrets = {"metaurl": "postgres://u:pw-9@h/db", "other": "x"}

    assert request_secret_values(Request()) == {"postgres://u:pw-9@h/db", "x", "pw-9"}


def test_every_error_kind_has_a_status_code() -> None:
    assert set(STATUS_CODES) == set(ErrorKind)
    assert {code.name for code in STATUS_CODES.values()} == {kind.name for kind in ErrorKind}
