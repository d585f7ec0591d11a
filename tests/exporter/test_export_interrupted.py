"""An interrupted or killed export leaves nothing that blocks the next one; exported folders are readable by others.

Real processes and real signals: ``bert-export`` and ``bert-serving-start`` run as children and are stopped with
SIGTERM, SIGHUP, SIGINT (they clean up) or SIGKILL (the next export cleans up).
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from test_export_cli import assert_one_line_error, bert_export

from bert_exporter.manifest import MANIFEST_FILE, ExportManifest
from harness import READY_MARKER, free_port

NAME = "m"


def start_export(source_dir: Path, repository: Path, *, umask: int = 0o022) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bert_exporter.cli", "-model_dir", str(source_dir),
                             "-output", str(repository), "-name", NAME], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, umask=umask,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def staging_folders(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.partial-*"))


def wait_for_staging(process: subprocess.Popen, root: Path, timeout_s: float = 120) -> None:
    """Until the export is under way: its staging folder exists and it still runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the export ended early ({process.returncode}): {process.communicate()}"
        if staging_folders(root):
            return
        time.sleep(0.05)
    pytest.fail(f"no staging folder under {root} within {timeout_s}s")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_removes_the_partial_export_with_one_line(sig, tiny_hf, tmp_path):
    repository = tmp_path / "repo"
    export = start_export(tiny_hf.model_dir, repository)
    wait_for_staging(export, repository)
    export.send_signal(sig)
    stdout, stderr = export.communicate(timeout=60)
    assert export.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"bert-export: error: interrupted by {sig.name}; the partial export was removed"
    assert not repository.exists(), "nothing partial, no model folder, not even the repository it created may remain"


@pytest.fixture(scope="module")
def killed_then_repeated(tiny_hf, tmp_path_factory) -> dict:
    """SIGKILL an export mid-way, export again (umask 022), then SIGKILL a re-export over the finished model."""
    repository = tmp_path_factory.mktemp("killed") / "repo"
    seen: dict = {"repository": repository}
    first = start_export(tiny_hf.model_dir, repository)
    wait_for_staging(first, repository)
    first.kill()
    first.wait()
    seen["after_kill"] = sorted(p.name for p in repository.iterdir())
    seen["repeated"] = subprocess.run([sys.executable, "-m", "bert_exporter.cli", "-model_dir", str(tiny_hf.model_dir),
                                       "-output", str(repository), "-name", NAME], capture_output=True, text=True,
                                      timeout=300, umask=0o022, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seen["after_repeat"] = sorted(p.name for p in repository.iterdir())
    seen["modes"] = {str(p.relative_to(repository)): stat.S_IMODE(p.stat().st_mode)
                     for p in [repository, *repository.rglob("*")]}
    model_files = {p: p.read_bytes() for p in (repository / NAME).rglob("*") if p.is_file()}
    third = start_export(tiny_hf.model_dir, repository)
    wait_for_staging(third, repository)
    third.kill()
    third.wait()
    seen["model_intact_after_second_kill"] = all(p.read_bytes() == data for p, data in model_files.items()) and \
        sorted(model_files) == sorted(p for p in (repository / NAME).rglob("*") if p.is_file())
    return seen


@pytest.mark.slow
def test_a_killed_export_leaves_no_model_folder(killed_then_repeated):
    after_kill = killed_then_repeated["after_kill"]
    assert NAME not in after_kill, "a killed export must never leave a model folder with a manifest"
    assert len(after_kill) == 1 and after_kill[0].startswith(f".{NAME}.partial-"), after_kill


@pytest.mark.slow
def test_the_next_export_removes_what_a_killed_one_left_and_succeeds(killed_then_repeated):
    repeated, repository = killed_then_repeated["repeated"], killed_then_repeated["repository"]
    assert repeated.returncode == 0, repeated.stderr
    assert repeated.stdout.strip() == str(repository / NAME)
    assert "left by an export that was killed" in repeated.stderr
    assert killed_then_repeated["after_repeat"] == [NAME], "no stale staging folder may remain"
    assert ExportManifest.load(repository / NAME).target == "embedded"


@pytest.mark.slow
def test_a_killed_re_export_keeps_the_previous_model_whole(killed_then_repeated):
    assert killed_then_repeated["model_intact_after_second_kill"]
    assert (killed_then_repeated["repository"] / NAME / MANIFEST_FILE).is_file()


@pytest.mark.slow
def test_exported_folders_get_the_umask_permissions(killed_then_repeated):
    """umask 022: folders 0755 and files 0644, so a tritonserver running as another user can read the model."""
    modes = killed_then_repeated["modes"]
    folders = {path: mode for path, mode in modes.items() if (killed_then_repeated["repository"] / path).is_dir()}
    files = {path: mode for path, mode in modes.items() if path not in folders}
    assert f"{NAME}/1/model.onnx" in files and f"{NAME}/{MANIFEST_FILE}" in files
    assert {path: oct(mode) for path, mode in folders.items() if mode != 0o755} == {}
    assert {path: oct(mode) for path, mode in files.items() if mode != 0o644} == {}


@pytest.mark.parametrize("where", ["a file", "a folder under a file", "an unwritable folder"])
def test_an_unusable_output_is_one_line(where, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    output = {"a file": a_file, "a folder under a file": a_file / "repo", "an unwritable folder": Path("/proc")}[where]
    started = time.monotonic()
    assert_one_line_error(bert_export("-output", output), "-output", str(output))
    assert time.monotonic() - started < 30, "the output is checked before the model is read"
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("flag", ["-version", "--version"])
def test_version(flag):
    result = bert_export(flag)
    assert (result.returncode, result.stdout.strip()) == (0, f"bert-export {version('bert-serving-triton')}")


@pytest.mark.slow
def test_sigterm_to_a_bridge_exporting_on_the_fly_leaves_nothing_behind(tiny_hf, start_bridge, tmp_path):
    """As systemd or docker stop do: SIGTERM to the process group during the first start's export."""
    flags = ["-model_dir", str(tiny_hf.model_dir), "--cache-dir", str(tmp_path / "cache")]
    log_path = tmp_path / "first-start.log"
    with open(log_path, "wb") as log:
        bridge = subprocess.Popen([sys.executable, "-m", "bert_bridge.cli", "-port", str(free_port()), "-port_out", str(free_port()), *flags], stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "exporting" not in log_path.read_text(errors="replace"):
            assert bridge.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.05)
        wait_for_staging(bridge, tmp_path / "cache")
        os.killpg(bridge.pid, signal.SIGTERM)
        bridge.wait(60)
        deadline = time.monotonic() + 60
        while _group_alive(bridge.pid):
            assert time.monotonic() < deadline, "processes of the stopped bridge are still running"
            time.sleep(0.1)
    finally:
        if _group_alive(bridge.pid):
            os.killpg(bridge.pid, signal.SIGKILL)
        bridge.wait()
    assert staging_folders(tmp_path / "cache") == [], log_path.read_text(errors="replace")
    with start_bridge(*flags) as again:
        assert READY_MARKER in again.log()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_only_staging_folders_of_exited_owners_on_this_host_are_stale(tmp_path):
    from bert_exporter.staging import create_staging, remove_stale_staging

    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = create_staging(tmp_path, NAME)  # this test's process is alive
    dead = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{exited.stdout.strip()}-"))
    dead.mkdir()
    legacy = tmp_path / f".{NAME}.partial-k3j_9x2a"  # an exporter before owners were recorded (mkdtemp)
    legacy.mkdir()
    elsewhere = tmp_path / f".{NAME}.partial-otherhost-1-abcd1234"  # a shared volume: not ours to judge
    elsewhere.mkdir()
    other_model = tmp_path / ".other.partial-k3j_9x2a"
    other_model.mkdir()
    assert sorted(remove_stale_staging(tmp_path, NAME)) == sorted([dead, legacy])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, elsewhere.name, other_model.name])
