"""Publish-time decisions of mount pod mode: whose publish it is (podInfoOnMount or the pod cache), and
the per-volume input checks whose errors end up in an Event on that pod."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import pytest

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.mountpod.config import ConfigError, GlobalConfig, parse_config, select_patch
from juicefs_csi.mountpod.spec import MountPodEnvironment, MountPodSettings, mount_pod_settings
from juicefs_csi.node.app_pod import POD_NAME, POD_NAMESPACE, POD_UID, AppPod, Lookup, from_context, resolve_app_pod
from juicefs_csi.volume.settings import parse_volume_settings

UID = "0d5c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
TARGET = f"/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/pv-a/mount"
DRIVER = "csi.juicefs.com"
CONTEXT = {POD_NAME: "web-0", POD_NAMESPACE: "shop", POD_UID: UID}
CACHED = AppPod("shop", "web-0", UID)


def resolve(
    context: Mapping[str, str] = {},
    target: str = TARGET,
    cache: Mapping[str, AppPod] | None = None,
    *,
    synced: bool = True,
    waited: bool = False,
) -> Lookup:
    return resolve_app_pod(context, target, (cache or {}).get, cache_synced=synced, waited=waited, driver_name=DRIVER)


# --- whose publish: the decision -------------------------------------------------------------------


def test_pod_info_on_mount_context_wins_without_looking_at_the_cache() -> None:
    def no_cache(uid: str) -> AppPod | None:
        raise AssertionError("the cache must not be consulted when the context names the pod")

    found = resolve_app_pod(CONTEXT, TARGET, no_cache, cache_synced=False, waited=False, driver_name=DRIVER)
    assert found.pod == AppPod("shop", "web-0", UID) and not found.error and not found.wait_for_uid


def test_context_without_a_uid_still_names_the_pod() -> None:
    assert from_context({POD_NAME: "web-0", POD_NAMESPACE: "shop"}) == AppPod("shop", "web-0", "")
    assert from_context({POD_NAME: "web-0"}) is None  # a name without a namespace is no identity
    assert from_context({POD_NAME: " ", POD_NAMESPACE: "shop"}) is None


def test_the_cache_answers_by_the_uid_in_the_target_path() -> None:
    found = resolve(cache={UID: CACHED})
    assert found.pod == CACHED


def test_a_uid_in_the_context_is_looked_up_even_for_a_target_outside_the_kubelet_layout() -> None:
    found = resolve({POD_UID: UID}, "/mnt/elsewhere/target", {UID: CACHED})
    assert found.pod == CACHED


def test_a_cache_miss_waits_on_the_cache_first_lagging_is_not_an_error() -> None:
    for synced in (True, False):
        found = resolve(synced=synced)
        assert found.wait_for_uid == UID and found.pod is None and not found.error


def test_a_miss_after_the_wait_fails_and_says_to_enable_pod_info_on_mount() -> None:
    found = resolve(waited=True)
    assert found.pod is None and not found.wait_for_uid
    error = found.error
    assert f"pod {UID} is not among this node's pods" in error
    assert f"enable `podInfoOnMount: true` on the CSIDriver object {DRIVER}" in error
    assert POD_NAME in error


def test_an_unavailable_pod_list_is_named_as_the_reason() -> None:
    error = resolve(synced=False, waited=True).error
    assert "this node's pod list is not available" in error and "podInfoOnMount: true" in error


def test_a_target_outside_the_kubelet_layout_without_context_fails_at_once() -> None:
    found = resolve(target="/mnt/elsewhere/target")
    assert found.pod is None and not found.wait_for_uid
    assert "not in the kubelet's pods/<uid>/volumes layout" in found.error
    assert "podInfoOnMount: true" in found.error


# --- per-volume input checks -----------------------------------------------------------------------

SECRETS = {"name": "myjfs", "metaurl": "redis://:pw-Q1@redis:6379/1"}


def settings(
    config_text: str,
    context: Mapping[str, str] | None = None,
    *,
    secrets: Mapping[str, str] = SECRETS,
    annotations: Mapping[str, str] | None = None,
) -> MountPodSettings:
    context = dict(context or {})
    patch = select_patch(parse_config(textwrap.dedent(config_text)), {}, "data", None, {})
    return mount_pod_settings(
        parse_volume_settings("pv-a", secrets, context, []),
        volume_context=context,
        patch=patch,
        environment=MountPodEnvironment(),
        config=GlobalConfig(),
        pvc_annotations=annotations,
    )


PATCH_AT_CACHE = """
mountPodPatch:
  - volumes: [{name: scratch, emptyDir: {}}]
    volumeMounts: [{name: scratch, mountPath: /data/cache}]
"""


def test_a_patch_mount_on_this_volumes_cache_directory_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument) as raised:
        settings(PATCH_AT_CACHE, {"mountOptions": "cache-dir=/data/cache"})
    message = raised.value.message
    assert "mountPodPatch volumeMounts[0] ('scratch') mountPath '/data/cache'" in message
    assert "cache directory /data/cache (volume cachedir-0)" in message
    settings(PATCH_AT_CACHE)  # another volume (default cache dir) takes the same patch


def test_a_template_that_fills_a_mount_path_under_jfs_is_refused() -> None:
    text = """
    mountPodPatch:
      - volumes: [{name: logs, emptyDir: {}}]
        volumeMounts: [{name: logs, mountPath: "/${VOLUME_NAME}/logs"}]
    """
    with pytest.raises(InvalidArgument, match=r"mountPath '/jfs/logs' is at or under /jfs"):
        settings(text, secrets={**SECRETS, "name": "jfs"})
    settings(text)  # /myjfs/logs for the usual name


def test_two_mounts_at_one_path_in_a_patch_item_make_the_config_invalid() -> None:
    text = """
    mountPodPatch:
      - volumes: [{name: a, emptyDir: {}}, {name: b, emptyDir: {}}]
        volumeMounts: [{name: a, mountPath: /x}, {name: b, mountPath: /x/}]
    """
    with pytest.raises(ConfigError, match=r"mountPodPatch\[0\]\.volumeMounts\[1\]\.mountPath: duplicate mountPath"):
        parse_config(textwrap.dedent(text))


def test_resource_errors_name_where_the_value_came_from() -> None:
    with pytest.raises(InvalidArgument, match=r"^volume attribute 'juicefs/mount-cpu-limit' 'lots' is not a Kube"):
        settings("", {"juicefs/mount-cpu-limit": "lots"})
    with pytest.raises(InvalidArgument, match=r"^PVC annotation 'juicefs/mount-memory-request' '1 GB' is not a Kube"):
        settings("", {"juicefs/mount-memory-request": "1Gi"}, annotations={"juicefs/mount-memory-request": "1 GB"})
