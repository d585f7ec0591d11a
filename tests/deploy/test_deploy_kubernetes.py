"""deploy/k8s: every resource of the base and the GPU overlay validates offline (kubernetes-validate, strict) against
current Kubernetes versions, and the pieces fit: the commands are ones the bridge's and bert-export's own parsers
accept, names and ports point at what exists, the probes hit the routes each server has (issue 12, point 3)."""
from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bert_bridge.config import parse_args
from deploy_files import DEPLOY, REPO_ROOT, container, find, option, parse_export_args, render

# The oldest Kubernetes release still maintained when this was written, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
BASE = DEPLOY / "k8s" / "base"
GPU = DEPLOY / "k8s" / "overlays" / "gpu"
ONE_NODE = DEPLOY / "k8s" / "overlays" / "one-node"
SCALING = REPO_ROOT / "docs" / "SCALING.md"


@pytest.fixture(scope="module", params=["base", "gpu", "one-node"])
def rendered(request) -> list[dict]:
    return render({"base": BASE, "gpu": GPU, "one-node": ONE_NODE}[request.param])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_validates_in_strict_mode(rendered, version):
    kinds = set()
    for resource in rendered:
        kubernetes_validate.validate(resource, version, strict=True)  # raises ValidationError with the path
        kinds.add(resource["kind"])
    assert kinds == {"PersistentVolumeClaim", "Job", "Deployment", "Service", "HorizontalPodAutoscaler"}


def test_a_misspelt_field_is_caught_by_the_validation():
    job = find(render(BASE), "Job", "bert-export")
    job["spec"]["template"]["spec"]["containers"][0]["argz"] = ["oops"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


def mounts_of(workload: dict, container_name: str) -> dict[str, str]:
    """mountPath -> claimName for the PersistentVolumeClaims a container mounts."""
    spec = workload["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}
    return {m["mountPath"]: claims[m["name"]] for m in container(workload, container_name)["volumeMounts"]
            if m["name"] in claims}


def test_export_triton_and_bridges_share_one_model_folder(rendered):
    job = find(rendered, "Job", "bert-export")
    export = parse_export_args(container(job, "export")["args"])
    assert export.target.value in ("onnx", "tensorrt")  # what NVIDIA's tritonserver runs
    claim = mounts_of(job, "export")[str(export.output)]
    find(rendered, "PersistentVolumeClaim", claim)

    triton = find(rendered, "Deployment", "triton")
    args = container(triton, "triton")["args"]
    repository = option(args, "--model-repository")
    assert mounts_of(triton, "triton")[repository] == claim
    assert option(args, "--load-model") == export.name

    bridge = find(rendered, "Deployment", "bridge")
    config = parse_args(container(bridge, "bridge")["args"])
    assert mounts_of(bridge, "bridge")[str(config.model_dir.parent)] == claim
    assert config.model_dir.name == export.name
    for workload in (triton, bridge):  # both wait until the export's manifest (written last) is there
        waiting = workload["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
        assert f"{config.model_dir}/bert_export.json" in waiting


def test_bridges_point_at_the_headless_triton_service(rendered):
    bridge = find(rendered, "Deployment", "bridge")
    config = parse_args(container(bridge, "bridge")["args"])
    assert bridge["spec"]["replicas"] >= 2 and not config.embedded_triton
    (target,) = config.triton_urls
    host, port = target.rsplit(":", 1)
    service = find(rendered, "Service", host)
    assert service["spec"]["clusterIP"] == "None"  # headless: one address per Triton pod, balanced by the bridge
    triton = find(rendered, "Deployment", "triton")
    assert service["spec"]["selector"].items() <= triton["spec"]["template"]["metadata"]["labels"].items()
    grpc = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    container_ports = {p["name"]: p["containerPort"] for p in container(triton, "triton")["ports"]}
    assert grpc and container_ports[grpc[0]["targetPort"]] == 8001  # tritonserver's gRPC port


def test_probes_use_each_servers_health_routes(rendered):
    triton = container(find(rendered, "Deployment", "triton"), "triton")
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # minutes for the model to load
    volumes = find(rendered, "Deployment", "triton")["spec"]["template"]["spec"]["volumes"]
    shm = [m for m in triton["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm and [v for v in volumes if v["name"] == shm[0]["name"]][0]["emptyDir"]["medium"] == "Memory"
    assert {p["containerPort"] for p in triton["ports"]} == {8000, 8001, 8002}

    bridge = container(find(rendered, "Deployment", "bridge"), "bridge")
    config = parse_args(bridge["args"])
    ports = {p["name"]: p["containerPort"] for p in bridge["ports"]}
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/health"
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports[bridge[probe]["httpGet"]["port"]] == config.http_port


def test_services_reach_the_bridge_ports_and_zeromq_keeps_a_client_on_one_bridge(rendered):
    bridge = find(rendered, "Deployment", "bridge")
    config = parse_args(container(bridge, "bridge")["args"])
    ports = {p["name"]: p["containerPort"] for p in container(bridge, "bridge")["ports"]}
    zmq = find(rendered, "Service", "bridge-zmq")
    assert zmq["spec"]["sessionAffinity"] == "ClientIP"
    assert {ports[p["targetPort"]] for p in zmq["spec"]["ports"]} == {config.port, config.port_out}
    http = find(rendered, "Service", "bridge-http")
    assert {ports[p["targetPort"]] for p in http["spec"]["ports"]} == {config.http_port}
    labels = bridge["spec"]["template"]["metadata"]["labels"]
    assert zmq["spec"]["selector"].items() <= labels.items() and http["spec"]["selector"].items() <= labels.items()


def test_autoscalers_target_the_deployments_and_the_documented_metric(rendered):
    triton_hpa = find(rendered, "HorizontalPodAutoscaler", "triton")
    bridge_hpa = find(rendered, "HorizontalPodAutoscaler", "bridge")
    for hpa, name in ((triton_hpa, "triton"), (bridge_hpa, "bridge")):
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        find(rendered, "Deployment", name)
    (metric,) = triton_hpa["spec"]["metrics"]
    rules = yaml.safe_load((BASE / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    (rule,) = [r for r in rules if r["name"]["as"] == metric["pods"]["metric"]["name"]]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]  # Triton's queue time...
    assert "nv_inference_request_success" in rule["metricsQuery"]  # ...per request
    assert bridge_hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert container(find(rendered, "Deployment", "bridge"), "bridge")["resources"]["requests"]["cpu"]


def test_the_gpu_overlay_gives_triton_a_gpu_and_exports_for_it():
    base, gpu = render(BASE), render(GPU)
    limits = container(find(gpu, "Deployment", "triton"), "triton")["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container(find(base, "Deployment", "triton"), "triton")["resources"]["limits"]
    assert parse_export_args(container(find(base, "Job", "bert-export"), "export")["args"]).cpu
    assert not parse_export_args(container(find(gpu, "Job", "bert-export"), "export")["args"]).cpu
    # Everything else is the base's.
    assert [(r["kind"], r["metadata"]["name"]) for r in gpu] == [(r["kind"], r["metadata"]["name"]) for r in base]


def test_every_manifest_file_is_used():
    used = set()
    for folder in (BASE, GPU, ONE_NODE):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        used |= {(folder / entry).resolve() for entry in kustomization.get("resources", [])}
        used |= {(folder / patch["path"]).resolve() for patch in kustomization.get("patches", [])}
    files = {p.resolve() for p in (DEPLOY / "k8s").rglob("*.yaml")
             if p.name not in ("kustomization.yaml", "prometheus-adapter-rules.yaml")}
    assert files <= used, f"manifests no kustomization lists: {sorted(str(p) for p in files - used)}"


def test_the_one_node_overlay_claims_read_write_once_and_changes_nothing_else():
    """A one-node cluster's storage class offers ReadWriteOnce only: the base's ReadWriteMany claim stays Pending."""
    base, one_node = render(BASE), render(ONE_NODE)
    assert find(base, "PersistentVolumeClaim", "bert-models")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert find(one_node, "PersistentVolumeClaim", "bert-models")["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert [r for r in base if r["kind"] != "PersistentVolumeClaim"] == \
           [r for r in one_node if r["kind"] != "PersistentVolumeClaim"]
    docs = SCALING.read_text()
    assert "deploy/k8s/overlays/one-node" in docs and "`Pending`" in docs


def test_our_images_are_built_pushed_and_pulled_as_the_docs_say():
    """The manifests name images no registry publishes: SCALING.md builds each from its Dockerfile and pushes it, and
    their containers pull only what a node lacks (images loaded into a local cluster's node run as they are)."""
    docs = SCALING.read_text()
    name_of = lambda tag: tag.rsplit("/", 1)[-1].split(":")[0]  # noqa: E731  registry/name:tag -> name
    built = {name_of(tag): REPO_ROOT / dockerfile
             for dockerfile, tag in re.findall(r"docker build -f (deploy/docker/\S+) -t (\S+) \.", docs)}
    pushed = {name_of(tag) for tag in re.findall(r"docker push (\S+)", docs)}
    entrypoints = {"bert-serving-export": "bert-export", "bert-serving-bridge": "bert-serving-start"}
    ours = []
    for workload in render(BASE):
        spec = workload["spec"].get("template", {}).get("spec")
        for c in (spec.get("initContainers", []) + spec["containers"]) if spec else []:
            name = c["image"].split(":")[0]
            if "/" in name:  # a published image: nvcr.io/nvidia/tritonserver
                continue
            ours.append(name)
            assert c.get("imagePullPolicy") == "IfNotPresent", f"{workload['metadata']['name']}/{c['name']}"
            assert name in built and name in pushed, f"SCALING.md does not build and push {name}"
            assert f'ENTRYPOINT ["{entrypoints[name]}"]' in built[name].read_text()
    assert sorted(set(ours)) == sorted(entrypoints)
