"""Cached objects leave out managedFields: on a real API server they are a large part of every object."""

from __future__ import annotations

from lightkube.models.meta_v1 import ManagedFieldsEntry, ObjectMeta
from lightkube.resources.core_v1 import PersistentVolume

from juicefs_csi.kube.informer import drop_managed_fields


def test_managed_fields_are_dropped_and_the_rest_kept() -> None:
    pv = PersistentVolume(
        metadata=ObjectMeta(
            name="pv-1",
            labels={"a": "b"},
            resourceVersion="7",
            managedFields=[ManagedFieldsEntry(manager="kube-controller-manager", operation="Update")],
        )
    )
    drop_managed_fields(pv)
    assert pv.metadata is not None
    assert pv.metadata.managedFields is None
    assert (pv.metadata.name, pv.metadata.labels, pv.metadata.resourceVersion) == ("pv-1", {"a": "b"}, "7")


def test_objects_without_metadata_are_left_alone() -> None:
    pv = PersistentVolume()
    drop_managed_fields(pv)
    assert pv.metadata is None
