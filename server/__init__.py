"""The original's server-side Python API, ``bert_serving.server``, on the Triton bridge.

    from bert_serving.server import BertServer
    from bert_serving.server.helper import get_args_parser
    with BertServer(get_args_parser().parse_args(["-port", "5555", "-port_out", "5556"])):
        ...  # the server is ready here, and stopped after the block
"""
from .bert_server import BertServer

__all__ = ["BertServer"]
