"""Discovery, /version, the kubeconfig (checked with kubectl) and the emulator's command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.kube import KubeAPI
from tests.support.kube.envtest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_version(kube_api: KubeAPI) -> None:
    version = kube_api.http.call("GET", "/version")
    assert version["gitVersion"].startswith("v1.")
    if not kube_api.is_real:
        assert version["gitVersion"] == "v1.31.0" and (version["major"], version["minor"]) == ("1", "31")


def test_discovery(kube_api: KubeAPI) -> None:
    assert "v1" in kube_api.http.call("GET", "/api")["versions"]
    core = kube_api.http.call("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["namespaced"] and by_name["pods"]["kind"] == "Pod"
    assert "watch" in by_name["pods"]["verbs"]
    assert "pods/status" in by_name and "pods/log" in by_name
    assert not by_name["persistentvolumes"]["namespaced"]
    groups = {g["name"]: g for g in kube_api.http.call("GET", "/apis")["groups"]}
    for group in (
        "storage.k8s.io",
        "coordination.k8s.io",
        "batch",
        "scheduling.k8s.io",
        "events.k8s.io",
        "admissionregistration.k8s.io",
    ):
        assert "v1" in [v["version"] for v in groups[group]["versions"]], group
    storage = kube_api.http.call("GET", "/apis/storage.k8s.io/v1")
    assert {"storageclasses", "csidrivers"} <= {r["name"] for r in storage["resources"]}


def test_unknown_paths_are_404(kube_api: KubeAPI) -> None:
    assert kube_api.request("GET", "/api/v1/nonsense").status == 404
    assert kube_api.request("GET", "/apis/nope.example.com/v1/things").status == 404


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubeconfig_works_with_kubectl(kube_api: KubeAPI, kube_namespace: str) -> None:
    kubectl = ["kubectl", "--kubeconfig", str(kube_api.kubeconfig_path), "--request-timeout=20s"]
    subprocess.run(
        [*kubectl, "-n", kube_namespace, "create", "configmap", "via-kubectl", "--from-literal=a=b"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    out = subprocess.run(
        [*kubectl, "-n", kube_namespace, "get", "configmap", "via-kubectl", "-o", "json"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["data"] == {"a": "b"}


def test_emulator_runs_as_a_module() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.kube.emulator", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as resp:
                    assert json.loads(resp.read())["gitVersion"] == "v1.31.0"
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_all_namespaces_collection_only_reads(kube_api: KubeAPI) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}}
    assert kube_api.request("POST", "/api/v1/pods", body=pod).status == 405
    assert kube_api.request("DELETE", "/api/v1/configmaps").status == 405
    assert kube_api.request("GET", "/api/v1/configmaps").status == 200
