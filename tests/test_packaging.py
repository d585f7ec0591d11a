"""The server distribution builds without setuptools' warnings about its layout, and its wheel carries the files that
are not Python modules: the dashboard's page, script and stylesheet, and the Triton model template."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from harness import REPO_ROOT

SOURCES = ("pyproject.toml", "README.md", "bridge", "exporter", "bench", "server")
# Where each source folder lands in the wheel (pyproject's package-dir).
INSTALLED_AS = {"bridge": "bert_bridge", "exporter": "bert_exporter", "bench": "bert_bench", "server": "bert_serving/server"}


def test_the_wheel_builds_without_layout_warnings_and_carries_every_file(tmp_path):
    # A copy, so the build writes nothing (build/, egg-info) into the checkout other tests run from.
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO_ROOT / name, source / name)
    # The build backend (setuptools) from this venv: no download, and the warnings pip shows with -v.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    output = built.stdout + built.stderr
    assert "Package would be ignored" not in output, output[output.find("Package would be ignored") - 500:][:2000]
    (wheel,) = (tmp_path / "wheel").glob("bert_serving_triton-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    dashboard = {path.relative_to(REPO_ROOT / "bridge").as_posix()
                 for path in (REPO_ROOT / "bridge" / "frontends" / "dashboard").iterdir()}
    assert {f"bert_bridge/{name}" for name in dashboard} <= names
    assert "bert_exporter/templates/model.py" in names
    # Every module of every folder, subpackages included: a folder left out of pyproject's packages is a module
    # missing from a non-editable install (bert_exporter.families once was).
    modules = {f"{INSTALLED_AS[folder]}/{path.relative_to(REPO_ROOT / folder).as_posix()}"
               for folder in INSTALLED_AS for path in (REPO_ROOT / folder).rglob("*.py")
               if "__pycache__" not in path.parts}
    assert modules - names == set()
