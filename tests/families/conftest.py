"""Fixtures for the model families beyond BERT: each family's tiny model folder and sentence-transformers folder
(tests/family_models.py builds them), made once per session on first use."""
from __future__ import annotations

from pathlib import Path

import pytest
from family_models import FAMILIES, build_model, build_sentence_transformers


class FamilyFolders:
    """``model(family)`` and ``sentence_transformers(family)``: folders built on first use, then reused."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, Path] = {}

    def model(self, family: str) -> Path:
        if family not in self._built:
            self._built[family] = build_model(family, self.root / family)
        return self._built[family]

    def sentence_transformers(self, family: str) -> Path:
        key = f"{family}-st"
        if key not in self._built:
            self._built[key] = build_sentence_transformers(family, self.model(family), self.root / key)
        return self._built[key]


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory) -> FamilyFolders:
    import torch

    torch.set_num_threads(2)
    return FamilyFolders(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="session", params=list(FAMILIES))
def family(request) -> str:
    return request.param
