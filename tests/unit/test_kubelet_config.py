"""Kubelet client settings from the environment (names as in the Go driver) and PodList parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from juicefs_csi.kube.kubelet import (
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_SECONDS,
    SERVICE_ACCOUNT_TOKEN_FILE,
    KubeletConfig,
    KubeletError,
    KubeletUnauthorized,
    parse_pod_list,
)


def test_without_host_ip_there_is_no_kubelet() -> None:
    assert KubeletConfig.from_env({}) is None
    assert KubeletConfig.from_env({"HOST_IP": "  ", "KUBELET_PORT": "10250"}) is None


def test_defaults() -> None:
    config = KubeletConfig.from_env({"HOST_IP": "10.1.2.3"})
    assert config == KubeletConfig(host="10.1.2.3")
    assert config.port == DEFAULT_PORT == 10250
    assert config.timeout == DEFAULT_TIMEOUT_SECONDS == 10.0
    assert config.token_file == SERVICE_ACCOUNT_TOKEN_FILE
    assert config.token_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert not config.uses_client_cert
    assert config.url == "https://10.1.2.3:10250/pods"


def test_all_settings(tmp_path: Path) -> None:
    env = {
        "HOST_IP": " 192.168.0.7 ",
        "KUBELET_PORT": "10255",
        "KUBELET_CLIENT_CERT": "/etc/kubelet-client/tls.crt",
        "KUBELET_CLIENT_KEY": "/etc/kubelet-client/tls.key",
        "KUBELET_TIMEOUT": "3",
    }
    config = KubeletConfig.from_env(env, token_file=tmp_path / "token")
    assert config == KubeletConfig(
        host="192.168.0.7",
        port=10255,
        client_cert="/etc/kubelet-client/tls.crt",
        client_key="/etc/kubelet-client/tls.key",
        token_file=tmp_path / "token",
        timeout=3.0,
    )
    assert config.uses_client_cert
    assert config.url == "https://192.168.0.7:10255/pods"


def test_empty_values_mean_defaults() -> None:
    env = {
        "HOST_IP": "10.0.0.1",
        "KUBELET_PORT": "",
        "KUBELET_TIMEOUT": " ",
        "KUBELET_CLIENT_CERT": "",
        "KUBELET_CLIENT_KEY": "",
    }
    assert KubeletConfig.from_env(env) == KubeletConfig(host="10.0.0.1")


def test_ipv6_host_is_bracketed_in_the_url() -> None:
    config = KubeletConfig.from_env({"HOST_IP": "fd00::12", "KUBELET_PORT": "10250"})
    assert config is not None
    assert config.url == "https://[fd00::12]:10250/pods"


def test_fractional_timeout() -> None:
    config = KubeletConfig.from_env({"HOST_IP": "10.0.0.1", "KUBELET_TIMEOUT": "0.5"})
    assert config is not None and config.timeout == 0.5


@pytest.mark.parametrize("port", ["abc", "10250s", "0", "-1", "65536", "1.5"])
def test_bad_port(port: str) -> None:
    with pytest.raises(ValueError, match="KUBELET_PORT"):
        KubeletConfig.from_env({"HOST_IP": "10.0.0.1", "KUBELET_PORT": port})


@pytest.mark.parametrize("timeout", ["10s", "ten", "0", "-3", "inf", "nan"])
def test_bad_timeout(timeout: str) -> None:
    with pytest.raises(ValueError, match="KUBELET_TIMEOUT"):
        KubeletConfig.from_env({"HOST_IP": "10.0.0.1", "KUBELET_TIMEOUT": timeout})


@pytest.mark.parametrize("which", ["KUBELET_CLIENT_CERT", "KUBELET_CLIENT_KEY"])
def test_cert_and_key_come_together(which: str) -> None:
    with pytest.raises(ValueError, match="KUBELET_CLIENT_CERT and KUBELET_CLIENT_KEY"):
        KubeletConfig.from_env({"HOST_IP": "10.0.0.1", which: "/some/file"})


def test_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_IP", "10.9.8.7")
    monkeypatch.setenv("KUBELET_PORT", "12345")
    config = KubeletConfig.from_env()
    assert config is not None and config.url == "https://10.9.8.7:12345/pods"


def test_unauthorized_is_a_kubelet_error_with_its_own_reason() -> None:
    error = KubeletUnauthorized("no", status=403)
    assert isinstance(error, KubeletError)
    assert (error.reason, error.status) == ("unauthorized", 403)


# --- PodList parsing ---------------------------------------------------------------------------


def _pod(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "7"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"},
    }


def test_parse_pod_list() -> None:
    body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [_pod("a"), _pod("b")]})
    pods = parse_pod_list(body.encode())
    assert [(p.metadata.name, p.metadata.uid) for p in pods if p.metadata] == [("a", "uid-a"), ("b", "uid-b")]
    assert pods[0].status is not None and pods[0].status.phase == "Running"


def test_parse_empty_pod_lists() -> None:
    assert parse_pod_list(b'{"kind":"PodList","apiVersion":"v1","metadata":{},"items":null}') == []
    assert parse_pod_list(b'{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}') == []


@pytest.mark.parametrize(
    "body",
    [
        b"Unauthorized",
        b"<html>proxy error</html>",
        b"[]",
        b'{"kind":"Status","apiVersion":"v1","status":"Failure"}',
        b'{"kind":"PodList","items":{}}',
        b'{"kind":"PodList","items":[{"metadata":{"name":5}}]}',
    ],
)
def test_unparsable_answers_are_kubelet_errors(body: bytes) -> None:
    with pytest.raises(KubeletError) as error:
        parse_pod_list(body)
    assert error.value.reason == "decode"
    assert not isinstance(error.value, KubeletUnauthorized)
