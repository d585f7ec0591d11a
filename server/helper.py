"""The original's ``bert_serving.server.helper`` parsers: the very ones ``bert-serving-start`` and
``bert-serving-terminate`` use, so ``get_args_parser().parse_args([...])`` accepts exactly what the commands accept."""
from __future__ import annotations

import argparse

from bert_bridge.config import build_parser
from bert_bridge.terminate import build_parser as build_shutdown_parser

__all__ = ["get_args_parser", "get_shutdown_parser"]


def get_args_parser() -> argparse.ArgumentParser:
    """``bert-serving-start``'s flags: ``BertServer(get_args_parser().parse_args([...]))``."""
    return build_parser()


def get_shutdown_parser() -> argparse.ArgumentParser:
    """``bert-serving-terminate``'s flags (``-ip``, ``-port``, ``-timeout``): ``BertServer.shutdown(args)``."""
    return build_shutdown_parser()
