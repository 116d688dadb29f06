"""The mount pod and its Secret: exact dicts, no secret anywhere in the pod, no shell, patch precedence."""

from __future__ import annotations

import base64
import copy
import json
import textwrap
from collections.abc import Mapping
from typing import Any

import pytest

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.mountpod.config import GlobalConfig, MountPodPatch, parse_config, select_patch
from juicefs_csi.mountpod.names import reference_key
from juicefs_csi.mountpod.spec import (
    MountPodEnvironment,
    MountPodSettings,
    build_mount_pod,
    build_mount_secret,
    build_resources_without_requests,
    cache_mount_path,
    container_mount_point,
    go_duration,
    host_mount_point,
    mount_pod_settings,
    parse_environment,
)
from juicefs_csi.volume.settings import VolumeSettings, parse_volume_settings

META_PASSWORD = "meta-pw-Q1"
ACCESS_KEY = "AKIA-access-Q2"
SECRET_KEY = "secret-key-Q3"
SESSION_TOKEN = "session-token-Q4"
ENV_SECRET = "env-secret-Q5"
SECRET_VALUES = (META_PASSWORD, ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, ENV_SECRET)
SECRETS = {
    "name": "myjfs",
    "metaurl": f"redis://:{META_PASSWORD}@redis:6379/1",
    "storage": "s3",
    "bucket": "https://b.s3.amazonaws.com",
    "access-key": ACCESS_KEY,
    "secret-key": SECRET_KEY,
    "format-options": f"session-token={SESSION_TOKEN},trash-days=1",
    "envs": f'{{"MY_TOKEN": "{ENV_SECRET}"}}',
}
TARGET = "/var/lib/kubelet/pods/0d5c/volumes/kubernetes.io~csi/pvc-0a1b/mount"
UUID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
ENVIRONMENT = MountPodEnvironment()


def volume(
    secrets: Mapping[str, str] = SECRETS, context: Mapping[str, str] | None = None, flags: tuple[str, ...] = ()
) -> VolumeSettings:
    return parse_volume_settings("pvc-0a1b", secrets, context or {}, flags)


def settings(
    patch: MountPodPatch | None = None,
    *,
    context: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] = SECRETS,
    flags: tuple[str, ...] = (),
    pvc_annotations: Mapping[str, str] | None = None,
    environment: MountPodEnvironment = ENVIRONMENT,
    config: GlobalConfig | None = None,
    unique_id: str | None = None,
) -> MountPodSettings:
    return mount_pod_settings(
        volume(secrets, context, flags),
        volume_context=context or {},
        patch=patch or MountPodPatch(),
        environment=environment,
        config=config or GlobalConfig(),
        pvc_annotations=pvc_annotations,
        unique_id=unique_id,
    )


def patch_of(text: str) -> MountPodPatch:
    return select_patch(parse_config(textwrap.dedent(text)), {}, "data", "sc", {})


def pod_of(resolved: MountPodSettings, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"node": "node-1", "suffix": "abcdef", "upgrade_uuid": UUID, "targets": [TARGET]}
    args.update(overrides)
    return build_mount_pod(resolved, **args)


def container(pod: Mapping[str, Any], name: str = "jfs-mount") -> dict[str, Any]:
    spec = pod["spec"]
    found: dict[str, Any] = next(c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name)
    return found


def secret_ref(key: str) -> dict[str, Any]:
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": "juicefs-pvc-0a1b-secret", "key": key}}}


# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------


def test_environment_defaults() -> None:
    assert parse_environment({}) == MountPodEnvironment(
        namespace="kube-system",
        mount_root="/var/lib/juicefs/volume",
        ce_mount_image="juicedata/mount:ce-nightly",
        priority_class="system-node-critical",
        preemption_policy=None,
    )
    empty = {"JUICEFS_MOUNT_PRIORITY_NAME": "", "JUICEFS_MOUNT_NAMESPACE": ""}
    assert parse_environment(empty) == parse_environment({})


def test_environment_overrides() -> None:
    env = parse_environment(
        {
            "JUICEFS_MOUNT_NAMESPACE": "juicefs",
            "JUICEFS_MOUNT_PATH": "/data/juicefs/volume/",
            "JUICEFS_CE_MOUNT_IMAGE": "juicedata/mount:ce-v1.4.2",
            "JUICEFS_MOUNT_PRIORITY_NAME": "juicefs-mount-priority-nonpreempting",
            "JUICEFS_MOUNT_PREEMPTION_POLICY": "Never",
        }
    )
    assert env == MountPodEnvironment(
        "juicefs", "/data/juicefs/volume", "juicedata/mount:ce-v1.4.2", "juicefs-mount-priority-nonpreempting", "Never"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JUICEFS_MOUNT_NAMESPACE", "Kube_System"),
        ("JUICEFS_MOUNT_PATH", "relative/path"),
        ("JUICEFS_MOUNT_PATH", "/var/../etc"),
        ("JUICEFS_CE_MOUNT_IMAGE", "juicedata/mount ce"),
        ("JUICEFS_MOUNT_PRIORITY_NAME", "Not A Name"),
        ("JUICEFS_MOUNT_PREEMPTION_POLICY", "Sometimes"),
    ],
)
def test_environment_errors_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidArgument, match=name):
        parse_environment({name: value})


# --------------------------------------------------------------------------
# the whole pod, pinned
# --------------------------------------------------------------------------


def test_default_pod_exactly() -> None:
    resolved = settings(context={"mountOptions": "cache-size=100"})
    pod = pod_of(resolved)
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "juicefs-node-1-pvc-0a1b-abcdef",
            "namespace": "kube-system",
            "labels": {
                "app.kubernetes.io/name": "juicefs-mount",
                "volume-id": "pvc-0a1b",
                "juicefs-hash": resolved.hash,
                "juicefs-upgrade-uuid": UUID,
            },
            "annotations": {"juicefs-uniqueid": "pvc-0a1b", reference_key(TARGET): TARGET},
            "finalizers": ["juicefs.com/finalizer"],
        },
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 10,
            "priorityClassName": "system-node-critical",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "tolerations": [{"operator": "Exists"}],
            "nodeName": "node-1",
            "hostname": "pvc-0a1b",
            "initContainers": [
                {
                    "name": "jfs-format",
                    "image": "juicedata/mount:ce-nightly",
                    "command": [
                        "juicefs",
                        "format",
                        "--storage=s3",
                        "--bucket=https://b.s3.amazonaws.com",
                        "--trash-days=1",
                        "redis://redis:6379/1",
                        "myjfs",
                    ],
                    "env": [
                        secret_ref("MY_TOKEN"),
                        secret_ref("META_PASSWORD"),
                        secret_ref("ACCESS_KEY"),
                        secret_ref("SECRET_KEY"),
                        secret_ref("SESSION_TOKEN"),
                    ],
                    "resources": {
                        "limits": {"cpu": "5000m", "memory": "5Gi"},
                        "requests": {"cpu": "1000m", "memory": "1Gi"},
                    },
                }
            ],
            "containers": [
                {
                    "name": "jfs-mount",
                    "image": "juicedata/mount:ce-nightly",
                    "command": [
                        "juicefs",
                        "mount",
                        "--cache-dir=/var/jfsCache",
                        "--cache-size=100",
                        "--metrics=0.0.0.0:9567",
                        "--no-usage-report",
                        "redis://redis:6379/1",
                        "/jfs/pvc-0a1b-abcdef",
                    ],
                    "env": [
                        {"name": "JFS_FOREGROUND", "value": "1"},
                        {"name": "JFS_INSIDE_CONTAINER", "value": "1"},
                        secret_ref("MY_TOKEN"),
                        secret_ref("META_PASSWORD"),
                    ],
                    "resources": {
                        "limits": {"cpu": "5000m", "memory": "5Gi"},
                        "requests": {"cpu": "1000m", "memory": "1Gi"},
                    },
                    "securityContext": {"privileged": True, "runAsUser": 0},
                    "ports": [{"name": "metrics", "containerPort": 9567}],
                    "volumeMounts": [
                        {"name": "jfs-dir", "mountPath": "/jfs", "mountPropagation": "Bidirectional"},
                        {"name": "cachedir-0", "mountPath": "/var/jfsCache"},
                    ],
                }
            ],
            "volumes": [
                {"name": "jfs-dir", "hostPath": {"path": "/var/lib/juicefs/volume", "type": "DirectoryOrCreate"}},
                {"name": "cachedir-0", "hostPath": {"path": "/var/jfsCache", "type": "DirectoryOrCreate"}},
            ],
        },
    }


def test_no_secret_value_anywhere_in_the_pod() -> None:
    patch = patch_of(
        """
        mountPodPatch:
          - env: [{name: EXTRA, value: "plain"}]
            lifecycle:
              preStop:
                exec: {command: [sh, -c, "umount -l ${MOUNT_POINT}"]}
        """
    )
    pod = pod_of(settings(patch, context={"mountOptions": "writeback"}))
    text = json.dumps(pod)
    for value in SECRET_VALUES:
        assert value not in text
    assert "redis://redis:6379/1" in text


def test_secret_holds_exactly_what_the_pod_references() -> None:
    resolved = settings()
    pod = pod_of(resolved)
    secret = build_mount_secret(resolved)
    refs = {
        var["valueFrom"]["secretKeyRef"]["key"]
        for name in ("jfs-format", "jfs-mount")
        for var in container(pod, name)["env"]
        if "valueFrom" in var
    }
    assert refs == set(secret["data"])
    assert all(
        var["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
        for var in container(pod)["env"]
        if "valueFrom" in var
    )


def test_no_shell_in_any_container() -> None:
    pod = pod_of(settings())
    for name in ("jfs-format", "jfs-mount"):
        command = container(pod, name)["command"]
        assert command[0] == "juicefs"
        assert "sh" not in command and "-c" not in command
        assert "args" not in container(pod, name)


def test_volume_without_storage_has_no_format_step() -> None:
    secrets = {"name": "myjfs", "metaurl": f"redis://:{META_PASSWORD}@redis:6379/1"}
    resolved = settings(secrets=secrets)
    pod = pod_of(resolved)
    assert "initContainers" not in pod["spec"]
    assert container(pod)["env"][2:] == [secret_ref("META_PASSWORD")]
    assert set(build_mount_secret(resolved)["data"]) == {"META_PASSWORD"}


def test_volume_without_password_references_nothing() -> None:
    pod = pod_of(settings(secrets={"name": "myjfs", "metaurl": "redis://redis:6379/1"}))
    assert container(pod)["env"] == [
        {"name": "JFS_FOREGROUND", "value": "1"},
        {"name": "JFS_INSIDE_CONTAINER", "value": "1"},
    ]


def test_partial_storage_secret_formats_with_no_update() -> None:
    secrets = {"name": "myjfs", "metaurl": "redis://redis:6379/1", "storage": "file"}
    command = container(pod_of(settings(secrets=secrets)), "jfs-format")["command"]
    assert command == ["juicefs", "format", "--no-update", "--storage=file", "redis://redis:6379/1", "myjfs"]


def test_mount_points() -> None:
    assert container_mount_point("pvc-0a1b", "abcdef") == "/jfs/pvc-0a1b-abcdef"
    env = MountPodEnvironment(mount_root="/data/jfs")
    assert host_mount_point(env, "pvc-0a1b", "abcdef") == "/data/jfs/pvc-0a1b-abcdef"


# --------------------------------------------------------------------------
# image
# --------------------------------------------------------------------------


def test_image_precedence_attribute_then_patch_then_env_then_default() -> None:
    env = MountPodEnvironment(ce_mount_image="env/mount:ce-1")
    patch = MountPodPatch(ce_mount_image="patch/mount:ce-2")
    attr = {"juicefs/mount-image": "attr/mount:ce-3"}
    assert settings().image == "juicedata/mount:ce-nightly"
    assert settings(environment=env).image == "env/mount:ce-1"
    assert settings(patch, environment=env).image == "patch/mount:ce-2"
    assert settings(patch, context=attr, environment=env).image == "attr/mount:ce-3"
    assert container(pod_of(settings(patch, context=attr)))["image"] == "attr/mount:ce-3"


def test_bad_image_attribute_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="juicefs/mount-image"):
        settings(context={"juicefs/mount-image": "a b"})


def test_enterprise_image_warns() -> None:
    warnings = settings(context={"juicefs/mount-image": "registry:5000/juicedata/mount:ee-5.1.0"}).warnings
    assert any("enterprise-edition" in warning for warning in warnings)
    assert settings(context={"juicefs/mount-image": "registry:5000/mount"}).warnings == ()


# --------------------------------------------------------------------------
# resources
# --------------------------------------------------------------------------


def resources_of(**kwargs: Any) -> Any:
    return container(pod_of(settings(**kwargs)))["resources"]


def test_resources_from_volume_attributes() -> None:
    context = {
        "juicefs/mount-cpu-limit": "2",
        "juicefs/mount-memory-limit": "8Gi",
        "juicefs/mount-cpu-request": "500m",
        "juicefs/mount-memory-request": "2Gi",
    }
    assert resources_of(context=context) == {
        "limits": {"cpu": "2", "memory": "8Gi"},
        "requests": {"cpu": "500m", "memory": "2Gi"},
    }


def test_pvc_annotation_wins_over_attribute() -> None:
    got = resources_of(
        context={"juicefs/mount-memory-limit": "8Gi"}, pvc_annotations={"juicefs/mount-memory-limit": "3Gi"}
    )
    assert got["limits"]["memory"] == "3Gi"


def test_only_resource_keys_are_read_from_pvc_annotations() -> None:
    resolved = settings(pvc_annotations={"juicefs/mount-image": "evil/image", "juicefs/clean-cache": "true"})
    assert resolved.image == "juicedata/mount:ce-nightly"
    assert resolved.clean_cache is False


def test_zero_or_negative_limit_drops_it_negative_request_drops_it() -> None:
    got = resources_of(
        context={
            "juicefs/mount-cpu-limit": "0",
            "juicefs/mount-memory-limit": "-1",
            "juicefs/mount-cpu-request": "-1",
            "juicefs/mount-memory-request": "0",
        }
    )
    assert got == {"requests": {"memory": "0"}}


def test_patch_resources_win_over_attributes_per_key() -> None:
    patch = MountPodPatch(resources={"limits": {"memory": "10Gi"}, "requests": {"cpu": "-1"}})
    got = resources_of(patch=patch, context={"juicefs/mount-memory-limit": "8Gi", "juicefs/mount-cpu-limit": "3"})
    assert got == {"limits": {"cpu": "3", "memory": "10Gi"}, "requests": {"memory": "1Gi"}}


def test_request_above_limit_is_lowered_with_a_warning() -> None:
    resolved = settings(context={"juicefs/mount-memory-limit": "512Mi"})
    assert resolved.resources["requests"]["memory"] == "512Mi"
    assert any("memory request 1Gi is above its limit 512Mi" in warning for warning in resolved.warnings)


def test_bad_resource_attribute_names_the_key() -> None:
    with pytest.raises(InvalidArgument, match=r"'juicefs/mount-cpu-limit' '2 cores' is not a Kubernetes quantity"):
        settings(context={"juicefs/mount-cpu-limit": "2 cores"})


# --------------------------------------------------------------------------
# cache dirs
# --------------------------------------------------------------------------


def cache_view(pod: Mapping[str, Any]) -> tuple[list[Any], list[Any], str]:
    volumes = [v for v in pod["spec"]["volumes"] if v["name"].startswith("cachedir-")]
    mounts = [m for m in container(pod)["volumeMounts"] if m["name"].startswith("cachedir-")]
    option = next(arg for arg in container(pod)["command"] if arg.startswith("--cache-dir="))
    return volumes, mounts, option


def test_cache_dir_option_paths_become_host_volumes() -> None:
    volumes, mounts, option = cache_view(pod_of(settings(context={"mountOptions": "cache-dir=/a:memory:/b:/a"})))
    assert volumes == [
        {"name": "cachedir-0", "hostPath": {"path": "/a", "type": "DirectoryOrCreate"}},
        {"name": "cachedir-1", "hostPath": {"path": "/b", "type": "DirectoryOrCreate"}},
    ]
    assert mounts == [{"name": "cachedir-0", "mountPath": "/a"}, {"name": "cachedir-1", "mountPath": "/b"}]
    assert option == "--cache-dir=/a:memory:/b:/a"


def test_memory_cache_has_no_volume() -> None:
    volumes, _, option = cache_view(pod_of(settings(context={"mountOptions": "cache-dir=memory"})))
    assert volumes == []
    assert option == "--cache-dir=memory"


@pytest.mark.parametrize(("options", "problem"), [("cache-dir=/data*/jfs", "wildcards"), ("cache-dir=/jfs/c", "/jfs")])
def test_unmappable_cache_dirs_are_rejected(options: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        settings(context={"mountOptions": options})


def test_patch_cache_dirs_replace_the_option() -> None:
    patch = patch_of(
        """
        mountPodPatch:
          - cacheDirs:
              - {type: HostPath, path: /mnt/nvme}
              - {type: PVC, name: jfs-cache}
              - {type: EmptyDir, medium: Memory, sizeLimit: 1Gi}
              - {type: Ephemeral, storageClassName: local, storage: 10Gi}
        """
    )
    resolved = settings(patch, context={"mountOptions": "cache-dir=/ignored"})
    volumes, mounts, option = cache_view(pod_of(resolved))
    assert volumes == [
        {"name": "cachedir-0", "hostPath": {"path": "/mnt/nvme", "type": "DirectoryOrCreate"}},
        {"name": "cachedir-1", "persistentVolumeClaim": {"claimName": "jfs-cache"}},
        {"name": "cachedir-2", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {
            "name": "cachedir-3",
            "ephemeral": {
                "volumeClaimTemplate": {
                    "metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Gi"}},
                        "storageClassName": "local",
                    },
                }
            },
        },
    ]
    assert [m["mountPath"] for m in mounts] == [
        "/mnt/nvme",
        "/var/jfsCache-1",
        "/var/jfsCache-emptyDir-2",
        "/var/jfsCache-ephemeral-3",
    ]
    assert option == "--cache-dir=/mnt/nvme:/var/jfsCache-1:/var/jfsCache-emptyDir-2:/var/jfsCache-ephemeral-3"
    assert [cache_mount_path(i, c) for i, c in enumerate(resolved.cache_dirs)] == [m["mountPath"] for m in mounts]


def test_ephemeral_cache_has_no_selected_node_when_the_scheduler_places_the_pod() -> None:
    patch = patch_of("mountPodPatch:\n  - cacheDirs: [{type: Ephemeral, storage: 1Gi}]\n")
    pod = pod_of(settings(patch, config=GlobalConfig(enable_node_selector=True)))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "cachedir-0")
    assert volume == {
        "name": "cachedir-0",
        "ephemeral": {
            "volumeClaimTemplate": {
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }
        },
    }


def test_templated_cache_path_is_filled_and_checked() -> None:
    patch = patch_of("mountPodPatch:\n  - cacheDirs: [{type: HostPath, path: '/cache/${VOLUME_ID}'}]\n")
    assert settings(patch).cache_dirs[0].path == "/cache/pvc-0a1b"


# --------------------------------------------------------------------------
# mount options and warnings
# --------------------------------------------------------------------------


def test_patch_mount_options_override_the_volumes() -> None:
    patch = MountPodPatch(mount_options=("cache-size=200", "buffer-size=300"))
    resolved = settings(patch, context={"mountOptions": "cache-size=100,free-space-ratio=0.2"}, flags=("allow_other",))
    command = container(pod_of(resolved))["command"]
    assert command[2:-2] == [
        "--buffer-size=300",
        "--cache-dir=/var/jfsCache",
        "--cache-size=200",
        "--free-space-ratio=0.2",
        "--metrics=0.0.0.0:9567",
        "--no-usage-report",
        "-o",
        "allow_other",
    ]


def test_templated_patch_mount_option_is_filled() -> None:
    patch = patch_of("mountPodPatch:\n  - mountOptions: ['subdir=/${VOLUME_ID}']\n")
    assert settings(patch).volume.options.get("subdir") == "/pvc-0a1b"


def test_writeback_warns() -> None:
    warnings = settings(context={"mountOptions": "writeback"}).warnings
    assert len(warnings) == 1
    assert warnings[0].startswith("mount option writeback:")
    assert settings().warnings == ()


def test_writeback_on_a_cache_deleted_with_the_pod_warns_more() -> None:
    patch = patch_of("mountPodPatch:\n  - cacheDirs: [{type: EmptyDir}, {type: HostPath, path: /c}]\n")
    warnings = settings(patch, context={"mountOptions": "writeback"}).warnings
    assert len(warnings) == 2
    assert "cache directory 0 of type EmptyDir" in warnings[1]


def test_secret_envs_shadowed_by_driver_or_patch_warn_and_are_not_referenced() -> None:
    secrets = {**SECRETS, "envs": '{"JFS_FOREGROUND": "0", "MY_TOKEN": "x"}'}
    patch = MountPodPatch(env=({"name": "MY_TOKEN", "value": "from-patch"},))
    resolved = settings(patch, secrets=secrets)
    assert resolved.warnings == (
        "secret envs: JFS_FOREGROUND is set by the driver; the Secret's value is ignored",
        "secret envs: MY_TOKEN is overridden by a mountPodPatch env entry",
    )
    env = container(pod_of(resolved))["env"]
    assert env == [
        {"name": "JFS_FOREGROUND", "value": "1"},
        {"name": "JFS_INSIDE_CONTAINER", "value": "1"},
        secret_ref("META_PASSWORD"),
        {"name": "MY_TOKEN", "value": "from-patch"},
    ]
    assert "JFS_FOREGROUND" not in build_mount_secret(resolved)["data"]


# --------------------------------------------------------------------------
# metrics, network, placement
# --------------------------------------------------------------------------


def test_custom_metrics_address_sets_the_port() -> None:
    mount = container(pod_of(settings(context={"mountOptions": "metrics=0.0.0.0:9999"})))
    assert "--metrics=0.0.0.0:9999" in mount["command"]
    assert mount["ports"] == [{"name": "metrics", "containerPort": 9999}]


def test_host_network_pods_declare_no_port_and_let_the_client_pick_one() -> None:
    pod = pod_of(settings(MountPodPatch(host_network=True)))
    mount = container(pod)
    assert "--metrics=0.0.0.0:0" in mount["command"]
    assert "ports" not in mount
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "hostname" not in pod["spec"]


def test_explicit_dns_policy_wins_on_host_network() -> None:
    pod = pod_of(settings(MountPodPatch(host_network=True, dns_policy="Default")))
    assert pod["spec"]["dnsPolicy"] == "Default"


def test_node_selector_mode() -> None:
    pod = pod_of(settings(config=GlobalConfig(enable_node_selector=True)))
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    assert "nodeName" not in pod["spec"]


def test_priority_and_preemption_from_environment() -> None:
    env = MountPodEnvironment(priority_class="juicefs-mount-priority-nonpreempting", preemption_policy="Never")
    spec = pod_of(settings(environment=env))["spec"]
    assert spec["priorityClassName"] == "juicefs-mount-priority-nonpreempting"
    assert spec["preemptionPolicy"] == "Never"
    assert "preemptionPolicy" not in pod_of(settings())["spec"]


def test_namespace_and_mount_root_from_environment() -> None:
    env = MountPodEnvironment(namespace="juicefs", mount_root="/data/jfs")
    pod = pod_of(settings(environment=env))
    assert pod["metadata"]["namespace"] == "juicefs"
    assert pod["spec"]["volumes"][0] == {
        "name": "jfs-dir",
        "hostPath": {"path": "/data/jfs", "type": "DirectoryOrCreate"},
    }
    assert container(pod)["command"][-1] == "/jfs/pvc-0a1b-abcdef"


def test_hostname_key_podname_leaves_the_hostname_to_kubernetes() -> None:
    assert "hostname" not in pod_of(settings(MountPodPatch(hostname_key="podname")))["spec"]
    assert pod_of(settings(MountPodPatch(hostname_key="volumeid")))["spec"]["hostname"] == "pvc-0a1b"


def test_long_unique_id_still_gives_valid_names() -> None:
    unique_id = "Static_Volume." + "x" * 100
    pod = pod_of(settings(unique_id=unique_id))
    assert len(pod["metadata"]["name"]) <= 63
    assert len(pod["metadata"]["labels"]["volume-id"]) <= 63
    assert len(pod["spec"]["hostname"]) <= 63
    assert pod["metadata"]["annotations"]["juicefs-uniqueid"] == unique_id


# --------------------------------------------------------------------------
# patch application
# --------------------------------------------------------------------------

FULL_PATCH = """
mountPodPatch:
  - imagePullPolicy: IfNotPresent
    labels: {team: storage}
    annotations: {note: "for ${VOLUME_ID}", juicefs-delete-delay: 5m}
    hostPID: true
    dnsPolicy: None
    dnsConfig: {nameservers: [10.0.0.10]}
    terminationGracePeriodSeconds: 600
    livenessProbe:
      exec: {command: [stat, "${MOUNT_POINT}"]}
      periodSeconds: 5
    readinessProbe:
      exec: {command: [stat, "${MOUNT_POINT}/${SUB_PATH}"]}
    startupProbe:
      httpGet: {path: /metrics, port: 9567}
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "umount -l ${MOUNT_POINT}; rmdir ${MOUNT_POINT}"]}
    volumes:
      - {name: gc-secret, secret: {secretName: gc-secret}}
    volumeMounts:
      - {name: gc-secret, mountPath: /root/.config/gcloud}
    env:
      - {name: GOOGLE_APPLICATION_CREDENTIALS, value: /root/.config/gcloud/key.json}
"""


def test_every_patch_field_reaches_the_pod() -> None:
    resolved = settings(patch_of(FULL_PATCH), context={"subPath": "data"})
    pod = pod_of(resolved)
    spec, mount = pod["spec"], container(pod)
    assert pod["metadata"]["labels"]["team"] == "storage"
    assert pod["metadata"]["annotations"]["note"] == "for pvc-0a1b"
    assert pod["metadata"]["annotations"]["juicefs-delete-delay"] == "5m"
    assert spec["hostPID"] is True
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"] == {"nameservers": ["10.0.0.10"]}
    assert spec["terminationGracePeriodSeconds"] == 600
    assert mount["imagePullPolicy"] == "IfNotPresent"
    assert container(pod, "jfs-format")["imagePullPolicy"] == "IfNotPresent"
    assert mount["livenessProbe"] == {"exec": {"command": ["stat", "/jfs/pvc-0a1b-abcdef"]}, "periodSeconds": 5}
    assert mount["readinessProbe"] == {"exec": {"command": ["stat", "/jfs/pvc-0a1b-abcdef/data"]}}
    assert mount["startupProbe"] == {"httpGet": {"path": "/metrics", "port": 9567}}
    assert mount["lifecycle"] == {
        "preStop": {"exec": {"command": ["sh", "-c", "umount -l /jfs/pvc-0a1b-abcdef; rmdir /jfs/pvc-0a1b-abcdef"]}}
    }
    assert spec["volumes"][-1] == {"name": "gc-secret", "secret": {"secretName": "gc-secret"}}
    assert mount["volumeMounts"][-1] == {"name": "gc-secret", "mountPath": "/root/.config/gcloud"}
    assert mount["env"][-1] == {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/root/.config/gcloud/key.json"}


def test_driver_labels_and_annotations_win_over_the_patch() -> None:
    """Config parsing refuses reserved keys; the builder still writes its own last."""
    patch = MountPodPatch(labels={"volume-id": "x"}, annotations={"juicefs-uniqueid": "x"})
    pod = pod_of(settings(patch))
    assert pod["metadata"]["labels"]["volume-id"] == "pvc-0a1b"
    assert pod["metadata"]["annotations"]["juicefs-uniqueid"] == "pvc-0a1b"


def test_pod_does_not_share_objects_with_the_config() -> None:
    resolved = settings(patch_of(FULL_PATCH))
    before = copy.deepcopy(resolved.patch)
    pod = pod_of(resolved)
    container(pod)["lifecycle"]["preStop"]["exec"]["command"].append("x")
    container(pod)["env"][-1]["value"] = "changed"
    pod["spec"]["volumes"][-1]["secret"]["secretName"] = "changed"
    container(pod, "jfs-format")["resources"]["limits"]["cpu"] = "1"
    assert resolved.patch == before
    assert container(pod)["resources"]["limits"]["cpu"] == "5000m"


# --------------------------------------------------------------------------
# annotations and labels
# --------------------------------------------------------------------------


def test_delete_delay_clean_cache_fs_uuid_and_references() -> None:
    context = {"juicefs/mount-delete-delay": "1m30s", "juicefs/clean-cache": "true"}
    targets = [TARGET, "/var/lib/kubelet/pods/other/volumes/kubernetes.io~csi/pvc-0a1b/mount"]
    pod = pod_of(settings(context=context), targets=targets, fs_uuid="7c3e-uuid")
    assert pod["metadata"]["annotations"] == {
        "juicefs-uniqueid": "pvc-0a1b",
        "juicefs-uuid": "7c3e-uuid",
        "juicefs-delete-delay": "90s",
        "juicefs-clean-cache": "true",
        reference_key(targets[0]): targets[0],
        reference_key(targets[1]): targets[1],
    }


def test_volume_delete_delay_wins_over_patch_annotation() -> None:
    patch = MountPodPatch(annotations={"juicefs-delete-delay": "5m"})
    pod = pod_of(settings(patch, context={"juicefs/mount-delete-delay": "10s"}))
    assert pod["metadata"]["annotations"]["juicefs-delete-delay"] == "10s"


@pytest.mark.parametrize(("seconds", "text"), [(90.0, "90s"), (1.5, "1.5s"), (0.00001, "0.00001s"), (3600.0, "3600s")])
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


@pytest.mark.parametrize("bad", ["", "not a uuid", "x" * 64])
def test_upgrade_uuid_must_be_a_label_value(bad: str) -> None:
    with pytest.raises(ValueError, match="upgrade_uuid"):
        pod_of(settings(), upgrade_uuid=bad)


# --------------------------------------------------------------------------
# settings hash
# --------------------------------------------------------------------------


def test_hash_is_the_same_for_equal_settings_and_independent_of_the_pod_instance() -> None:
    first, second = settings(), settings()
    assert first.hash == second.hash
    pods = [pod_of(first), pod_of(first, node="node-2", suffix="zyxwvu", upgrade_uuid="other", targets=[])]
    assert {pod["metadata"]["labels"]["juicefs-hash"] for pod in pods} == {first.hash}


@pytest.mark.parametrize(
    "change",
    [
        {"context": {"juicefs/mount-image": "juicedata/mount:ce-v1.4.2"}},
        {"context": {"juicefs/mount-memory-limit": "6Gi"}},
        {"context": {"mountOptions": "cache-size=1"}},
        {"context": {"juicefs/clean-cache": "true"}},
        {"context": {"juicefs/mount-delete-delay": "1m"}},
        {"patch": MountPodPatch(labels={"a": "b"})},
        {"patch": MountPodPatch(host_network=True)},
        {"patch": MountPodPatch(mount_options=("writeback",))},
        {"environment": MountPodEnvironment(namespace="juicefs")},
        {"environment": MountPodEnvironment(mount_root="/data/jfs")},
        {"environment": MountPodEnvironment(priority_class="other")},
        {"environment": MountPodEnvironment(preemption_policy="Never")},
        {"config": GlobalConfig(enable_node_selector=True)},
        {"secrets": {**SECRETS, "secret-key": "rotated"}},
        {"unique_id": "shared"},
    ],
)
def test_hash_changes_with_anything_that_changes_the_pod(change: dict[str, Any]) -> None:
    assert settings(**change).hash != settings().hash


def test_sub_path_changes_the_hash_only_through_templates() -> None:
    assert settings(context={"subPath": "a"}).hash == settings(context={"subPath": "b"}).hash
    patch = patch_of("mountPodPatch:\n  - readinessProbe: {exec: {command: [stat, '${MOUNT_POINT}/${SUB_PATH}']}}\n")
    assert settings(patch, context={"subPath": "a"}).hash != settings(patch, context={"subPath": "b"}).hash


def test_config_switches_that_do_not_shape_the_pod_keep_the_hash() -> None:
    assert settings(config=GlobalConfig(enable_set_quota=False)).hash == settings().hash


# --------------------------------------------------------------------------
# the Secret
# --------------------------------------------------------------------------


def test_secret_exactly() -> None:
    secret = build_mount_secret(settings(), pv_name="pvc-0a1b", pv_uid="6f1c-uid")
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == {
        "MY_TOKEN": ENV_SECRET,
        "META_PASSWORD": META_PASSWORD,
        "ACCESS_KEY": ACCESS_KEY,
        "SECRET_KEY": SECRET_KEY,
        "SESSION_TOKEN": SESSION_TOKEN,
    }
    assert {key: value for key, value in secret.items() if key != "data"} == {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "juicefs-pvc-0a1b-secret",
            "namespace": "kube-system",
            "labels": {"juicefs/secret": "true"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "PersistentVolume", "name": "pvc-0a1b", "uid": "6f1c-uid"}
            ],
        },
    }


def test_secret_without_pv_has_no_owner() -> None:
    assert "ownerReferences" not in build_mount_secret(settings())["metadata"]
    with pytest.raises(ValueError, match="PV's name"):
        build_mount_secret(settings(), pv_uid="6f1c-uid")


# --------------------------------------------------------------------------
# recreate without requests
# --------------------------------------------------------------------------


def test_resources_without_requests() -> None:
    live = pod_of(settings())
    live["metadata"].update({"uid": "u", "resourceVersion": "7", "creationTimestamp": "t", "managedFields": []})
    live["status"] = {"phase": "Failed", "reason": "OutOfcpu"}
    live["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2", "memory": "4Gi"}}
    original = copy.deepcopy(live)
    fresh = build_resources_without_requests(live)
    assert live == original
    assert "status" not in fresh
    assert set(fresh["metadata"]) == {"name", "namespace", "labels", "annotations", "finalizers"}
    assert container(fresh)["resources"] == {
        "limits": {"cpu": "2", "memory": "4Gi"},
        "requests": {"cpu": "0", "memory": "0"},
    }
    assert container(fresh, "jfs-format")["resources"] == {
        "limits": {"cpu": "5000m", "memory": "5Gi"},
        "requests": {"cpu": "0", "memory": "0"},
    }
    assert fresh["spec"]["volumes"] == live["spec"]["volumes"]


def test_resources_without_requests_leaves_unconstrained_containers_alone() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    assert build_resources_without_requests(pod) == pod
