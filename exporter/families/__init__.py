"""One module per model family over the shared encoder (encoder.py): what differs between BERT, RoBERTa, DistilBERT,
MPNet... is how the family's config and weight names map onto ``EncoderConfig`` and the neutral weight names.

A family module defines::

    MODEL_TYPES = ("roberta", ...)                 # the config.json model_type values it reads
    def read_config(data: dict, path: Path) -> EncoderConfig
    def read_weights(folder: Path, *, config: EncoderConfig, ckpt_name: str) -> tuple[dict, str]

and nothing else: a new family is one new file here, found by ``family_for`` without being registered anywhere.
Family modules import only the standard library at module level (the bridge asks ``family_for`` at start).
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from ..errors import SourceError

__all__ = ["SUPPORTED_MODEL_TYPES", "family_for"]


def _families() -> dict[str, ModuleType]:
    by_type = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for model_type in module.MODEL_TYPES:
            by_type[model_type] = module
    return by_type


_BY_MODEL_TYPE = _families()
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BY_MODEL_TYPE)


def family_for(model_type: str) -> ModuleType:
    """The family module reading ``model_type``; a SourceError in one line for any other architecture."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise SourceError(f"model_type {model_type!r} is not a BERT nor another family bert-export reads "
                          f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})") from None
