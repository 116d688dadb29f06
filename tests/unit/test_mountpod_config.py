"""The global ConfigMap: switches, mountPodPatch validation, selectors, merge order and templates."""

from __future__ import annotations

import textwrap
from fractions import Fraction
from typing import Any

import pytest
import yaml

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.mountpod.config import (
    CacheDir,
    ConfigError,
    GlobalConfig,
    LabelSelector,
    MountPodPatch,
    PVCSelector,
    Requirement,
    fill_templates,
    merge_mount_options,
    parse_config,
    parse_quantity,
    select_patch,
)


def config(text: str) -> GlobalConfig:
    return parse_config(textwrap.dedent(text))


def item(**fields: Any) -> GlobalConfig:
    """A config with one mountPodPatch item, written as the YAML a user would write."""
    return parse_config(yaml.safe_dump({"mountPodPatch": [fields]}))


def item_error(**fields: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        item(**fields)
    return caught.value


def only(parsed: GlobalConfig) -> MountPodPatch:
    assert len(parsed.mount_pod_patch) == 1
    return parsed.mount_pod_patch[0]


# --------------------------------------------------------------------------
# switches
# --------------------------------------------------------------------------


def test_empty_config_is_the_go_defaults() -> None:
    for text in ("", "  \n", "# only a comment\n"):
        parsed = parse_config(text)
        assert parsed == GlobalConfig()
    defaults = GlobalConfig()
    assert defaults.enable_node_selector is False
    assert defaults.enable_native_sidecar is False
    assert defaults.enable_set_quota is True
    assert defaults.enable_controller_set_quota is True
    assert defaults.enable_auto_remove_request_resources is True
    assert defaults.enable_auto_abort_stuck_mount_pod is True
    assert defaults.enable_lazy_umount_target is True
    assert defaults.enable_kubelet_list_mount_pod is False
    assert defaults.mount_pod_patch == ()


def test_every_switch_parses() -> None:
    parsed = config(
        """
        enableNodeSelector: true
        enableNativeSidecar: true
        enableSetQuota: false
        enableControllerSetQuota: false
        enableAutoRemoveRequestResources: false
        enableAutoAbortStuckMountPod: false
        enableLazyUmountTarget: false
        enableKubeletListMountPod: true
        mountPodPatch: []
        """
    )
    assert parsed == GlobalConfig(
        enable_node_selector=True,
        enable_native_sidecar=True,
        enable_set_quota=False,
        enable_controller_set_quota=False,
        enable_auto_remove_request_resources=False,
        enable_auto_abort_stuck_mount_pod=False,
        enable_lazy_umount_target=False,
        enable_kubelet_list_mount_pod=True,
    )


def test_switch_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"enableNodeSelector: must be true or false, got str"):
        config('enableNodeSelector: "true"')


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"enableNodeSelecter: is not a supported field"):
        config("enableNodeSelecter: true")


def test_invalid_yaml_says_where() -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2, column 14: mapping values are not allowed here"):
        config("mountPodPatch:\n  - labels: a: b\n")


def test_document_must_be_a_map() -> None:
    with pytest.raises(ConfigError, match=r"must be a map, got list"):
        config("- a\n- b\n")


def test_config_error_is_invalid_argument_and_names_item_and_field() -> None:
    with pytest.raises(ConfigError) as caught:
        config(
            """
            mountPodPatch:
              - labels: {ok: "yes"}
              - env:
                  - name: GOOD
                    value: "1"
                  - name: 1BAD
                    value: "2"
            """
        )
    error = caught.value
    assert isinstance(error, InvalidArgument)
    assert error.path == "mountPodPatch[1].env[1].name"
    assert error.item == 1
    assert error.message.startswith("juicefs-csi-driver-config config.yaml: mountPodPatch[1].env[1].name: ")
    assert ConfigError("enableNodeSelector", "x").item is None


def test_seed_prestop_example_parses() -> None:
    parsed = config(
        """
        mountPodPatch:
          - terminationGracePeriodSeconds: 600
            lifecycle:
              preStop:
                exec:
                  command:
                  - sh
                  - -c
                  - |
                    set +e
                    staging_dir="$(cat ${MOUNT_POINT}/.config | grep 'CacheDir' | cut -d '"' -f 4)/rawstaging/"
                    umount -l ${MOUNT_POINT}
                    rmdir ${MOUNT_POINT}
                    exit 0
        """
    )
    patch = only(parsed)
    assert patch.termination_grace_period_seconds == 600
    assert patch.lifecycle is not None
    assert patch.lifecycle["preStop"]["exec"]["command"][:2] == ["sh", "-c"]


def test_go_only_fields_are_rejected_not_ignored() -> None:
    for field in ("volumeDevices", "initContainers", "resourcePercentages"):
        error = item_error(**{field: []})
        assert error.path == f"mountPodPatch[0].{field}"
        assert "is not a supported field" in error.message


def test_ee_image_is_accepted_for_compatibility() -> None:
    patch = only(item(ceMountImage="juicedata/mount:ce-v1.4.2", eeMountImage="juicedata/mount:ee-5.1.0"))
    assert patch.ce_mount_image == "juicedata/mount:ce-v1.4.2"
    assert item_error(eeMountImage="bad image").path == "mountPodPatch[0].eeMountImage"


def test_null_fields_count_as_unset() -> None:
    assert only(item(labels=None, env=None, hostNetwork=None)) == MountPodPatch()


# --------------------------------------------------------------------------
# field validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path", "problem"),
    [
        ({"env": [{"name": "BAD-NAME", "value": "x"}]}, "env[0].name", "not a valid variable name"),
        ({"env": [{"name": "JFS_FOREGROUND", "value": "0"}]}, "env[0].name", "set by the driver"),
        ({"env": [{"name": "META_PASSWORD", "value": "x"}]}, "env[0].name", "set by the driver"),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "env[1].name", "duplicate"),
        ({"env": [{"name": "A", "value": 1}]}, "env[0].value", "quote numbers"),
        ({"env": [{"name": "A", "value": "1", "valueFrom": {}}]}, "env[0]", "both value and valueFrom"),
        ({"labels": {"-bad": "x"}}, "labels.-bad", "not a valid label key"),
        ({"labels": {"ok": "bad value"}}, "labels.ok", "not a valid label value"),
        ({"labels": {"ok": "${VOLUME_ID}"}}, "labels.ok", "templates are not filled in labels"),
        ({"labels": {"ok": "x" * 64}}, "labels.ok", "not a valid label value"),
        ({"labels": {"volume-id": "x"}}, "labels.volume-id", "set by the driver"),
        ({"labels": {"juicefs-hash": "x"}}, "labels.juicefs-hash", "set by the driver"),
        ({"labels": {"app.kubernetes.io/name": "x"}}, "labels.app.kubernetes.io/name", "set by the driver"),
        ({"labels": {"ok": True}}, "labels.ok", "must be a string"),
        ({"annotations": {"juicefs-uniqueid": "x"}}, "annotations.juicefs-uniqueid", "set by the driver"),
        ({"annotations": {"juicefs-" + "0" * 55: "/t"}}, "annotations.juicefs-" + "0" * 55, "set by the driver"),
        ({"annotations": {"juicefs-delete-delay": "soon"}}, "annotations.juicefs-delete-delay", "not a duration"),
        ({"annotations": {"juicefs-clean-cache": "yes"}}, "annotations.juicefs-clean-cache", '"true" or "false"'),
        ({"annotations": {"bad key!": "x"}}, "annotations.bad key!", "not a valid annotation key"),
        ({"dnsPolicy": "ClusterFirstWithHostNetwork"}, "dnsPolicy", "is not one of"),
        ({"dnsConfig": {"nameservers": "1.1.1.1"}}, "dnsConfig.nameservers", "must be a list"),
        ({"dnsConfig": {"resolver": []}}, "dnsConfig.resolver", "not a supported field"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy", "is not one of"),
        ({"hostnameKey": "nodename"}, "hostnameKey", "is not one of"),
        ({"hostNetwork": "yes"}, "hostNetwork", "true or false"),
        ({"hostPID": 1}, "hostPID", "true or false"),
        ({"terminationGracePeriodSeconds": -1}, "terminationGracePeriodSeconds", "non-negative integer"),
        ({"terminationGracePeriodSeconds": True}, "terminationGracePeriodSeconds", "non-negative integer"),
        ({"ceMountImage": ""}, "ceMountImage", "must not be empty"),
        ({"ceMountImage": "juicedata/mount:ce v1"}, "ceMountImage", "no spaces"),
        ({"livenessProbe": {"exec": {"command": ["stat"]}, "httpGet": {}}}, "livenessProbe", "exactly one handler"),
        ({"readinessProbe": {"periodSeconds": 5}}, "readinessProbe", "exactly one handler"),
        ({"startupProbe": {"exec": {"command": []}}}, "startupProbe.exec.command", "non-empty list"),
        ({"startupProbe": {"exec": {"command": ["stat"]}, "periodSeconds": -1}}, "startupProbe.periodSeconds", ""),
        ({"livenessProbe": {"exec": {"command": ["stat"]}, "period": 5}}, "livenessProbe.period", "not a supported"),
        ({"lifecycle": {"preStart": {"exec": {"command": ["x"]}}}}, "lifecycle.preStart", "not a supported field"),
        ({"lifecycle": {"preStop": {"exec": {"command": [1]}}}}, "lifecycle.preStop.exec.command[0]", "string"),
        ({"mountOptions": ["no-such-option"]}, "mountOptions[0]", "unknown mount option"),
        ({"mountOptions": ["cache-size=big"]}, "mountOptions[0]", "invalid value"),
        ({"mountOptions": ["background"]}, "mountOptions[0]", "not allowed"),
        ({"mountOptions": ["cache-dir=${MOUNT_POINT}/c"]}, "mountOptions[0]", "cannot use ${MOUNT_POINT}"),
        ({"pvcSelector": {"matchLabel": {}}}, "pvcSelector.matchLabel", "not a supported field"),
        ({"pvcSelector": {"matchName": 3}}, "pvcSelector.matchName", "must be a string"),
        ({"nodeSelector": {"matchLabels": {}, "zone": "a"}}, "nodeSelector.zone", "not a supported field"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, Any], path: str, problem: str) -> None:
    error = item_error(**fields)
    assert error.path == f"mountPodPatch[0].{path}"
    assert problem in error.problem


def test_template_in_a_mount_option_is_validated_with_a_sample() -> None:
    patch = only(item(mountOptions=["cache-dir=/cache/${VOLUME_ID}", "subdir=/${SUB_PATH}"]))
    assert patch.mount_options == ("cache-dir=/cache/${VOLUME_ID}", "subdir=/${SUB_PATH}")


def test_mount_options_in_one_item_merge_by_name() -> None:
    assert only(item(mountOptions=["cache-size=1", "--cache-size=2", "writeback"])).mount_options == (
        "--cache-size=2",
        "writeback",
    )


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ({"key": "a", "operator": "In"}, "must not be empty for operator In"),
        ({"key": "a", "operator": "NotIn", "values": []}, "must not be empty for operator NotIn"),
        ({"key": "a", "operator": "Exists", "values": ["x"]}, "must be empty for operator Exists"),
        ({"key": "a", "operator": "DoesNotExist", "values": ["x"]}, "must be empty for operator DoesNotExist"),
        ({"key": "a", "operator": "Gt", "values": ["1"]}, "is not one of"),
        ({"key": "bad key", "operator": "Exists"}, "not a valid label key"),
        ({"key": "a", "operator": "In", "values": "x"}, "must be a list"),
    ],
)
def test_invalid_match_expressions(expression: dict[str, Any], problem: str) -> None:
    error = item_error(pvcSelector={"matchExpressions": [expression]})
    assert error.path.startswith("mountPodPatch[0].pvcSelector.matchExpressions[0]")
    assert problem in error.problem


# --------------------------------------------------------------------------
# volumes and volumeMounts
# --------------------------------------------------------------------------

GCS_VOLUME = {"name": "gc-secret", "secret": {"secretName": "gc-secret"}}
GCS_MOUNT = {"name": "gc-secret", "mountPath": "/root/.config/gcloud"}


def test_volumes_and_mounts_that_match_are_kept() -> None:
    patch = only(item(volumes=[GCS_VOLUME], volumeMounts=[GCS_MOUNT]))
    assert patch.volumes == (GCS_VOLUME,)
    assert patch.volume_mounts == (GCS_MOUNT,)


def test_a_mount_must_name_a_volume_of_the_same_item() -> None:
    error = item_error(volumes=[GCS_VOLUME], volumeMounts=[GCS_MOUNT, {"name": "other", "mountPath": "/o"}])
    assert error.path == "mountPodPatch[0].volumeMounts[1].name"
    assert "not in this item's volumes" in error.problem
    assert item_error(volumeMounts=[GCS_MOUNT]).path == "mountPodPatch[0].volumeMounts[0].name"


def test_a_volume_must_be_mounted() -> None:
    error = item_error(volumes=[GCS_VOLUME])
    assert error.path == "mountPodPatch[0].volumes[0]"
    assert "no volumeMounts entry" in error.problem


@pytest.mark.parametrize(
    "name", ["rsa-key", "rsa-key-1", "init-config", "config-1", "jfs-dir", "jfs-dir-2", "update-db", "cachedir-0"]
)
def test_reserved_volume_names_are_rejected(name: str) -> None:
    error = item_error(volumes=[{"name": name, "emptyDir": {}}], volumeMounts=[{"name": name, "mountPath": "/x"}])
    assert error.path == "mountPodPatch[0].volumes[0].name"
    assert "reserves" in error.problem


@pytest.mark.parametrize(
    ("volumes", "mounts", "path", "problem"),
    [
        ([{"name": "Bad_Name", "emptyDir": {}}], [], "volumes[0].name", "not a valid volume name"),
        ([{"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}], [], "volumes[0]", "exactly one volume source"),
        ([{"name": "a"}], [], "volumes[0]", "exactly one volume source"),
        ([{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}], [], "volumes[1].name", "duplicate"),
        ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "rel"}], "volumeMounts[0].mountPath", "absolute"),
        ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "/jfs"}], "volumeMounts[0].mountPath", "/jfs"),
        ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "/jfs/x"}], "volumeMounts[0].mountPath", "/jfs"),
        (
            [{"name": "a", "emptyDir": {}}],
            [{"name": "a", "mountPath": "/x", "mountPropagation": "Shared"}],
            "volumeMounts[0].mountPropagation",
            "is not one of",
        ),
        (
            [{"name": "a", "emptyDir": {}}],
            [{"name": "a", "mountPath": "/x", "readonly": True}],
            "volumeMounts[0].readonly",
            "not a supported field",
        ),
    ],
)
def test_invalid_volumes(volumes: list[Any], mounts: list[Any], path: str, problem: str) -> None:
    error = item_error(volumes=volumes, volumeMounts=mounts)
    assert error.path == f"mountPodPatch[0].{path}"
    assert problem in error.problem


# --------------------------------------------------------------------------
# resources and quantities
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("1", Fraction(1)),
        ("1.5", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        ("2Gi", Fraction(2 * 2**30)),
        ("500M", Fraction(500 * 10**6)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1E", Fraction(10**18)),
        ("2e-3", Fraction(2, 1000)),
        ("5000m", Fraction(5)),
        ("1Ki", Fraction(1024)),
        ("-1", Fraction(-1)),
        ("+2k", Fraction(2000)),
        ("0", Fraction(0)),
        ("10n", Fraction(1, 10**8)),
        ("3u", Fraction(3, 10**6)),
    ],
)
def test_quantities_parse_exactly(text: str, value: Fraction) -> None:
    assert parse_quantity(text, "quantity") == value


@pytest.mark.parametrize("text", ["", " 1", "1 ", "1GB", "1gi", "Gi", "1.2.3", "1e", "one", "1m1", "0x10", "1KiB"])
def test_bad_quantities_are_rejected(text: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a Kubernetes quantity"):
        parse_quantity(text, "resources.limits.memory")


def test_resources_keep_the_quantity_as_written() -> None:
    patch = only(item(resources={"limits": {"cpu": 2, "memory": "4Gi"}, "requests": {"cpu": 0.5, "memory": "-1"}}))
    assert patch.resources == {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "0.5", "memory": "-1"}}


@pytest.mark.parametrize(
    ("resources", "path", "problem"),
    [
        ({"limits": {"memory": "4GB"}}, "resources.limits.memory", "not a Kubernetes quantity"),
        ({"limits": {"memory": True}}, "resources.limits.memory", "must be a quantity"),
        ({"limits": {"bad name": "1"}}, "resources.limits.bad name", "not a valid resource name"),
        ({"claims": []}, "resources.claims", "not a supported field"),
        ({"limits": ["1"]}, "resources.limits", "must be a map"),
    ],
)
def test_invalid_resources(resources: dict[str, Any], path: str, problem: str) -> None:
    error = item_error(resources=resources)
    assert error.path == f"mountPodPatch[0].{path}"
    assert problem in error.problem


# --------------------------------------------------------------------------
# cache dirs
# --------------------------------------------------------------------------


def test_every_cache_dir_type_parses() -> None:
    patch = only(
        item(
            cacheDirs=[
                {"type": "HostPath", "path": "/mnt/nvme/jfs"},
                {"type": "PVC", "name": "jfs-cache"},
                {"type": "EmptyDir", "medium": "Memory", "sizeLimit": "1Gi"},
                {"type": "Ephemeral", "storageClassName": "local", "storage": "10Gi"},
            ]
        )
    )
    assert patch.cache_dirs == (
        CacheDir("HostPath", path="/mnt/nvme/jfs"),
        CacheDir("PVC", name="jfs-cache"),
        CacheDir("EmptyDir", medium="Memory", size_limit="1Gi"),
        CacheDir("Ephemeral", storage_class_name="local", storage="10Gi", access_modes=("ReadWriteOnce",)),
    )


@pytest.mark.parametrize(
    ("cache", "path", "problem"),
    [
        ({"type": "Local", "path": "/x"}, "cacheDirs[0].type", "is not one of"),
        ({"path": "/x"}, "cacheDirs[0].type", "is not one of"),
        ({"type": "HostPath"}, "cacheDirs[0].path", "must be a string"),
        ({"type": "HostPath", "path": "relative"}, "cacheDirs[0].path", "absolute path"),
        ({"type": "HostPath", "path": "/a/../etc"}, "cacheDirs[0].path", "absolute path"),
        ({"type": "HostPath", "path": "/jfs/cache"}, "cacheDirs[0].path", "outside /jfs"),
        ({"type": "HostPath", "path": "/"}, "cacheDirs[0].path", "absolute path"),
        ({"type": "HostPath", "path": "${MOUNT_POINT}/c"}, "cacheDirs[0].path", "absolute path"),
        ({"type": "HostPath", "path": "/x", "name": "n"}, "cacheDirs[0].name", "not a supported field"),
        ({"type": "PVC"}, "cacheDirs[0].name", "must be a string"),
        ({"type": "PVC", "name": "Bad_Name"}, "cacheDirs[0].name", "PVC name"),
        ({"type": "EmptyDir", "medium": "Disk"}, "cacheDirs[0].medium", "is not one of"),
        ({"type": "EmptyDir", "sizeLimit": "lots"}, "cacheDirs[0].sizeLimit", "quantity"),
        ({"type": "Ephemeral"}, "cacheDirs[0].storage", "must be a quantity"),
        ({"type": "Ephemeral", "storage": "1Gi", "accessModes": ["RWO"]}, "cacheDirs[0].accessModes[0]", "one of"),
    ],
)
def test_invalid_cache_dirs(cache: dict[str, Any], path: str, problem: str) -> None:
    error = item_error(cacheDirs=[cache])
    assert error.path == f"mountPodPatch[0].{path}"
    assert problem in error.problem


def test_cache_dirs_must_not_be_empty_or_repeat() -> None:
    assert "at least one" in item_error(cacheDirs=[]).problem
    twice = [{"type": "HostPath", "path": "/c"}, {"type": "HostPath", "path": "/c"}]
    assert item_error(cacheDirs=twice).path == "mountPodPatch[0].cacheDirs[1].path"


# --------------------------------------------------------------------------
# selectors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "values", "labels", "matches"),
    [
        ("In", ("a", "b"), {"k": "a"}, True),
        ("In", ("a", "b"), {"k": "c"}, False),
        ("In", ("a",), {}, False),
        ("NotIn", ("a",), {"k": "b"}, True),
        ("NotIn", ("a",), {"k": "a"}, False),
        ("NotIn", ("a",), {}, True),
        ("Exists", (), {"k": ""}, True),
        ("Exists", (), {"other": "x"}, False),
        ("DoesNotExist", (), {}, True),
        ("DoesNotExist", (), {"k": "x"}, False),
    ],
)
def test_requirement_operators(operator: str, values: tuple[str, ...], labels: dict[str, str], matches: bool) -> None:
    assert Requirement("k", operator, values).matches(labels) is matches


def test_label_selector_combines_labels_and_expressions() -> None:
    selector = LabelSelector((("app", "db"),), (Requirement("tier", "In", ("gold",)),))
    assert selector.matches({"app": "db", "tier": "gold", "x": "y"})
    assert not selector.matches({"app": "db", "tier": "silver"})
    assert not selector.matches({"tier": "gold"})
    assert LabelSelector().matches({})


def test_pvc_selector_parses_all_parts() -> None:
    patch = only(
        item(
            pvcSelector={
                "matchLabels": {"app": "db"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["bronze"]}],
                "matchStorageClassName": "juicefs-sc",
                "matchName": "data",
            }
        )
    )
    assert patch.pvc_selector == PVCSelector(
        LabelSelector((("app", "db"),), (Requirement("tier", "NotIn", ("bronze",)),)), "juicefs-sc", "data"
    )


PATCHES = """
mountPodPatch:
  - labels: {everyone: "yes"}
  - pvcSelector: {matchLabels: {app: db}}
    labels: {db: "yes"}
  - pvcSelector: {matchStorageClassName: fast}
    labels: {fast: "yes"}
  - pvcSelector: {matchName: special}
    labels: {special: "yes"}
  - pvcSelector:
      matchExpressions:
        - {key: tier, operator: In, values: [gold, silver]}
        - {key: legacy, operator: DoesNotExist}
    labels: {tiered: "yes"}
  - nodeSelector: {zone: a}
    labels: {zone-a: "yes"}
  - nodeSelector:
      matchExpressions: [{key: gpu, operator: Exists}]
    labels: {gpu: "yes"}
  - pvcSelector: {}
    labels: {any-pvc: "yes"}
"""


def selected(
    pvc_labels: dict[str, str] | None = None,
    pvc_name: str | None = "data",
    storage_class: str | None = "standard",
    node_labels: dict[str, str] | None = None,
) -> set[str]:
    patch = select_patch(parse_config(PATCHES), pvc_labels or {}, pvc_name, storage_class, node_labels or {})
    return set(patch.labels)


def test_selection_by_pvc_and_node() -> None:
    assert selected() == {"everyone", "any-pvc"}
    assert selected(pvc_labels={"app": "db"}) == {"everyone", "db", "any-pvc"}
    assert selected(storage_class="fast") == {"everyone", "fast", "any-pvc"}
    assert selected(pvc_name="special") == {"everyone", "special", "any-pvc"}
    assert selected(pvc_labels={"tier": "gold"}) == {"everyone", "tiered", "any-pvc"}
    assert selected(pvc_labels={"tier": "gold", "legacy": "1"}) == {"everyone", "any-pvc"}
    assert selected(node_labels={"zone": "a"}) == {"everyone", "zone-a", "any-pvc"}
    assert selected(node_labels={"gpu": ""}) == {"everyone", "gpu", "any-pvc"}


def test_static_volume_without_pvc_matches_no_pvc_selector() -> None:
    patch = select_patch(parse_config(PATCHES), None, None, None, {"zone": "a"})
    assert set(patch.labels) == {"everyone", "zone-a"}


def test_pvc_without_storage_class_does_not_match_match_storage_class_name() -> None:
    assert selected(storage_class=None) == {"everyone", "any-pvc"}


def test_unknown_node_matches_no_node_selector() -> None:
    patch = select_patch(parse_config(PATCHES), {}, "data", None, None)
    assert "zone-a" not in patch.labels


def test_node_selector_as_label_selector() -> None:
    patch = only(item(nodeSelector={"matchLabels": {"zone": "a"}}))
    assert patch.node_selector == LabelSelector((("zone", "a"),))


def test_selected_patch_has_no_selectors() -> None:
    patch = select_patch(parse_config(PATCHES), {"app": "db"}, "data", None, {"zone": "a"})
    assert patch.pvc_selector is None and patch.node_selector is None


# --------------------------------------------------------------------------
# merge order
# --------------------------------------------------------------------------


def merged(*items: dict[str, Any]) -> MountPodPatch:
    return select_patch(parse_config(yaml.safe_dump({"mountPodPatch": list(items)})), {}, "pvc", None, {})


def test_scalars_later_wins() -> None:
    patch = merged(
        {"ceMountImage": "img:1", "hostNetwork": True, "terminationGracePeriodSeconds": 30, "dnsPolicy": "Default"},
        {"ceMountImage": "img:2", "hostNetwork": False},
        {"imagePullPolicy": "Always"},
    )
    assert patch.ce_mount_image == "img:2"
    assert patch.host_network is False
    assert patch.termination_grace_period_seconds == 30
    assert patch.dns_policy == "Default"
    assert patch.image_pull_policy == "Always"


def test_maps_merge_by_key() -> None:
    patch = merged(
        {"labels": {"a": "1", "b": "1"}, "annotations": {"x": "1"}, "resources": {"limits": {"cpu": "1"}}},
        {"labels": {"b": "2"}, "annotations": {"y": "2"}, "resources": {"limits": {"memory": "2Gi"}}},
        {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "3"}}},
    )
    assert patch.labels == {"a": "1", "b": "2"}
    assert patch.annotations == {"x": "1", "y": "2"}
    assert patch.resources == {"limits": {"cpu": "3", "memory": "2Gi"}, "requests": {"cpu": "100m"}}


def test_objects_and_lists_are_replaced() -> None:
    probe_a = {"exec": {"command": ["stat", "/a"]}, "periodSeconds": 5}
    probe_b = {"httpGet": {"path": "/", "port": 9567}}
    patch = merged(
        {"livenessProbe": probe_a, "env": [{"name": "A", "value": "1"}], "cacheDirs": [{"type": "PVC", "name": "a"}]},
        {"livenessProbe": probe_b, "env": [{"name": "B", "value": "2"}]},
        {"cacheDirs": [{"type": "HostPath", "path": "/b"}]},
    )
    assert patch.liveness_probe == probe_b
    assert patch.env == ({"name": "B", "value": "2"},)
    assert patch.cache_dirs == (CacheDir("HostPath", path="/b"),)


def test_volumes_and_mounts_are_replaced_together() -> None:
    other_volume = {"name": "extra", "emptyDir": {}}
    other_mount = {"name": "extra", "mountPath": "/extra"}
    patch = merged(
        {"volumes": [GCS_VOLUME], "volumeMounts": [GCS_MOUNT]},
        {"volumes": [other_volume], "volumeMounts": [other_mount]},
    )
    assert patch.volumes == (other_volume,)
    assert patch.volume_mounts == (other_mount,)
    untouched = merged({"volumes": [GCS_VOLUME], "volumeMounts": [GCS_MOUNT]}, {"labels": {"a": "b"}})
    assert untouched.volumes == (GCS_VOLUME,)
    assert untouched.volume_mounts == (GCS_MOUNT,)


def test_mount_options_merge_by_name_and_later_wins() -> None:
    patch = merged(
        {"mountOptions": ["cache-size=100", "writeback", "allow_other"]},
        {"mountOptions": ["cache-size=200", "buffer-size=300"]},
    )
    assert patch.mount_options == ("cache-size=200", "writeback", "allow_other", "buffer-size=300")
    assert merge_mount_options(("a=1",), ("--a=2",)) == ("--a=2",)


def test_an_empty_list_set_later_clears() -> None:
    patch = merged({"env": [{"name": "A", "value": "1"}]}, {"env": []})
    assert patch.env == ()


# --------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------


def templated() -> MountPodPatch:
    return only(
        config(
            """
            mountPodPatch:
              - labels: {fixed: "yes"}
                annotations: {note: "vol ${VOLUME_ID} of ${VOLUME_NAME}"}
                env:
                  - {name: WHERE, value: "${MOUNT_POINT}/${SUB_PATH}"}
                lifecycle:
                  preStop:
                    exec:
                      command: [sh, -c, "umount -l ${MOUNT_POINT}; echo $HOME ${HOME}"]
                readinessProbe:
                  exec: {command: [stat, "${MOUNT_POINT}/${SUB_PATH}"]}
                volumes:
                  - name: per-volume
                    hostPath: {path: "/data/${VOLUME_ID}"}
                volumeMounts:
                  - {name: per-volume, mountPath: /data}
                mountOptions: ["subdir=/${SUB_PATH}"]
                cacheDirs:
                  - {type: HostPath, path: "/cache/${VOLUME_ID}"}
            """
        )
    )


VALUES = {"MOUNT_POINT": "/jfs/pvc-1-abcdef", "VOLUME_ID": "pvc-1", "VOLUME_NAME": "myjfs", "SUB_PATH": "a/b"}


def test_templates_are_filled_in_string_fields() -> None:
    patch = fill_templates(templated(), VALUES)
    assert patch.annotations == {"note": "vol pvc-1 of myjfs"}
    assert patch.env == ({"name": "WHERE", "value": "/jfs/pvc-1-abcdef/a/b"},)
    assert patch.lifecycle == {
        "preStop": {"exec": {"command": ["sh", "-c", "umount -l /jfs/pvc-1-abcdef; echo $HOME ${HOME}"]}}
    }
    assert patch.readiness_probe == {"exec": {"command": ["stat", "/jfs/pvc-1-abcdef/a/b"]}}
    assert patch.volumes == ({"name": "per-volume", "hostPath": {"path": "/data/pvc-1"}},)
    assert patch.mount_options == ("subdir=/a/b",)
    assert patch.cache_dirs == (CacheDir("HostPath", path="/cache/pvc-1"),)
    assert patch.labels == {"fixed": "yes"}


def test_templates_can_be_filled_in_two_steps() -> None:
    first = fill_templates(templated(), {"VOLUME_ID": "pvc-1", "SUB_PATH": "a"})
    assert first.env == ({"name": "WHERE", "value": "${MOUNT_POINT}/a"},)
    second = fill_templates(first, {"MOUNT_POINT": "/jfs/x"})
    assert second.env == ({"name": "WHERE", "value": "/jfs/x/a"},)


def test_filling_does_not_touch_the_parsed_config() -> None:
    original = templated()
    fill_templates(original, VALUES)
    assert original.env == ({"name": "WHERE", "value": "${MOUNT_POINT}/${SUB_PATH}"},)


@pytest.mark.parametrize("sub_path", ["a;rm -rf /", "a b", "$(id)", "a`id`", "a:/etc", "a,b", "a'b", 'a"b', "a\nb"])
def test_unsafe_values_are_refused_when_used(sub_path: str) -> None:
    with pytest.raises(InvalidArgument, match=r"template \$\{SUB_PATH\} cannot be filled"):
        fill_templates(templated(), {**VALUES, "SUB_PATH": sub_path})


def test_unsafe_values_are_fine_when_unused() -> None:
    patch = only(item(annotations={"note": "${VOLUME_ID}"}))
    assert fill_templates(patch, {"SUB_PATH": "a;b", "VOLUME_ID": "v"}).annotations == {"note": "v"}


def test_unknown_template_names_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown template names: HOME"):
        fill_templates(MountPodPatch(), {"HOME": "/root"})
