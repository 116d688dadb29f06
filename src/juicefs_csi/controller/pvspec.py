"""What the provisioner decides, without doing it: the plan for a claim and the PersistentVolume it becomes.

Names and fields follow external-provisioner and the Go driver, so PVs made here look like PVs made
by either, and either's PVs can be deleted and expanded here. Everything is pure.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from lightkube.models.core_v1 import (
    CSIPersistentVolumeSource,
    ObjectReference,
    PersistentVolumeSpec,
    SecretReference,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim
from lightkube.resources.storage_v1 import StorageClass
from lightkube.utils.quantity import parse_quantity

from juicefs_csi.controller.pathpattern import ClaimFacts, NodeFacts, expand, resolve_path_pattern, secret_reference
from juicefs_csi.errors import InvalidArgument
from juicefs_csi.volume.options import parse_mount_options, split_option_string
from juicefs_csi.volume.settings import ATTR_MOUNT_OPTIONS, ATTR_SUB_PATH, ATTR_SUBDIR, clean_sub_path

ATTR_CAPACITY = "capacity"
PARAM_PATH_PATTERN = "pathPattern"
PROVISIONER_PREFIX = "csi.storage.k8s.io/"
FS_TYPE = "juicefs"
PV_PREFIX = "pvc-"

# external-provisioner's annotations, finalizer and StorageClass parameter keys.
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"
ANN_DELETION_SECRET_NAME = "volume.kubernetes.io/provisioner-deletion-secret-name"
ANN_DELETION_SECRET_NAMESPACE = "volume.kubernetes.io/provisioner-deletion-secret-namespace"
FINALIZER = "external-provisioner.volume.kubernetes.io/finalizer"
PROVISIONER_SECRET = "provisioner"
NODE_PUBLISH_SECRET = "node-publish"
CONTROLLER_EXPAND_SECRET = "controller-expand"

RECLAIM_DELETE = "Delete"
RECLAIM_RETAIN = "Retain"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
READ_ONLY_MANY = "ReadOnlyMany"


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ProvisionPlan:
    """Everything a claim's volume is, decided before anything is created."""

    pv_name: str
    sub_path: str
    """The `subPath` volume attribute: the pathPattern result, or the PV name."""
    directory: str
    """Where the volume lives in the file system: mount-option subdir / `subdir` attribute / subPath."""
    capacity: str
    """The claim's request, as written (PV capacity)."""
    capacity_bytes: int
    attributes: dict[str, str]
    mount_options: list[str]
    reclaim_policy: str
    provisioner_secret: SecretRef
    node_publish_secret: SecretRef
    controller_expand_secret: SecretRef | None = None


def pv_name_for(claim_uid: str) -> str:
    """One name per claim, forever: creating it twice can only ever collide, never duplicate."""
    return f"{PV_PREFIX}{claim_uid}"


def quantity_bytes(text: str | None, what: str) -> int:
    """A Kubernetes quantity (`1Gi`, `500M`, `1.5e9`) in whole bytes, rounded up."""
    if not text:
        raise InvalidArgument(f"{what} is not set")
    try:
        value = parse_quantity(str(text))
    except ValueError:
        raise InvalidArgument(f"{what} {str(text)[:32]!r} is not a Kubernetes quantity") from None
    if value is None or value < 0:
        raise InvalidArgument(f"{what} {text!r} must not be negative")
    return math.ceil(value)


def claim_class(pvc: PersistentVolumeClaim) -> str:
    """The claim's StorageClass: `spec.storageClassName`, else the beta annotation, as Kubernetes reads it."""
    spec_class = pvc.spec.storageClassName if pvc.spec is not None else None
    if spec_class is not None:
        return spec_class
    return (_annotations(pvc.metadata)).get(ANN_BETA_STORAGE_CLASS, "")


def claim_facts(pvc: PersistentVolumeClaim, node: NodeFacts | None = None) -> ClaimFacts:
    meta = pvc.metadata
    assert meta is not None
    return ClaimFacts(
        name=meta.name or "",
        namespace=meta.namespace or "",
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        node=node,
    )


def plan_provision(pvc: PersistentVolumeClaim, sc: StorageClass, claim: ClaimFacts) -> ProvisionPlan:
    """Check the claim against the class and resolve every template; raises InvalidArgument, creates nothing."""
    meta, spec = pvc.metadata, pvc.spec
    assert meta is not None and meta.uid and spec is not None
    sc_name = sc.metadata.name if sc.metadata is not None else ""
    if spec.selector is not None:
        raise InvalidArgument("claim Selector is not supported")
    if spec.volumeMode == "Block":
        raise InvalidArgument("block volumes are not supported: JuiceFS volumes are file systems (volumeMode: Block)")
    source = spec.dataSourceRef or spec.dataSource
    if source is not None:
        raise InvalidArgument(f"creating a volume from a data source ({source.kind} {source.name}) is not supported")
    if not spec.accessModes:
        raise InvalidArgument("the claim has no accessModes")
    resources = spec.resources.requests if spec.resources is not None else None
    request = (resources or {}).get("storage")
    capacity_bytes = quantity_bytes(request, "the claim's storage request")
    if capacity_bytes <= 0:
        raise InvalidArgument("the claim's storage request must be larger than 0")
    pv_name = pv_name_for(meta.uid)
    params = dict(sc.parameters or {})

    pattern = params.get(PARAM_PATH_PATTERN, "")
    sub_path = resolve_path_pattern(pattern, claim) if pattern else pv_name
    attributes: dict[str, str] = {}
    for key, value in params.items():
        if key.startswith(PROVISIONER_PREFIX):
            continue
        attributes[key] = expand(value, claim, f"StorageClass {sc_name} parameter {key!r}")
    if pattern:
        attributes[PARAM_PATH_PATTERN] = sub_path
    if READ_ONLY_MANY in spec.accessModes and not pattern:
        raise InvalidArgument(
            "Dynamic mounting uses the sub-path named pv name as data isolation, so read-only mode cannot be used."
        )
    attributes[ATTR_SUB_PATH] = sub_path
    attributes[ATTR_CAPACITY] = str(capacity_bytes)

    mount_options: list[str] = []
    for position, option in enumerate(sc.mountOptions or [], start=1):
        resolved = expand(option, claim, f"StorageClass {sc_name} mountOptions item {position}")
        mount_options.extend(split_option_string(resolved))
    directory = volume_directory(attributes, mount_options)

    refs = {}
    for kind in (PROVISIONER_SECRET, NODE_PUBLISH_SECRET, CONTROLLER_EXPAND_SECRET):
        resolved_ref = secret_reference(
            params.get(f"{PROVISIONER_PREFIX}{kind}-secret-name"),
            params.get(f"{PROVISIONER_PREFIX}{kind}-secret-namespace"),
            claim,
            pv_name,
            f"StorageClass {sc_name} {kind} secret",
        )
        refs[kind] = SecretRef(*resolved_ref) if resolved_ref else None
    provisioner_secret, node_secret = refs[PROVISIONER_SECRET], refs[NODE_PUBLISH_SECRET]
    if provisioner_secret is None:
        raise InvalidArgument(
            f"StorageClass {sc_name} sets no {PROVISIONER_PREFIX}provisioner-secret-name/-namespace: the provisioner "
            "needs the volume's Secret to create the sub-directory"
        )
    if node_secret is None:
        raise InvalidArgument(
            f"StorageClass {sc_name} sets no {PROVISIONER_PREFIX}node-publish-secret-name/-namespace: nodes need the "
            "volume's Secret to mount it"
        )
    return ProvisionPlan(
        pv_name=pv_name,
        sub_path=sub_path,
        directory=directory,
        capacity=str(request),
        capacity_bytes=capacity_bytes,
        attributes=attributes,
        mount_options=mount_options,
        reclaim_policy=sc.reclaimPolicy or RECLAIM_DELETE,
        provisioner_secret=provisioner_secret,
        node_publish_secret=node_secret,
        controller_expand_secret=refs[CONTROLLER_EXPAND_SECRET],
    )


def volume_directory(attributes: Mapping[str, str], mount_options: list[str]) -> str:
    """The directory a node mounts for these attributes: what must be created, resized and removed.

    Nodes mount the file system at the `subdir` mount option and bind `subdir` attribute + `subPath`
    inside it, so the three together name the directory. Raises InvalidArgument for the root.
    """
    options = parse_mount_options([*mount_options, *split_option_string(attributes.get(ATTR_MOUNT_OPTIONS, ""))])
    parts = [
        clean_sub_path(options.get("subdir") or "", "mount option 'subdir'"),
        clean_sub_path(attributes.get(ATTR_SUBDIR, ""), f"volume attribute {ATTR_SUBDIR!r}"),
        clean_sub_path(attributes.get(ATTR_SUB_PATH, ""), f"volume attribute {ATTR_SUB_PATH!r}"),
    ]
    directory = posixpath.join(*parts).strip("/")
    if not directory:
        raise InvalidArgument("the volume's directory is the file system root (subPath is empty or '/')")
    return directory


def pv_directory(pv: PersistentVolume) -> str:
    csi = pv.spec.csi if pv.spec is not None else None
    attributes = dict(csi.volumeAttributes or {}) if csi is not None else {}
    return volume_directory(attributes, list(pv.spec.mountOptions or []) if pv.spec is not None else [])


def build_pv(driver: str, pvc: PersistentVolumeClaim, sc: StorageClass, plan: ProvisionPlan) -> PersistentVolume:
    """The PV external-provisioner would create for this plan, plus the Go driver's CSI fields."""
    meta, spec = pvc.metadata, pvc.spec
    assert meta is not None and spec is not None
    annotations = {
        ANN_PROVISIONED_BY: driver,
        ANN_DELETION_SECRET_NAME: plan.provisioner_secret.name,
        ANN_DELETION_SECRET_NAMESPACE: plan.provisioner_secret.namespace,
    }
    expand_ref = plan.controller_expand_secret
    csi = CSIPersistentVolumeSource(
        driver=driver,
        volumeHandle=plan.pv_name,
        fsType=FS_TYPE,
        volumeAttributes=dict(plan.attributes),
        nodePublishSecretRef=SecretReference(
            name=plan.node_publish_secret.name, namespace=plan.node_publish_secret.namespace
        ),
        controllerExpandSecretRef=(
            SecretReference(name=expand_ref.name, namespace=expand_ref.namespace) if expand_ref else None
        ),
    )
    return PersistentVolume(
        metadata=ObjectMeta(
            name=plan.pv_name,
            annotations=annotations,
            finalizers=[FINALIZER] if plan.reclaim_policy == RECLAIM_DELETE else None,
        ),
        spec=PersistentVolumeSpec(
            accessModes=list(spec.accessModes or []),
            capacity={"storage": plan.capacity},
            claimRef=ObjectReference(
                apiVersion="v1",
                kind="PersistentVolumeClaim",
                namespace=meta.namespace,
                name=meta.name,
                uid=meta.uid,
            ),
            csi=csi,
            persistentVolumeReclaimPolicy=plan.reclaim_policy,
            mountOptions=list(plan.mount_options) or None,
            storageClassName=sc.metadata.name if sc.metadata is not None else None,
            volumeMode=spec.volumeMode or "Filesystem",
        ),
    )


def is_ours(pv: PersistentVolume, driver: str) -> bool:
    """Provisioned by this driver (by us, the Go driver, or csi-provisioner for it)."""
    return _annotations(pv.metadata).get(ANN_PROVISIONED_BY) == driver


def belongs_to_claim(pv: PersistentVolume, driver: str, claim_uid: str) -> bool:
    """A PV of our name is accepted only if we made it for this very claim."""
    ref = pv.spec.claimRef if pv.spec is not None else None
    return is_ours(pv, driver) and ref is not None and ref.uid == claim_uid


def deletion_secret(pv: PersistentVolume) -> SecretRef | None:
    """The Secret to delete with: external-provisioner's annotations, else the node-publish Secret (Go driver PVs)."""
    annotations = _annotations(pv.metadata)
    name, namespace = annotations.get(ANN_DELETION_SECRET_NAME), annotations.get(ANN_DELETION_SECRET_NAMESPACE)
    if name and namespace:
        return SecretRef(namespace, name)
    return _csi_ref(pv, "nodePublishSecretRef")


def expansion_secret(pv: PersistentVolume) -> SecretRef | None:
    """`controllerExpandSecretRef` as external-resizer reads it, else the provisioner's Secret."""
    ref = _csi_ref(pv, "controllerExpandSecretRef")
    if ref is not None:
        return ref
    annotations = _annotations(pv.metadata)
    name, namespace = annotations.get(ANN_DELETION_SECRET_NAME), annotations.get(ANN_DELETION_SECRET_NAMESPACE)
    return SecretRef(namespace, name) if name and namespace else None


def _csi_ref(pv: PersistentVolume, attr: str) -> SecretRef | None:
    csi = pv.spec.csi if pv.spec is not None else None
    ref = getattr(csi, attr, None) if csi is not None else None
    if ref is None or not ref.name:
        return None
    return SecretRef(ref.namespace or "default", ref.name)


def _annotations(meta: ObjectMeta | None) -> dict[str, str]:
    return dict(meta.annotations or {}) if meta is not None else {}
