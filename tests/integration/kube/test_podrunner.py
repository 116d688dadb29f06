"""The test pod runner (a kubelet for mount pods) against the Kubernetes API of the session.

Everything here runs real processes (and, in one test, a real ``juicefs mount``)
from pod specs; waits poll the API or the host, never sleep for a fixed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from juicefs_csi.mount import syscalls
from juicefs_csi.mount.mountinfo import read_mounts
from tests.support.kube import Emulator, KubeAPI
from tests.support.podrunner import DEFAULT_BIN_DIRS, PodRunner, eventually

Obj = dict[str, Any]
PY = "python3"  # resolved on the runner's PATH: the venv's interpreter
SLEEP_FOREVER = [PY, "-c", "import time; time.sleep(3600)"]
APPEND = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"


def container(name: str, command: list[str], **extra: Any) -> Obj:
    return {"name": name, "image": "busybox:1.36", "command": command, **extra}


def pod(name: str, node: str, containers: list[Obj], **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": containers, **spec},
    }


def host_volume(name: str, path: str) -> Obj:
    return {"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}}


def condition(p: Obj, kind: str) -> Obj:
    return next(c for c in p["status"].get("conditions", []) if c["type"] == kind)


def is_ready(p: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def phase_is(phase: str) -> Any:
    return lambda p: p["status"].get("phase") == phase


def statuses(p: Obj, init: bool = False) -> dict[str, Obj]:
    key = "initContainerStatuses" if init else "containerStatuses"
    return {s["name"]: s for s in p["status"].get(key, [])}


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def mounted_at(path: Path) -> bool:
    return any(m.mount_point == str(path) for m in read_mounts())


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
async def runner(kube_api: KubeAPI, kube_namespace: str, node_root: Path) -> AsyncIterator[PodRunner]:
    """A runner for a node of its own; hostPath volumes land under ``node_root/host``."""
    async with PodRunner(
        kube_api, f"node-{kube_namespace}", node_root, host_path_map=lambda path: node_root / "host" / path.lstrip("/")
    ) as running:
        yield running


async def test_pod_reaches_running_with_kubelet_statuses(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    kube_api.create(
        pod("sleeper", runner.node_name, [container("main", ["sleep", "3600"]), container("side", SLEEP_FOREVER)]),
        kube_namespace,
    )
    p = await runner.wait_for_pod(kube_namespace, "sleeper", is_ready, what="Ready")

    status = p["status"]
    assert status["phase"] == "Running"
    assert status["hostIP"] == status["podIP"] == "127.0.0.1"
    assert status["startTime"]
    for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert condition(p, kind)["status"] == "True", kind
    for name, cs in statuses(p).items():
        assert cs["state"]["running"]["startedAt"], name
        assert cs["ready"] and cs["started"] and cs["restartCount"] == 0, cs
        assert cs["containerID"].startswith("podrunner://")
    pid = runner.pid_of(kube_namespace, "sleeper", "main")
    assert pid is not None and alive(pid)
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid, "each container runs in its own session"
    assert runner.running_pods() == [(kube_namespace, "sleeper")]

    node = kube_api.get("nodes", runner.node_name)
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == runner.node_name
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    assert {"cpu", "memory"} <= set(node["status"]["capacity"])
    assert next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
    lease = kube_api.get("leases", runner.node_name, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == runner.node_name


DUMP_ENV = """
import json, os, sys
env = dict(os.environ)
env["_secret_file"] = open(sys.argv[2]).read()
json.dump(env, open(sys.argv[1], "w"))
"""


async def test_env_is_resolved_from_secrets_configmaps_and_the_pod(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cr3t", "user": "alice"},
        },
        kube_namespace,
    )
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"LEVEL": "debug", "mode": "fast"},
        },
        kube_namespace,
    )
    env = [
        {"name": "PLAIN", "value": "plain-value"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}}},
        {"name": "COMBINED", "value": "$(PLAIN)-$(MODE)-$$(PLAIN)"},
        {"name": "OUT_FILE", "value": "/out/env.json"},
        *(
            {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
            for name, path in (
                ("POD_NAME", "metadata.name"),
                ("POD_NAMESPACE", "metadata.namespace"),
                ("POD_UID", "metadata.uid"),
                ("NODE_NAME", "spec.nodeName"),
                ("HOST_IP", "status.hostIP"),
                ("POD_IP", "status.podIP"),
            )
        ),
    ]
    main = container(
        "main",
        [PY, "-c", DUMP_ENV, "$(OUT_FILE)", "/etc/creds/token"],
        env=env,
        envFrom=[{"secretRef": {"name": "creds"}, "prefix": "CREDS_"}, {"configMapRef": {"name": "settings"}}],
        volumeMounts=[
            {"name": "out", "mountPath": "/out"},
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
        ],
    )
    created = kube_api.create(
        pod(
            "env",
            runner.node_name,
            [main],
            restartPolicy="Never",
            volumes=[{"name": "out", "emptyDir": {}}, {"name": "creds", "secret": {"secretName": "creds"}}],
        ),
        kube_namespace,
    )
    p = await runner.wait_for_pod(kube_namespace, "env", phase_is("Succeeded"), what="Succeeded")

    out = runner.volume_path(kube_namespace, "env", "out") / "env.json"
    import json  # noqa: PLC0415 - only this test reads JSON

    seen = json.loads(out.read_text())
    assert seen["PLAIN"] == "plain-value"
    assert seen["TOKEN"] == seen["CREDS_token"] == seen["_secret_file"] == "s3cr3t"
    assert seen["CREDS_user"] == "alice"
    assert seen["MODE"] == "fast" and seen["LEVEL"] == "debug"
    assert "OPTIONAL" not in seen
    assert seen["COMBINED"] == "plain-value-fast-$(PLAIN)"
    assert seen["OUT_FILE"] == str(out), "env values under a mountPath point at the volume's host path"
    assert seen["POD_NAME"] == "env" and seen["POD_NAMESPACE"] == kube_namespace
    assert seen["POD_UID"] == created["metadata"]["uid"]
    assert seen["NODE_NAME"] == runner.node_name
    assert seen["HOST_IP"] == seen["POD_IP"] == "127.0.0.1"
    assert seen["PATH"].split(os.pathsep)[0] == DEFAULT_BIN_DIRS[0]

    terminated = statuses(p)["main"]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert condition(p, "Ready")["reason"] == "PodCompleted"


async def test_a_missing_secret_keeps_the_container_waiting_until_it_exists(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    main = container(
        "main", SLEEP_FOREVER, env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    )
    kube_api.create(pod("waits", runner.node_name, [main]), kube_namespace)
    p = await runner.wait_for_pod(
        kube_namespace,
        "waits",
        lambda p: (
            statuses(p).get("main", {}).get("state", {}).get("waiting", {}).get("reason")
            == "CreateContainerConfigError"
        ),
        what="CreateContainerConfigError",
    )
    assert p["status"]["phase"] == "Pending"
    assert 'secret "later" not found' in statuses(p)["main"]["state"]["waiting"]["message"]

    kube_api.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later"}, "stringData": {"token": "t"}},
        kube_namespace,
    )
    await runner.wait_for_pod(kube_namespace, "waits", is_ready, what="Ready once the Secret exists")


async def test_init_containers_run_in_order_before_containers(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    log_file = "/work/order.txt"
    mounts = [{"name": "work", "mountPath": "/work"}]
    inits = [
        container("init1", [PY, "-c", APPEND, log_file, "init1"], volumeMounts=mounts),
        # a shell, because the pod asks for one; paths reach it as arguments, which are mapped
        container("init2", ["sh", "-c", 'echo init2 >> "$1"', "sh", log_file], volumeMounts=mounts),
    ]
    main = container("main", [PY, "-c", APPEND, log_file, "main"], volumeMounts=mounts)
    kube_api.create(
        pod(
            "ordered",
            runner.node_name,
            [main],
            initContainers=inits,
            restartPolicy="Never",
            volumes=[{"name": "work", "emptyDir": {}}],
        ),
        kube_namespace,
    )
    p = await runner.wait_for_pod(kube_namespace, "ordered", phase_is("Succeeded"), what="Succeeded")

    order = (runner.volume_path(kube_namespace, "ordered", "work") / "order.txt").read_text().split()
    assert order == ["init1", "init2", "main"]
    for name, cs in statuses(p, init=True).items():
        assert cs["state"]["terminated"]["reason"] == "Completed", name
        assert cs["ready"], name
    assert condition(p, "Initialized")["status"] == "True"


async def test_a_failing_init_container_fails_the_pod(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    init = container("setup", [PY, "-c", "import sys; print('setup failed', file=sys.stderr); sys.exit(3)"])
    kube_api.create(
        pod(
            "broken", runner.node_name, [container("main", SLEEP_FOREVER)], initContainers=[init], restartPolicy="Never"
        ),
        kube_namespace,
    )
    p = await runner.wait_for_pod(kube_namespace, "broken", phase_is("Failed"), what="Failed")

    terminated = statuses(p, init=True)["setup"]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert statuses(p)["main"]["state"] == {"waiting": {"reason": "PodInitializing"}}
    initialized = condition(p, "Initialized")
    assert initialized["status"] == "False" and initialized["reason"] == "ContainersNotInitialized"
    assert runner.pid_of(kube_namespace, "broken", "main") is None
    assert "setup failed" in runner.log_text(kube_namespace, "broken", "setup")


async def test_a_missing_executable_is_a_start_error(kube_api: KubeAPI, kube_namespace: str, runner: PodRunner) -> None:
    kube_api.create(
        pod("nobin", runner.node_name, [container("main", ["no-such-binary", "--flag"])], restartPolicy="Never"),
        kube_namespace,
    )
    p = await runner.wait_for_pod(kube_namespace, "nobin", phase_is("Failed"), what="Failed")

    terminated = statuses(p)["main"]["state"]["terminated"]
    assert terminated["exitCode"] == 128 and terminated["reason"] == "StartError"
    assert "executable file not found" in terminated["message"]


async def test_restart_always_restarts_a_killed_container(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    kube_api.create(pod("crashy", runner.node_name, [container("main", SLEEP_FOREVER)]), kube_namespace)
    await runner.wait_for_pod(kube_namespace, "crashy", is_ready, what="Ready")
    first = runner.pid_of(kube_namespace, "crashy", "main")
    assert first is not None

    runner.kill_container(kube_namespace, "crashy", "main", signal.SIGKILL)
    p = await runner.wait_for_pod(
        kube_namespace,
        "crashy",
        lambda p: is_ready(p) and statuses(p)["main"]["restartCount"] == 1,
        what="restarted and Ready",
    )

    cs = statuses(p)["main"]
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert "running" in cs["state"]
    assert p["status"]["phase"] == "Running"
    second = runner.pid_of(kube_namespace, "crashy", "main")
    assert second is not None and second != first and alive(second)
    assert not alive(first)


FAIL_ONCE = "import os, sys; m = sys.argv[1]; ok = os.path.exists(m); open(m, 'a').close(); sys.exit(0 if ok else 1)"


async def test_restart_on_failure_retries_until_the_container_succeeds(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    main = container("main", [PY, "-c", FAIL_ONCE, "/work/marker"], volumeMounts=[{"name": "w", "mountPath": "/work"}])
    kube_api.create(
        pod("flaky", runner.node_name, [main], restartPolicy="OnFailure", volumes=[{"name": "w", "emptyDir": {}}]),
        kube_namespace,
    )
    p = await runner.wait_for_pod(kube_namespace, "flaky", phase_is("Succeeded"), what="Succeeded")

    cs = statuses(p)["main"]
    assert cs["restartCount"] == 1
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["state"]["terminated"]["exitCode"] == 0


GRACEFUL = """
import os, pathlib, signal, subprocess, sys
out = pathlib.Path(sys.argv[1])
# a second process in the container's process group that ignores SIGTERM
subprocess.Popen([sys.executable, "-c",
    "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(3600)", str(out / "child.pid")])
def on_term(*_):
    (out / "term").write_text("after-prestop" if (out / "prestop").exists() else "before-prestop")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
(out / "main.pid").write_text(str(os.getpid()))
while True:
    signal.pause()
"""


async def test_deletion_runs_prestop_then_stops_the_process_group(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    mounts = [{"name": "out", "mountPath": "/out"}]
    main = container(
        "main",
        [PY, "-c", GRACEFUL, "/out"],
        volumeMounts=mounts,
        lifecycle={"preStop": {"exec": {"command": [PY, "-c", APPEND, "/out/prestop", "ran"]}}},
    )
    kube_api.create(
        pod("graceful", runner.node_name, [main], volumes=[host_volume("out", "/var/lib/test/out")]), kube_namespace
    )
    out = runner.host_path_map("/var/lib/test/out")
    await runner.wait_for_pod(kube_namespace, "graceful", is_ready, what="Ready")
    child = int(await eventually(lambda: _read(out / "child.pid"), what="child pid"))
    main_pid = int(await eventually(lambda: _read(out / "main.pid"), what="main pid"))
    assert os.getpgid(child) == main_pid

    kube_api.delete("pods", "graceful", kube_namespace)
    await runner.wait_for_pod_gone(kube_namespace, "graceful", timeout=30)

    assert (out / "prestop").read_text() == "ran\n"
    assert (out / "term").read_text() == "after-prestop", "preStop runs before SIGTERM"
    await eventually(lambda: not alive(child) and not alive(main_pid), what="container processes gone")
    assert runner.running_pods() == []


async def test_the_grace_period_ends_with_sigkill(kube_api: KubeAPI, kube_namespace: str, runner: PodRunner) -> None:
    stubborn = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(sys.argv[1], 'w').close(); time.sleep(3600)"
    )
    main = container("main", [PY, "-c", stubborn, "/out/ignoring"], volumeMounts=[{"name": "out", "mountPath": "/out"}])
    kube_api.create(
        pod(
            "stubborn",
            runner.node_name,
            [main],
            terminationGracePeriodSeconds=1,
            volumes=[host_volume("out", "/var/lib/test/stubborn")],
        ),
        kube_namespace,
    )
    await runner.wait_for_pod(kube_namespace, "stubborn", is_ready, what="Ready")
    await eventually((runner.host_path_map("/var/lib/test/stubborn") / "ignoring").exists, what="SIGTERM ignored")
    pid = runner.pid_of(kube_namespace, "stubborn", "main")
    assert pid is not None

    started = time.monotonic()
    kube_api.delete("pods", "stubborn", kube_namespace)
    await runner.wait_for_pod_gone(kube_namespace, "stubborn", timeout=20)
    assert time.monotonic() - started >= 0.9, "SIGKILL only after the grace period"
    await eventually(lambda: not alive(pid), what="process killed")


async def test_a_force_deleted_pod_has_its_processes_killed(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner
) -> None:
    kube_api.create(pod("forced", runner.node_name, [container("main", SLEEP_FOREVER)]), kube_namespace)
    await runner.wait_for_pod(kube_namespace, "forced", is_ready, what="Ready")
    pid = runner.pid_of(kube_namespace, "forced", "main")
    assert pid is not None

    kube_api.delete("pods", "forced", kube_namespace, grace_period_seconds=0)
    await eventually(lambda: not alive(pid), what="the process of a vanished pod killed")
    await eventually(lambda: runner.running_pods() == [], what="no running pods")


async def test_pod_logs_are_served_by_the_api(
    kube_api: KubeAPI, kube_emulator: Emulator, kube_namespace: str, runner: PodRunner
) -> None:
    chatty = (
        "import sys, time; print('hello from stdout', flush=True); print('and stderr', file=sys.stderr, "
        "flush=True); time.sleep(3600)"
    )
    kube_api.create(
        pod("chatty", runner.node_name, [container("main", [PY, "-c", chatty]), container("quiet", SLEEP_FOREVER)]),
        kube_namespace,
    )
    await runner.wait_for_pod(kube_namespace, "chatty", is_ready, what="Ready")

    def served() -> str | None:
        resp = kube_api.request(
            "GET", kube_api.path("pods", kube_namespace, "chatty", "log"), params={"container": "main"}
        )
        text = resp.body.decode()
        return text if resp.status == 200 and "and stderr" in text else None

    text = await eventually(served, what="the log through pods/log")
    assert "hello from stdout" in text
    assert text == runner.log_text(kube_namespace, "chatty", "main")


async def test_the_watch_relists_after_410(
    kube_api: KubeAPI, kube_emulator: Emulator, kube_namespace: str, runner: PodRunner
) -> None:
    lists_before = kube_emulator.request_count("list", "pods")
    kube_emulator.inject_error("watch", "pods", status=410, times=1)
    kube_emulator.close_watches()
    kube_api.create(pod("after-410", runner.node_name, [container("main", SLEEP_FOREVER)]), kube_namespace)
    await runner.wait_for_pod(kube_namespace, "after-410", is_ready, what="Ready")
    assert kube_emulator.request_count("list", "pods") > lists_before


async def test_stop_kills_everything_and_unmounts_leftovers(
    kube_api: KubeAPI, kube_namespace: str, node_root: Path
) -> None:
    node = f"node-{kube_namespace}"
    running = PodRunner(kube_api, node, node_root)
    await running.start()
    try:
        kube_api.create(pod("left", node, [container("main", SLEEP_FOREVER)]), kube_namespace)
        await running.wait_for_pod(kube_namespace, "left", is_ready, what="Ready")
        pid = running.pid_of(kube_namespace, "left", "main")
        assert pid is not None
        source, target = node_root / "src", node_root / "leftover"
        source.mkdir()
        target.mkdir()
        syscalls.bind_mount(str(source), str(target))
    finally:
        await running.stop()

    assert not alive(pid)
    assert not mounted_at(target)
    assert kube_api.get_or_none("nodes", node) is None


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None


MOUNTED = "import os, sys; sys.exit(0 if os.stat(sys.argv[1]).st_ino == 1 else 1)"


@pytest.fixture
def sqlite_volume(tmp_path: Path) -> str:
    """A JuiceFS volume on SQLite metadata and local file storage, formatted with the real binary."""
    juicefs = str(Path(DEFAULT_BIN_DIRS[0]) / "juicefs")
    meta_url = f"sqlite3://{tmp_path / 'meta.db'}"
    subprocess.run(
        [juicefs, "format", "--storage", "file", "--bucket", f"{tmp_path / 'bucket'}/", meta_url, "vol"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return meta_url


@pytest.mark.mounts
async def test_a_juicefs_mount_pod_serves_files_at_the_mapped_host_path(
    kube_api: KubeAPI, kube_namespace: str, runner: PodRunner, sqlite_volume: str
) -> None:
    meta_url = sqlite_volume
    kube_api.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jfs"}, "stringData": {"metaurl": meta_url}},
        kube_namespace,
    )
    mount = container(
        "jfs-mount",
        [
            "juicefs",
            "mount",
            "--no-usage-report",
            "--cache-dir",
            "/var/jfsCache/vol",
            "--metrics",
            "127.0.0.1:0",
            "$(METAURL)",
            "/jfs/vol",
        ],
        env=[{"name": "METAURL", "valueFrom": {"secretKeyRef": {"name": "jfs", "key": "metaurl"}}}],
        volumeMounts=[
            {"name": "jfs-dir", "mountPath": "/jfs", "mountPropagation": "Bidirectional"},
            {"name": "cache", "mountPath": "/var/jfsCache"},
        ],
        readinessProbe={"exec": {"command": [PY, "-c", MOUNTED, "/jfs/vol"]}, "periodSeconds": 1},
        securityContext={"privileged": True},
    )
    kube_api.create(
        pod(
            "jfs-mount",
            runner.node_name,
            [mount],
            volumes=[host_volume("jfs-dir", "/var/lib/juicefs/volume"), host_volume("cache", "/var/jfsCache")],
        ),
        kube_namespace,
    )
    mount_point = runner.host_path_map("/var/lib/juicefs/volume") / "vol"

    await runner.wait_for_pod(kube_namespace, "jfs-mount", is_ready, timeout=60, what="mounted (Ready)")
    assert os.stat(mount_point).st_ino == 1
    assert any(m.mount_point == str(mount_point) and m.is_juicefs for m in read_mounts())
    (mount_point / "hello.txt").write_text("through the mount pod")
    assert (mount_point / "hello.txt").read_text() == "through the mount pod"
    assert f"Meta address: {meta_url}" in runner.log_text(kube_namespace, "jfs-mount", "jfs-mount")
    pid = runner.pid_of(kube_namespace, "jfs-mount", "jfs-mount")
    assert pid is not None
    assert len(group_members(pid)) >= 2, "juicefs' supervisor and its FUSE worker share the process group"

    kube_api.delete("pods", "jfs-mount", kube_namespace)
    await runner.wait_for_pod_gone(kube_namespace, "jfs-mount", timeout=30)
    assert not mounted_at(mount_point)
    assert group_members(pid) == []


if sys.platform != "linux":  # pragma: no cover - processes, /proc and FUSE
    pytest.skip("the pod runner needs Linux", allow_module_level=True)
