"""Fixtures for the model families beyond BERT: each family's tiny model folder and sentence-transformers folder
(tests/family_models.py builds them), made once per session on first use."""
from __future__ import annotations

from pathlib import Path

import pytest
from family_models import FAMILIES, build_model, build_sentence_transformers
from tiny_models import ModelFolders


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory) -> ModelFolders:
    import torch

    torch.set_num_threads(2)
    return ModelFolders(tmp_path_factory.mktemp("families"), build_model, build_sentence_transformers)


@pytest.fixture(scope="session", params=list(FAMILIES))
def family(request) -> str:
    return request.param


# pooling configuration -> bert-export flags, for every family (test_family_serving.py's CONFIGURATIONS)
EXPORTED_CONFIGURATIONS = {
    "REDUCE_MEAN": ["-pooling_strategy", "REDUCE_MEAN", "-pooling_layer", "-2"],
    "REDUCE_MEAN_MAX": ["-pooling_strategy", "REDUCE_MEAN_MAX", "-pooling_layer", "-1", "-2"],
    "FIRST_TOKEN": ["-pooling_strategy", "FIRST_TOKEN", "-pooling_layer", "-2"],
    "NONE": ["-pooling_strategy", "NONE", "-pooling_layer", "-2"],
}
SERVED_MAX_SEQ_LEN = "16"
# Served as a new user serves it (bert-serving-start on the source folder), not from the shared repository.
ON_THE_FLY = ("xlm-roberta", "REDUCE_MEAN")


class FamilyExports:
    """Every family in every pooling configuration, and its sentence-transformers folder with AUTO, exported by
    bert-export into one repository, which one ``bert-serving-triton`` serves on ``triton_url``."""

    def __init__(self, repository: Path, triton_url: str):
        self.repository, self.triton_url = repository, triton_url

    def folder(self, family: str, configuration: str) -> Path:
        return self.repository / f"{family}-{configuration.lower()}"


def _export_everything(family_folders: ModelFolders, repository: Path) -> None:
    """bert-export, in this process (its command line, so AUTO resolves as bert-serving-start resolves it)."""
    from bert_exporter.cli import main as bert_export

    jobs = []
    for family in FAMILIES:
        for configuration, flags in EXPORTED_CONFIGURATIONS.items():
            if (family, configuration) != ON_THE_FLY:
                jobs.append((f"{family}-{configuration.lower()}",
                             ["-model_dir", str(family_folders.model(family)), "-max_seq_len", SERVED_MAX_SEQ_LEN,
                              *flags]))
        jobs.append((f"{family}-auto", ["-model_dir", str(family_folders.sentence_transformers(family)),
                                        "-pooling_strategy", "AUTO"]))
    for name, flags in jobs:
        status = bert_export([*flags, "-target", "embedded", "-output", str(repository), "-name", name])
        assert status == 0, f"bert-export {' '.join(flags)} failed with {status}"


@pytest.fixture(scope="session")
def family_exports(family_folders, tmp_path_factory):
    from harness import standalone_triton

    repository = tmp_path_factory.mktemp("family-repository")
    _export_everything(family_folders, repository)
    with standalone_triton(repository, tmp_path_factory.mktemp("family-triton"), "--address", "127.0.0.1") as server:
        yield FamilyExports(repository, f"127.0.0.1:{server.port}")
