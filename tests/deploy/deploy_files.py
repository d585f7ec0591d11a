"""Reading deploy/: YAML documents, a small kustomize (resources, labels, strategic-merge patches), container args.

No kustomize or kubectl binary is needed: the overlays used here only list resources and strategic-merge patches,
which this module applies the way kustomize does for them (maps merge, lists of named items merge by name, other
lists are replaced), and it fails when a patch names a resource that does not exist.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"


def load_documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def strategic_merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    named = lambda items: isinstance(items, list) and items and all(isinstance(i, dict) and "name" in i for i in items)
    if named(base) and named(patch):
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = [i for i, existing in enumerate(merged) if existing["name"] == item["name"]]
            if match:
                merged[match[0]] = strategic_merge(merged[match[0]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def key(resource: dict) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def render(folder: Path) -> list[dict]:
    """The resources ``kubectl apply -k folder`` would create."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "patches", "labels"}
    assert not unknown, f"{folder}: this test's kustomize does not know {unknown}"
    resources: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        resources += render(path) if path.is_dir() else load_documents(path)
    for labels in kustomization.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(labels["pairs"])
    for patch_entry in kustomization.get("patches", []):
        for patch in load_documents(folder / patch_entry["path"]):
            matches = [i for i, resource in enumerate(resources) if key(resource) == key(patch)]
            assert matches, f"{patch_entry['path']} patches {key(patch)}, which {folder} does not have"
            resources[matches[0]] = strategic_merge(resources[matches[0]], patch)
    names = [key(resource) for resource in resources]
    assert len(names) == len(set(names)), f"duplicate resources in {folder}: {names}"
    return resources


def find(resources: list[dict], kind: str, name: str) -> dict:
    matches = [r for r in resources if key(r) == (kind, name)]
    assert matches, f"no {kind} {name}"
    return matches[0]


def container(workload: dict, name: str) -> dict:
    spec = workload["spec"]["template"]["spec"]
    matches = [c for c in spec["containers"] if c["name"] == name]
    assert matches, f"no container {name} in {workload['metadata']['name']}"
    return matches[0]


def option(args: list[str], name: str) -> str:
    """The value of ``name VALUE`` or ``name=VALUE`` in a command line."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} is not in {args}")


def parse_export_args(args: list[str]):
    """bert-export's own click parser and option checks, without exporting anything."""
    from bert_exporter.cli import command, fold_list_options
    from bert_exporter.options import ExportOptions

    context = command.make_context("bert-export", fold_list_options(list(args)))
    params = dict(context.params)
    params.pop("verbose")
    params["device_map"] = params["device_map"] or ()
    params["model_dir"] = params["model_dir"] or Path("/packaged")
    return ExportOptions(**params)
