"""deploy/docker: the Dockerfiles and compose files parse, their commands are ones bert-serving-start's and
bert-export's own parsers accept, and the bridge image needs no TensorFlow (issue 12, point 3).

Docker itself cannot run here; what a build would copy and install is checked against the repository instead.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from bert_bridge.config import parse_args
from deploy_files import DEPLOY, REPO_ROOT, option, parse_export_args

DOCKER = DEPLOY / "docker"
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# Imported only by bert-export or the embedded tritonserver: never by a bridge serving through --triton-url.
EXPORT_SIDE = {"tensorflow", "tf2onnx", "onnx", "onnxruntime", "pytriton", "safetensors", "torch"}


def instructions(name: str) -> list[dict]:
    parser = DockerfileParser(fileobj=io.BytesIO((DOCKER / name).read_bytes()))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def final_stage(steps: list[dict]) -> list[dict]:
    starts = [n for n, step in enumerate(steps) if step["instruction"] == "FROM"]
    return steps[starts[-1]:]


def exec_form(steps: list[dict], instruction: str) -> list[str]:
    (value,) = [step["value"] for step in steps if step["instruction"] == instruction]
    return json.loads(value)  # the exec (JSON) form: signals reach the process, no shell in between


@pytest.mark.parametrize("dockerfile, script", [("bridge.Dockerfile", "bert-serving-start"),
                                                ("export.Dockerfile", "bert-export")])
def test_images_run_a_project_command_as_a_non_root_user(dockerfile, script):
    steps = final_stage(instructions(dockerfile))
    assert exec_form(steps, "ENTRYPOINT") == [script] and script in SCRIPTS
    (user,) = [step["value"] for step in steps if step["instruction"] == "USER"]
    assert user not in ("root", "0") and int(user) >= 1000
    arguments = exec_form(steps, "CMD")
    if script == "bert-serving-start":
        config = parse_args(arguments)
        assert config.triton_urls and config.model_dir.is_absolute()  # a folder the export wrote, an external Triton
    else:
        assert parse_export_args(arguments).target.value == "onnx"


@pytest.mark.parametrize("dockerfile", ["bridge.Dockerfile", "export.Dockerfile"])
def test_what_the_images_copy_exists_in_the_repository(dockerfile):
    ignored = {line.strip().rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copies = [step["value"].split() for step in instructions(dockerfile) if step["instruction"] == "COPY"]
    sources = [source for words in copies if not words[0].startswith("--from") for source in words[:-1]]
    assert {"pyproject.toml", "bridge", "exporter", "client"} <= set(sources)
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert source not in ignored, f"{source} is copied but .dockerignore leaves it out"


def test_the_bridge_image_installs_only_the_bridges_runtime():
    runs = [step["value"] for step in final_stage(instructions("bridge.Dockerfile")) if step["instruction"] == "RUN"]
    installs = [part.strip() for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs and all("--no-deps" in part or "-r /tmp/bridge-requirements.txt" in part for part in installs)
    listed = {Requirement(line).name for line in runtime_requirements()}
    assert not listed & EXPORT_SIDE


def runtime_requirements() -> list[str]:
    lines = (DOCKER / "bridge-requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def distributions_needed_by(requirements: list[str]) -> set[str]:
    """The requirements and everything they depend on, as installed here (extras and markers honoured)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    found: set[str] = set()
    queue = [(Requirement(line), "") for line in requirements]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras) or [""]
        if (name, tuple(extras)) in found:
            continue
        found.add((name, tuple(extras)))
        for needed in metadata.requires(requirement.name) or []:
            for chosen in extras:
                queue.append((Requirement(needed), chosen))
    return {name for name, _ in found}


def test_every_module_the_bridge_loads_comes_from_the_runtime_requirements():
    # Every bert_bridge module, and what the serving path imports inside functions (the gRPC client, the model
    # config reader); then each third-party module in sys.modules is traced to the distribution that installed it.
    script = """
import importlib, json, pkgutil, sys
before = set(sys.modules)  # what the interpreter and site-packages' .pth hooks load, bridge or not
import bert_bridge
for module in pkgutil.iter_modules(bert_bridge.__path__):
    importlib.import_module(f"bert_bridge.{module.name}")
import tritonclient.grpc.aio, bert_exporter.triton_config, zmq
from importlib.metadata import packages_distributions
owners = packages_distributions()
top = {name.split(".")[0] for name in set(sys.modules) - before}
print(json.dumps({name: owners.get(name, []) for name in top if name in owners}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert not set(loaded) & EXPORT_SIDE, f"the bridge imports export-side modules: {set(loaded) & EXPORT_SIDE}"
    from packaging.utils import canonicalize_name

    ours = {"bert-serving-triton", "bert-serving-client-triton"}
    allowed = distributions_needed_by(runtime_requirements()) | ours
    missing = {module: owners for module, owners in loaded.items()
               if not {canonicalize_name(owner) for owner in owners} & allowed}
    assert not missing, f"add their distributions to deploy/docker/bridge-requirements.txt: {missing}"


def compose(*names: str) -> dict:
    """The compose files merged the way `docker compose -f A -f B` merges them (maps merge, command is replaced)."""
    def merge(base, override):
        if isinstance(base, dict) and isinstance(override, dict):
            return {**base, **{k: merge(base[k], v) if k in base else v for k, v in override.items()}}
        return override

    merged: dict = {}
    for name in names:
        merged = merge(merged, yaml.safe_load((DOCKER / name).read_text()))
    return merged


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.gpu.yaml")])
def test_compose_exports_then_serves_through_nvidia_triton_and_a_bridge(files):
    services = compose(*files)["services"]
    assert set(services) == {"export", "triton", "bridge"}
    export = parse_export_args(services["export"]["command"])
    assert (export.cpu) == ("compose.gpu.yaml" not in files)

    triton = services["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"
    repository = option(triton["command"], "--model-repository")
    assert option(triton["command"], "--load-model") == export.name

    bridge = services["bridge"]
    config = parse_args(bridge["command"])
    assert bridge["depends_on"]["triton"]["condition"] == "service_healthy"
    (target,) = config.triton_urls
    assert target.split(":")[0] == "triton"  # the service name: several addresses with --scale triton=N

    def volume(service: dict, path: str) -> str:
        (name,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == path]
        return name

    assert volume(services["export"], str(export.output)) == volume(triton, repository)
    assert volume(bridge, str(config.model_dir.parent)) == volume(triton, repository)
    assert str(config.model_dir.name) == export.name
    published = {int(p.split(":")[1]) for p in bridge["ports"]}
    assert {config.port, config.port_out, config.http_port} == published
    for service in ("export", "bridge"):
        build = services[service]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    if "compose.gpu.yaml" in files:
        (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
