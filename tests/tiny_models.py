"""What every test's tiny random-weight model shares: its weights perturbed, and its folders built once, on first use.

A module of its own (not conftest) so tests and the model builders import it by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def perturbed(model, scale: float = 0.05):
    """``model`` with noise of ``scale`` (from torch's current seed) added to every parameter: random init leaves
    LayerNorms at 1/0 and biases at 0, so a weight mapping that lost or swapped one of those would go unseen."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return model


class ModelFolders:
    """``model(family)`` and ``sentence_transformers(family)``: folders built on first use, then reused. The
    builders are a family module's ``build_model(family, folder)`` and
    ``build_sentence_transformers(family, model_folder, folder)``."""

    def __init__(self, root: Path, build_model: Callable, build_sentence_transformers: Callable):
        self.root = root
        self._build_model = build_model
        self._build_sentence_transformers = build_sentence_transformers
        self._built: dict[str, Path] = {}

    def model(self, family: str) -> Path:
        if family not in self._built:
            self._built[family] = self._build_model(family, self.root / family)
        return self._built[family]

    def sentence_transformers(self, family: str) -> Path:
        key = f"{family}-st"
        if key not in self._built:
            self._built[key] = self._build_sentence_transformers(family, self.model(family), self.root / key)
        return self._built[key]
