"""The provisioning plan and the PV built from it: external-provisioner's fields, the Go driver's CSI fields."""

from __future__ import annotations

from typing import Any, TypeVar, cast

import pytest
from lightkube.core.dictmixin import DictMixin
from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim
from lightkube.resources.storage_v1 import StorageClass

from juicefs_csi.controller.pvspec import (
    ANN_DELETION_SECRET_NAME,
    ANN_DELETION_SECRET_NAMESPACE,
    ANN_PROVISIONED_BY,
    FINALIZER,
    SecretRef,
    belongs_to_claim,
    build_pv,
    claim_class,
    claim_facts,
    deletion_secret,
    expansion_secret,
    plan_provision,
    pv_directory,
    quantity_bytes,
    volume_directory,
)
from juicefs_csi.errors import InvalidArgument

DRIVER = "csi.juicefs.com"
UID = "0b7e7a4e-1111-2222-3333-444455556666"
SECRET_PARAMS = {
    "csi.storage.k8s.io/provisioner-secret-name": "jfs-secret",
    "csi.storage.k8s.io/provisioner-secret-namespace": "kube-system",
    "csi.storage.k8s.io/node-publish-secret-name": "jfs-${pvc.name}",
    "csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}",
}

R = TypeVar("R", bound=DictMixin)


def load(kind: type[R], body: dict[str, Any]) -> R:
    """`kind.from_dict(body)`: lightkube types it as returning its base class, not the class it is called on."""
    return cast(R, kind.from_dict(body))


def pvc(**spec: Any) -> PersistentVolumeClaim:
    body: dict[str, Any] = {
        "metadata": {
            "name": "data",
            "namespace": "team-a",
            "uid": UID,
            "labels": {"app": "web"},
            "annotations": {"cache": "2048"},
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1500Mi"}},
            "storageClassName": "jfs",
            "volumeMode": "Filesystem",
            **spec,
        },
    }
    return load(PersistentVolumeClaim, body)


def storage_class(parameters: dict[str, str] | None = None, **fields: Any) -> StorageClass:
    body = {
        "metadata": {"name": "jfs"},
        "provisioner": DRIVER,
        "parameters": {**SECRET_PARAMS, **(parameters or {})},
        **fields,
    }
    return load(StorageClass, body)


def built(claim: PersistentVolumeClaim, sc: StorageClass) -> PersistentVolume:
    return build_pv(DRIVER, claim, sc, plan_provision(claim, sc, claim_facts(claim)))


def test_pv_has_external_provisioner_and_go_driver_fields() -> None:
    sc = storage_class(
        {"juicefs/mount-delete-delay": "1m"},
        mountOptions=["cache-size=${.pvc.annotations.cache}", "writeback, free-space-ratio=0.2"],
    )
    pv = built(pvc(), sc).to_dict()
    name = f"pvc-{UID}"
    assert pv["metadata"] == {
        "name": name,
        "annotations": {
            ANN_PROVISIONED_BY: DRIVER,
            ANN_DELETION_SECRET_NAME: "jfs-secret",
            ANN_DELETION_SECRET_NAMESPACE: "kube-system",
        },
        "finalizers": [FINALIZER],
    }
    spec = pv["spec"]
    assert spec["csi"] == {
        "driver": DRIVER,
        "volumeHandle": name,
        "fsType": "juicefs",
        "volumeAttributes": {"juicefs/mount-delete-delay": "1m", "subPath": name, "capacity": str(1500 << 20)},
        "nodePublishSecretRef": {"name": "jfs-data", "namespace": "team-a"},
    }
    assert spec["accessModes"] == ["ReadWriteMany"]
    assert spec["capacity"] == {"storage": "1500Mi"}
    assert spec["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "team-a",
        "name": "data",
        "uid": UID,
    }
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"
    assert spec["mountOptions"] == ["cache-size=2048", "writeback", "free-space-ratio=0.2"]
    assert spec["storageClassName"] == "jfs"
    assert spec["volumeMode"] == "Filesystem"


def test_retain_and_expand_secret() -> None:
    sc = storage_class(
        {
            "csi.storage.k8s.io/controller-expand-secret-name": "jfs-secret",
            "csi.storage.k8s.io/controller-expand-secret-namespace": "kube-system",
        },
        reclaimPolicy="Retain",
    )
    pv = built(pvc(), sc)
    assert pv.metadata is not None and pv.metadata.finalizers is None
    assert pv.spec is not None and pv.spec.persistentVolumeReclaimPolicy == "Retain"
    assert expansion_secret(pv) == SecretRef("kube-system", "jfs-secret")


def test_path_pattern_names_the_sub_path_and_directory() -> None:
    sc = storage_class(
        {"pathPattern": "${.pvc.namespace}-${.pvc.name}-${.pvc.labels.app}", "subdir": "tenants"},
        mountOptions=["subdir=/k8s"],
    )
    claim = pvc()
    plan = plan_provision(claim, sc, claim_facts(claim))
    assert plan.sub_path == "team-a-data-web"
    assert plan.attributes["pathPattern"] == "team-a-data-web"
    assert plan.directory == "k8s/tenants/team-a-data-web"
    assert pv_directory(build_pv(DRIVER, claim, sc, plan)) == plan.directory


def test_read_only_many_needs_a_path_pattern() -> None:
    claim = pvc(accessModes=["ReadOnlyMany"])
    with pytest.raises(InvalidArgument, match="read-only mode cannot be used"):
        plan_provision(claim, storage_class(), claim_facts(claim))
    sc = storage_class({"pathPattern": "shared"})
    assert plan_provision(claim, sc, claim_facts(claim)).sub_path == "shared"


@pytest.mark.parametrize(
    ("spec", "params", "message"),
    [
        ({"selector": {"matchLabels": {"a": "b"}}}, {}, "claim Selector is not supported"),
        ({"volumeMode": "Block"}, {}, "block volumes are not supported"),
        (
            {"dataSource": {"kind": "VolumeSnapshot", "name": "snap", "apiGroup": "snapshot.storage.k8s.io"}},
            {},
            "data source",
        ),
        ({"resources": {"requests": {"storage": "lots"}}}, {}, "not a Kubernetes quantity"),
        ({"resources": {"requests": {"storage": "0"}}}, {}, "larger than 0"),
        ({}, {"pathPattern": "${.pvc.labels.missing}"}, "label 'missing'"),
        ({}, {"pathPattern": "../x"}, r"contains \.\."),
        ({}, {"csi.storage.k8s.io/provisioner-secret-name": ""}, "both be set or both be unset"),
        ({}, {"mountOptions": "background"}, "'background' is not allowed"),
    ],
)
def test_plan_refusals(spec: dict[str, Any], params: dict[str, str], message: str) -> None:
    claim = pvc(**spec)
    with pytest.raises(InvalidArgument, match=message):
        plan_provision(claim, storage_class(params), claim_facts(claim))


def test_missing_secrets_are_refused() -> None:
    claim = pvc()
    no_provisioner = load(
        StorageClass,
        {
            "metadata": {"name": "jfs"},
            "provisioner": DRIVER,
            "parameters": {k: v for k, v in SECRET_PARAMS.items() if "provisioner-secret" not in k},
        },
    )
    with pytest.raises(InvalidArgument, match="provisioner-secret-name/-namespace"):
        plan_provision(claim, no_provisioner, claim_facts(claim))
    no_node = load(
        StorageClass,
        {
            "metadata": {"name": "jfs"},
            "provisioner": DRIVER,
            "parameters": {k: v for k, v in SECRET_PARAMS.items() if "node-publish" not in k},
        },
    )
    with pytest.raises(InvalidArgument, match="node-publish-secret-name/-namespace"):
        plan_provision(claim, no_node, claim_facts(claim))


def test_bad_mount_option_in_storage_class_is_refused() -> None:
    claim = pvc()
    with pytest.raises(InvalidArgument, match="unknown mount option 'nope'"):
        plan_provision(claim, storage_class(mountOptions=["nope=1"]), claim_facts(claim))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Gi", 1 << 30),
        ("1G", 10**9),
        ("1500Mi", 1500 << 20),
        ("1.5Gi", 3 << 29),
        ("100", 100),
        ("1e3", 1000),
        ("0.5", 1),
    ],
)
def test_quantities(text: str, expected: int) -> None:
    assert quantity_bytes(text, "q") == expected


def test_volume_directory_is_never_the_root() -> None:
    for attributes in ({"subPath": ""}, {"subPath": "/"}, {}, {"subPath": "a/.."}):
        with pytest.raises(InvalidArgument):
            volume_directory(attributes, [])
    assert volume_directory({"subPath": "/a/b/"}, []) == "a/b"


def test_ownership_and_secret_fallbacks() -> None:
    claim = pvc()
    pv = built(claim, storage_class())
    assert belongs_to_claim(pv, DRIVER, UID)
    assert not belongs_to_claim(pv, DRIVER, "other-uid")
    assert not belongs_to_claim(pv, "other.driver", UID)
    assert deletion_secret(pv) == SecretRef("kube-system", "jfs-secret")
    go_driver_pv = load(
        PersistentVolume,
        {
            "metadata": {"name": "pvc-x", "annotations": {ANN_PROVISIONED_BY: DRIVER}},
            "spec": {
                "csi": {
                    "driver": DRIVER,
                    "volumeHandle": "pvc-x",
                    "volumeAttributes": {"subPath": "pvc-x"},
                    "nodePublishSecretRef": {"name": "s", "namespace": "ns"},
                }
            },
        },
    )
    assert deletion_secret(go_driver_pv) == SecretRef("ns", "s")
    assert expansion_secret(go_driver_pv) is None


def test_claim_class_reads_the_beta_annotation() -> None:
    claim = load(
        PersistentVolumeClaim,
        {"metadata": {"name": "c", "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}}, "spec": {}},
    )
    assert claim_class(claim) == "old"
    assert claim_class(pvc()) == "jfs"
