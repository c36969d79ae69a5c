#!/usr/bin/env python3
"""Drives a skiff server with the official Python client (PyPI `kubernetes`).

Usage: client_check.py KUBECONFIG

Every check is an assert with a message saying what was expected; the script prints "OK" at the
end and exits non-zero on the first failure.
"""

import sys
import threading
import time
import traceback
import uuid

import kubernetes
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException


def step(msg):
    print(f"-- {msg}", flush=True)


def pod_manifest(name, labels=None):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox:1.36")]),
    )


def main(kubeconfig):
    step(f"kubernetes client {kubernetes.__version__}")
    config.load_kube_config(config_file=kubeconfig)
    api_client = client.ApiClient()
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    # --- /version/ (the client asks with a trailing slash) ---
    step("VersionApi.get_code")
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1", f"/version major: expected '1', got {version.major!r}"
    assert version.minor, f"/version minor is empty: {version!r}"
    assert version.git_version, f"/version gitVersion is empty: {version!r}"

    # --- namespace ---
    ns = f"py-{uuid.uuid4().hex[:8]}"
    step(f"create namespace {ns}")
    created_ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    assert created_ns.metadata.name == ns, f"namespace name: expected {ns}, got {created_ns.metadata.name}"
    assert created_ns.metadata.uid, "created namespace has no uid"

    # --- pods: create / list with label selector / read ---
    step("create pods")
    a = core.create_namespaced_pod(ns, pod_manifest("pod-a", {"app": "web", "tier": "front"}))
    assert a.metadata.name == "pod-a", f"created pod name: {a.metadata.name}"
    assert a.metadata.resource_version, "created pod has no resourceVersion"
    assert a.metadata.namespace == ns, f"created pod namespace: expected {ns}, got {a.metadata.namespace}"
    core.create_namespaced_pod(ns, pod_manifest("pod-b", {"app": "db"}))

    step("list pods with label_selector")
    listed = core.list_namespaced_pod(ns, label_selector="app=web")
    names = sorted(p.metadata.name for p in listed.items)
    assert names == ["pod-a"], f"list app=web: expected ['pod-a'], got {names}"
    assert listed.metadata.resource_version, "pod list has no resourceVersion"
    every = sorted(p.metadata.name for p in core.list_namespaced_pod(ns).items)
    assert every == ["pod-a", "pod-b"], f"list all pods: expected ['pod-a', 'pod-b'], got {every}"
    not_web = sorted(p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="app!=web").items)
    assert not_web == ["pod-b"], f"list app!=web: expected ['pod-b'], got {not_web}"

    step("read pod")
    read = core.read_namespaced_pod("pod-a", ns)
    assert read.metadata.labels == {"app": "web", "tier": "front"}, f"read pod labels: {read.metadata.labels}"
    assert read.spec.containers[0].image == "busybox:1.36", f"read pod image: {read.spec.containers[0].image}"
    assert read.metadata.uid == a.metadata.uid, "read pod uid differs from created pod uid"

    # --- 404 ---
    step("read missing pod -> ApiException 404")
    try:
        core.read_namespaced_pod("no-such-pod", ns)
    except ApiException as e:
        assert e.status == 404, f"missing pod: expected status 404, got {e.status}: {e.body}"
    else:
        raise AssertionError("reading a missing pod did not raise ApiException")

    # --- deployments ---
    step("create deployment")
    labels = {"app": "py-deploy"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
            ),
        ),
    )
    d = apps.create_namespaced_deployment(ns, deployment)
    assert d.metadata.name == "web", f"created deployment name: {d.metadata.name}"
    gen_before = d.metadata.generation
    assert gen_before is not None and gen_before >= 1, f"created deployment generation: {gen_before}"

    step("patch deployment image (strategic merge)")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}
    patched = apps.patch_namespaced_deployment("web", ns, patch)
    containers = patched.spec.template.spec.containers
    assert len(containers) == 1, f"strategic merge should merge containers by name, got {len(containers)} containers"
    assert containers[0].image == "nginx:1.27", f"patched image: expected nginx:1.27, got {containers[0].image}"
    assert patched.metadata.generation > gen_before, (
        f"generation should go up on a spec change: before {gen_before}, after {patched.metadata.generation}"
    )
    reread = apps.read_namespaced_deployment("web", ns)
    assert reread.spec.template.spec.containers[0].image == "nginx:1.27", "re-read deployment image not patched"

    step("patch deployment scale to 3")
    scale = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3, f"scale response replicas: expected 3, got {scale.spec.replicas}"
    read_scale = apps.read_namespaced_deployment_scale("web", ns)
    assert read_scale.spec.replicas == 3, f"read scale replicas: expected 3, got {read_scale.spec.replicas}"
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3, "deployment spec.replicas not 3 after scale"

    # --- watch ---
    step("watch pods (ADDED/MODIFIED/DELETED)")
    watch_ns = f"{ns}-w"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=watch_ns)))
    errors = []

    def mutate():
        try:
            time.sleep(0.7)
            core.create_namespaced_pod(watch_ns, pod_manifest("watched"))
            time.sleep(0.2)
            core.patch_namespaced_pod("watched", watch_ns, {"metadata": {"labels": {"seen": "yes"}}})
            time.sleep(0.2)
            core.delete_namespaced_pod("watched", watch_ns, grace_period_seconds=0)
        except Exception as e:  # reported by the main thread
            errors.append(traceback.format_exc())

    w = watch.Watch()
    writer = threading.Thread(target=mutate, daemon=True)
    writer.start()
    events = []
    started = time.monotonic()
    for event in w.stream(core.list_namespaced_pod, watch_ns, timeout_seconds=5):
        obj = event["object"]
        events.append((event["type"], obj.metadata.name, dict(obj.metadata.labels or {})))
        if event["type"] == "DELETED" and obj.metadata.name == "watched":
            w.stop()
    elapsed = time.monotonic() - started
    writer.join(timeout=10)
    assert not errors, f"writer thread failed:\n{errors[0]}"
    types = [t for t, name, _ in events if name == "watched"]
    assert "ADDED" in types, f"watch: no ADDED event; got {events}"
    assert "MODIFIED" in types, f"watch: no MODIFIED event; got {events}"
    assert "DELETED" in types, f"watch: no DELETED event; got {events}"
    assert types.index("ADDED") < types.index("MODIFIED") < types.index("DELETED"), f"watch: events out of order: {types}"
    assert any(t == "MODIFIED" and lbl.get("seen") == "yes" for t, _, lbl in events), (
        f"watch: MODIFIED event does not carry the new label: {events}"
    )
    assert elapsed < 8, f"watch took {elapsed:.1f}s (timeout_seconds=5)"

    # --- delete ---
    step("delete pod")
    core.delete_namespaced_pod("pod-b", ns)
    deadline = time.monotonic() + 10
    while True:
        try:
            core.read_namespaced_pod("pod-b", ns)
        except ApiException as e:
            assert e.status == 404, f"read deleted pod: expected 404, got {e.status}: {e.body}"
            break
        assert time.monotonic() < deadline, "pod-b still readable 10s after delete"
        time.sleep(0.2)
    remaining = sorted(p.metadata.name for p in core.list_namespaced_pod(ns).items)
    assert "pod-b" not in remaining, f"deleted pod still listed: {remaining}"

    # --- dynamic client + server-side apply ---
    step("dynamic client: ConfigMap server_side_apply")
    dyn = dynamic.DynamicClient(api_client)
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    assert cms.namespaced, "dynamic ConfigMap resource should be namespaced"
    assert cms.name == "configmaps", f"dynamic ConfigMap resource name: {cms.name}"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": ns}, "data": {"k": "v1"}}
    applied = cms.server_side_apply(body=body, namespace=ns, field_manager="py-check")
    assert applied.data.k == "v1", f"applied ConfigMap data: {applied.data}"
    managers = [m.manager for m in (applied.metadata.managedFields or [])]
    assert "py-check" in managers, f"managedFields should name field manager py-check, got {managers}"
    body["data"] = {"k": "v2", "extra": "x"}
    reapplied = cms.server_side_apply(body=body, namespace=ns, field_manager="py-check")
    assert reapplied.data.k == "v2" and reapplied.data.extra == "x", f"re-applied ConfigMap data: {reapplied.data}"
    got = cms.get(name="applied", namespace=ns)
    assert got.data.k == "v2", f"dynamic get after apply: {got.data}"
    assert core.read_namespaced_config_map("applied", ns).data == {"k": "v2", "extra": "x"}, "typed read of applied ConfigMap"

    step("dynamic client: 404")
    try:
        cms.get(name="missing", namespace=ns)
    except ApiException as e:
        assert e.status == 404, f"dynamic get missing: expected 404, got {e.status}"
    else:
        raise AssertionError("dynamic get of a missing ConfigMap did not raise")

    print("OK", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client_check.py KUBECONFIG")
    main(sys.argv[1])
