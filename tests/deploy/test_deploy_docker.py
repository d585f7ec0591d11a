"""deploy/docker: the Dockerfiles and compose files parse, their commands are ones bert-serving-start's and
bert-export's own parsers accept, the bridge image needs no TensorFlow (issue 12, point 3), and each service's user
can write the volumes it writes (issue 20, item 7).

Docker itself cannot run here; what a build would copy and install is checked against the repository instead.
"""
from __future__ import annotations

import io
import json
import re
import shlex
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
EXPORT_SIDE = {"tensorflow", "onnx", "onnxruntime", "pytriton", "safetensors", "torch"}


def instructions(name: str) -> list[dict]:
    return parse_dockerfile((DOCKER / name).read_bytes())


def parse_dockerfile(text: bytes) -> list[dict]:
    parser = DockerfileParser(fileobj=io.BytesIO(text))
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


ROOT = "0"


def image_owners(steps: list[dict]) -> tuple[str, dict[str, str]]:
    """(the user the image runs as, {folder: owner uid}) for the folders its final stage makes, as a build would
    leave them: RUN steps run as the USER of that moment (root by default), ``mkdir`` creates folders owned by it,
    ``chown`` hands them over, and a folder declared VOLUME keeps what it had then."""
    users = {"root": ROOT}
    user, owners, frozen = ROOT, {}, set()
    for step in final_stage(steps):
        kind, value = step["instruction"], step["value"]
        if kind == "USER":
            user = users.get(value.split(":")[0], value.split(":")[0])
        elif kind == "VOLUME":
            frozen |= set(json.loads(value) if value.startswith("[") else value.split())
        elif kind == "RUN":
            for command in re.split(r"&&|;", value):
                words = shlex.split(command)
                if not words:
                    continue
                program, arguments = words[0], [w for w in words[1:] if not w.startswith("-")]
                options = dict(zip(words[1:], words[2:]))
                if program == "useradd":
                    users[words[-1]] = options.get("--uid") or options.get("-u")
                changed = {}
                if program == "mkdir":
                    changed = {path: user for path in arguments if path not in owners}
                elif program == "chown":
                    owner, *paths = arguments
                    changed = {path: owner.split(":")[0] for path in paths}
                owners.update({path: users.get(owner, owner) for path, owner in changed.items() if path not in frozen})
    return user, owners


def start_order(services: dict) -> list[str]:
    """Services in the order compose starts them: each after everything it depends on."""
    order: list[str] = []
    while len(order) < len(services):
        ready = [name for name, service in services.items()
                 if name not in order and set(service.get("depends_on", {})) <= set(order)]
        assert ready, f"depends_on has a cycle among {set(services) - set(order)}"
        order += sorted(ready)
    return order


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.gpu.yaml")])
def test_each_service_can_write_the_volumes_it_writes(files):
    """A new named volume takes the owner of the mount folder in the image of the first container that mounts it (root
    when that image has no such folder); a service writes it only as that owner or as root."""
    services = compose(*files)["services"]

    def runs_as(name: str) -> tuple[str, dict[str, str]]:
        service = services[name]
        dockerfile = service["build"]["dockerfile"].split("/")[-1] if "build" in service else None
        user, owners = image_owners(instructions(dockerfile)) if dockerfile else (ROOT, {})  # external: root
        return str(service.get("user", user)).split(":")[0], owners

    mounts: dict[str, list[tuple[str, str, bool]]] = {}
    for name in start_order(services):
        for volume in services[name].get("volumes", []):
            source, path, *mode = volume.split(":")
            mounts.setdefault(source, []).append((name, path, "ro" in mode))
    writers = 0
    for volume, users in mounts.items():
        first, first_path, _ = users[0]
        owner = runs_as(first)[1].get(first_path, ROOT)
        for name, path, read_only in users:
            if not read_only:
                writers += 1
                user = runs_as(name)[0]
                assert user in (ROOT, owner), (f"{name} runs as {user} and writes volume '{volume}' at {path}, which "
                                               f"starts owned by {owner} ({first}'s image)")
    assert writers, "no service writes a volume: the export's must"


def test_the_ownership_model_reads_the_old_export_image_as_root_owned():
    """The export image before /models was made and handed to its user: the volume would start root-owned."""
    old = ("FROM python:3.11-slim\nRUN useradd --system --uid 10001 export\nWORKDIR /home/export\nUSER 10001\n"
           "RUN mkdir -p /home/export/.cache\n")
    fixed = ("FROM python:3.11-slim\nRUN useradd --system --uid 10001 export && mkdir /models && chown export /models\n"
             "VOLUME /models\nUSER 10001\n")
    too_late = "FROM python:3.11-slim\nRUN mkdir /models\nVOLUME /models\nRUN chown 10001:10001 /models\nUSER 10001\n"
    for text, expected in ((old, None), (fixed, "10001"), (too_late, ROOT)):
        user, owners = image_owners(parse_dockerfile(text.encode()))
        assert user == "10001" and owners.get("/models") == expected, text
