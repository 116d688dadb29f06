"""pathPattern and StorageClass templates: readable names, and refusals that name the problem."""

from __future__ import annotations

import pytest

from juicefs_csi.controller.pathpattern import (
    ClaimFacts,
    NodeFacts,
    expand,
    resolve_path_pattern,
    secret_reference,
    uses_node,
)
from juicefs_csi.errors import InvalidArgument

CLAIM = ClaimFacts(
    name="data",
    namespace="team-a",
    labels={"app": "web", "tier": "db"},
    annotations={
        "owner": "alice",
        "juicefs.com/dir": "reports",
        "escape": "../etc",
        "root": "/",
        "abs": "/etc",
        "empty": "",
        "nested": "x/y",
        "ctrl": "a\nb",
    },
)
NODE = NodeFacts(name="node-1", pod_cidr="10.1.0.0/24", labels={"zone": "z1"}, annotations={"rack": "r7"})


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("${.pvc.namespace}-${.pvc.name}", "team-a-data"),
        ("${.PVC.namespace}/${.PVC.name}", "team-a/data"),
        ("${.pvc.labels.app}-${.pvc.annotations.owner}", "web-alice"),
        ("${.pvc.annotations.juicefs.com/dir}", "reports"),
        ("${.pvc.annotations.nested}/${.pvc.name}", "x/y/data"),
        ("static-dir", "static-dir"),
        ("${.pvc.name}-${.pvc.name}", "data-data"),
    ],
)
def test_path_pattern_resolves_to_readable_directory(pattern: str, expected: str) -> None:
    assert resolve_path_pattern(pattern, CLAIM) == expected


def test_node_templates_need_a_selected_node() -> None:
    with_node = ClaimFacts(**{**CLAIM.__dict__, "node": NODE})
    assert resolve_path_pattern("${.node.name}/${.node.labels.zone}-${.node.annotations.rack}", with_node) == (
        "node-1/z1-r7"
    )
    assert expand("${.node.podCIDR}", with_node, "x") == "10.1.0.0/24"
    with pytest.raises(InvalidArgument, match=r"selected node.*WaitForFirstConsumer"):
        resolve_path_pattern("${.node.name}", CLAIM)
    assert uses_node("a-${.node.name}") and not uses_node("${.pvc.name}")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("${.pvc.annotations.escape}", r"contains \.\."),
        ("${.pvc.annotations.root}", "file system root"),
        ("${.pvc.annotations.empty}", "file system root"),
        ("", "file system root"),
        ("${.pvc.annotations.abs}", "absolute path '/etc'"),
        ("/${.pvc.name}", "absolute path"),
        ("a//${.pvc.name}", "empty segment"),
        ("${.pvc.name}/", "empty segment"),
        ("./${.pvc.name}", r"contains \."),
        ("${.pvc.annotations.ctrl}", "control characters"),
        ("${.pvc.labels.team}", "label 'team', which PVC team-a/data does not have"),
        ("${.pvc.annotations.missing}", "annotation 'missing', which PVC team-a/data does not have"),
        ("${.pvc.uid}", r"unknown template '\$\{\.pvc\.uid\}'"),
        ("${pvc.name}", r"unknown template '\$\{pvc\.name\}'"),
        ("${.pvc.name", r"unknown template '\$\{\.pvc\.name'"),
        ("x" * 256, "longer than 255 bytes"),
    ],
)
def test_bad_patterns_are_refused_precisely(pattern: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        resolve_path_pattern(pattern, CLAIM)
    assert caught.value.message.startswith("pathPattern ")


def test_expand_is_used_for_other_parameters_and_mount_options() -> None:
    assert expand("cache-dir=/var/jfs/${.pvc.namespace}", CLAIM, "mountOptions item 1") == "cache-dir=/var/jfs/team-a"
    with pytest.raises(InvalidArgument, match=r"^mountOptions item 2: "):
        expand("${.pvc.labels.nope}", CLAIM, "mountOptions item 2")


def test_secret_reference_follows_external_provisioner() -> None:
    assert secret_reference("jfs-${pvc.name}", "${pvc.namespace}", CLAIM, "pvc-1", "x") == ("team-a", "jfs-data")
    assert secret_reference("${pvc.annotations['owner']}-secret", "kube-system", CLAIM, "pvc-1", "x") == (
        "kube-system",
        "alice-secret",
    )
    assert secret_reference("${pv.name}", "default", CLAIM, "pvc-1", "x") == ("default", "pvc-1")
    assert secret_reference(None, None, CLAIM, "pvc-1", "x") is None
    assert secret_reference("", "", CLAIM, "pvc-1", "x") is None


@pytest.mark.parametrize(
    ("name", "namespace", "message"),
    [
        ("s", None, "both be set or both be unset"),
        (None, "ns", "both be set or both be unset"),
        ("s", "${pvc.name}", r"namespace: invalid tokens \['pvc.name'\]"),
        ("${pvc.labels['x']}", "ns", "name: invalid tokens"),
        ("${pvc.annotations['missing']}", "ns", "invalid tokens"),
        ("Bad_Name", "ns", "'Bad_Name', which is not a valid Secret name"),
        ("${pvc.annotations['abs']}", "ns", "resolved to '/etc', which is not a valid Secret name"),
        ("s", "Bad", "not a valid namespace"),
    ],
)
def test_secret_reference_refusals(name: str | None, namespace: str | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        secret_reference(name, namespace, CLAIM, "pvc-1", "StorageClass sc provisioner secret")
