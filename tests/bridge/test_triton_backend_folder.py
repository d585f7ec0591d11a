"""The python backend folder the embedded tritonserver loads: one per virtual environment, never re-linked by another.

A unit test of triton_server.prepare_backend_directory: two fake nvidia-pytriton installations stand in for two
virtual environments sharing one cache.
"""
from __future__ import annotations

import sys
from pathlib import Path


from bert_bridge.triton import server as triton_server


def fake_pytriton(root: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    tritonserver = root / "pytriton" / "tritonserver"
    files = [tritonserver / "backends" / "python" / name for name in triton_server.PYTHON_BACKEND_FILES]
    files.append(tritonserver / "python_backend_stubs" / version / "triton_python_backend_stub")
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(root))
    return tritonserver


def test_two_environments_get_separate_backend_folders(tmp_path, monkeypatch):
    first, second = fake_pytriton(tmp_path / "venv-a"), fake_pytriton(tmp_path / "venv-b")
    cache = tmp_path / "cache"
    monkeypatch.setattr(triton_server, "_pytriton_root", lambda: first)
    folder_a = triton_server.prepare_backend_directory(cache)
    monkeypatch.setattr(triton_server, "_pytriton_root", lambda: second)
    folder_b = triton_server.prepare_backend_directory(cache)
    assert folder_a != folder_b
    for folder, root in ((folder_a, first), (folder_b, second)):
        links = sorted((folder / "python").iterdir())
        assert len(links) == 3
        assert all(link.resolve().is_relative_to(root) for link in links), links
    # Starting the first environment again changes nothing under the second's folder, and vice versa.
    monkeypatch.setattr(triton_server, "_pytriton_root", lambda: first)
    assert triton_server.prepare_backend_directory(cache) == folder_a
    assert all(link.resolve().is_relative_to(second) for link in (folder_b / "python").iterdir())
