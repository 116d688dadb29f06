"""Create/get/update semantics and the Status bodies of failures, as a real API server answers."""

from __future__ import annotations

from tests.support.kube import KubeAPI

from .helpers import configmap, json_body, pod


async def test_create_sets_system_metadata_and_global_resource_version(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with kube_api.session() as s:
        async with s.post(f"/api/v1/namespaces/{kube_namespace}/configmaps", json=configmap("a")) as resp:
            assert resp.status == 201
            first = await json_body(resp)
        async with s.post(
            f"/api/v1/namespaces/{kube_namespace}/secrets",
            json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"}},
        ) as resp:
            second = await json_body(resp)
    meta = first["metadata"]
    assert first["apiVersion"] == "v1" and first["kind"] == "ConfigMap"
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["namespace"] == kube_namespace
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])  # one counter for all kinds
    assert second["type"] == "Opaque"


async def test_get_missing_is_404_status(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with kube_api.session() as s, s.get(f"/api/v1/namespaces/{kube_namespace}/pods/nope") as resp:
        assert resp.status == 404
        body = await json_body(resp)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == 404
    assert body["reason"] == "NotFound"
    assert body["message"] == 'pods "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "pods"}


async def test_grouped_not_found_names_the_group(kube_api: KubeAPI, kube_namespace: str) -> None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/nope"
    async with kube_api.session() as s, s.get(path) as resp:
        body = await json_body(resp)
    assert body["message"] == 'leases.coordination.k8s.io "nope" not found'
    assert body["details"] == {"name": "nope", "group": "coordination.k8s.io", "kind": "leases"}


async def test_create_existing_is_409_already_exists(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(configmap("dup"), kube_namespace)
    async with (
        kube_api.session() as s,
        s.post(f"/api/v1/namespaces/{kube_namespace}/configmaps", json=configmap("dup")) as resp,
    ):
        assert resp.status == 409
        body = await json_body(resp)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "dup" already exists'
    assert body["details"] == {"name": "dup", "kind": "configmaps"}


async def test_stale_update_and_patch_are_409_conflict(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(configmap("cas"), kube_namespace)
    stale = created["metadata"]["resourceVersion"]
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps/cas"
    async with kube_api.session() as s:
        async with s.put(path, json={**created, "data": {"k": "2"}}) as resp:
            assert resp.status == 200
            updated = await json_body(resp)
        assert int(updated["metadata"]["resourceVersion"]) > int(stale)
        async with s.put(path, json={**created, "data": {"k": "3"}}) as resp:
            assert resp.status == 409
            body = await json_body(resp)
        async with s.patch(
            path,
            data=f'{{"metadata":{{"resourceVersion":"{stale}"}},"data":{{"k":"4"}}}}',
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp:
            assert resp.status == 409
    assert body["reason"] == "Conflict" and body["code"] == 409
    assert body["message"] == (
        'Operation cannot be fulfilled on configmaps "cas": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert body["details"]["name"] == "cas"
    assert kube_api.get("configmaps", "cas", kube_namespace)["data"] == {"k": "2"}


async def test_update_without_resource_version_is_unconditional(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(configmap("free"), kube_namespace)
    body = {**created, "metadata": {k: v for k, v in created["metadata"].items() if k != "resourceVersion"}}
    async with (
        kube_api.session() as s,
        s.put(f"/api/v1/namespaces/{kube_namespace}/configmaps/free", json={**body, "data": {"x": "y"}}) as resp,
    ):
        assert resp.status == 200


async def test_noop_update_keeps_resource_version(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(configmap("same"), kube_namespace)
    again = kube_api.update(created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_invalid_name_is_422_with_causes(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.post(f"/api/v1/namespaces/{kube_namespace}/configmaps", json=configmap("Bad_Name")) as resp,
    ):
        assert resp.status == 422
        body = await json_body(resp)
    assert body["reason"] == "Invalid"
    assert body["message"].startswith(
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
        "a lowercase RFC 1123 subdomain must consist of"
    )
    assert body["details"]["kind"] == "ConfigMap" and body["details"]["name"] == "Bad_Name"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["details"]["causes"][0]["reason"] == "FieldValueInvalid"


async def test_namespace_names_are_rfc1123_labels(kube_api: KubeAPI) -> None:
    async with (
        kube_api.session() as s,
        s.post(
            "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}
        ) as resp,
    ):
        assert resp.status == 422


async def test_invalid_label_value_is_422(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.post(f"/api/v1/namespaces/{kube_namespace}/configmaps", json=configmap("lbl", {"k": "x" * 64})) as resp,
    ):
        assert resp.status == 422
        body = await json_body(resp)
    assert body["details"]["causes"][0]["field"] == "metadata.labels"


async def test_missing_name_is_422_and_generate_name_works(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with kube_api.session() as s:
        async with s.post(
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
        ) as resp:
            assert resp.status == 422
            body = await json_body(resp)
        assert "name or generateName is required" in body["message"]
        async with s.post(
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}},
        ) as resp:
            assert resp.status == 201
            created = await json_body(resp)
    name = created["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5


async def test_create_in_missing_namespace_is_404(kube_api: KubeAPI) -> None:
    async with (
        kube_api.session() as s,
        s.post("/api/v1/namespaces/does-not-exist/configmaps", json=configmap("x")) as resp,
    ):
        assert resp.status == 404
        body = await json_body(resp)
    assert body["reason"] == "NotFound"
    assert body["details"] == {"name": "does-not-exist", "kind": "namespaces"}


async def test_system_namespaces_exist(kube_api: KubeAPI) -> None:
    for name in ("default", "kube-system", "kube-public"):
        ns = kube_api.get("namespaces", name)
        assert ns["status"]["phase"] == "Active"
        assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == name


async def test_namespace_mismatch_and_url_name_mismatch_are_400(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(configmap("mm"), kube_namespace)
    async with kube_api.session() as s:
        async with s.post(
            f"/api/v1/namespaces/{kube_namespace}/configmaps", json=configmap("other", namespace="default")
        ) as resp:
            assert resp.status == 400
            assert (await json_body(resp))["reason"] == "BadRequest"
        async with s.put(f"/api/v1/namespaces/{kube_namespace}/configmaps/elsewhere", json=created) as resp:
            assert resp.status == 400


async def test_resource_version_on_create_is_rejected(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.post(f"/api/v1/namespaces/{kube_namespace}/configmaps", json=configmap("rv", resourceVersion="5")) as resp,
    ):
        assert resp.status == 500
        assert "resourceVersion should not be set on objects to be created" in (await json_body(resp))["message"]


async def test_update_of_missing_object_is_404_but_lease_put_creates(kube_api: KubeAPI, kube_namespace: str) -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "me"},
    }
    async with kube_api.session() as s:
        async with s.put(f"/api/v1/namespaces/{kube_namespace}/configmaps/ghost", json=configmap("ghost")) as resp:
            assert resp.status == 404
        async with s.put(f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/l", json=lease) as resp:
            assert resp.status == 201
            assert (await json_body(resp))["spec"]["holderIdentity"] == "me"


async def test_generation_bumps_on_spec_change_only(kube_api: KubeAPI, kube_namespace: str) -> None:
    job = kube_api.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36"}]}
                },
            },
        },
        kube_namespace,
    )
    assert job["metadata"]["generation"] == 1
    labelled = kube_api.patch("jobs.batch", "j", {"metadata": {"labels": {"a": "b"}}}, namespace=kube_namespace)
    assert labelled["metadata"]["generation"] == 1
    resumed = kube_api.patch("jobs.batch", "j", {"spec": {"suspend": False}}, namespace=kube_namespace)
    assert resumed["metadata"]["generation"] == 2


async def test_pod_defaults_and_immutable_spec(kube_api: KubeAPI, kube_namespace: str) -> None:
    created = kube_api.create(pod("p"), kube_namespace)
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["restartPolicy"] == "Always"
    assert created["spec"]["terminationGracePeriodSeconds"] == 30
    assert created["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    image = kube_api.patch(
        "pods",
        "p",
        {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}},
        namespace=kube_namespace,
        patch_type="strategic",
    )
    assert image["spec"]["containers"][0]["image"] == "busybox:1.37"
    async with (
        kube_api.session() as s,
        s.patch(
            f"/api/v1/namespaces/{kube_namespace}/pods/p",
            json={"spec": {"nodeName": "elsewhere"}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp,
    ):
        assert resp.status == 422
        body = await json_body(resp)
    assert "pod updates may not change fields other than" in body["message"]


async def test_secret_string_data_becomes_data(kube_api: KubeAPI, kube_namespace: str) -> None:
    secret = kube_api.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"token": "abc"}},
        kube_namespace,
    )
    assert secret["data"] == {"token": "YWJj"}
    assert "stringData" not in secret


async def test_service_gets_a_cluster_ip(kube_api: KubeAPI, kube_namespace: str) -> None:
    svc = kube_api.create(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
        kube_namespace,
    )
    assert svc["spec"]["clusterIP"].startswith("10.0.0.")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"][0]["targetPort"] == 80


async def test_events_v1_and_core_events_share_storage(kube_api: KubeAPI, kube_namespace: str) -> None:
    kube_api.create(
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "e1"},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "reportingController": "csi.juicefs.com/test",
            "reportingInstance": "node-1",
            "action": "Mount",
            "reason": "Mounted",
            "type": "Normal",
            "note": "hello",
            "regarding": {"kind": "Pod", "name": "p1", "namespace": kube_namespace},
        },
        kube_namespace,
    )
    core = kube_api.list("events", kube_namespace, field_selector="involvedObject.name=p1")
    assert [e["message"] for e in core["items"]] == ["hello"]
    assert core["items"][0]["apiVersion"] == "v1"
    assert kube_api.list("events.events.k8s.io", kube_namespace, field_selector="regarding.name=nope")["items"] == []


async def test_dry_run_does_not_persist(kube_api: KubeAPI, kube_namespace: str) -> None:
    async with (
        kube_api.session() as s,
        s.post(
            f"/api/v1/namespaces/{kube_namespace}/configmaps", params={"dryRun": "All"}, json=configmap("dry")
        ) as resp,
    ):
        assert resp.status == 201
        assert (await json_body(resp))["metadata"]["name"] == "dry"
    assert kube_api.get_or_none("configmaps", "dry", kube_namespace) is None
