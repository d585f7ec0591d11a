"""Asynchronous encoding: feed batches from a generator and receive their vectors as they come (`encode_async`).

    .venv/bin/python examples/async_encoding.py --num-batches 10
"""
import argparse

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server

SENTENCES = ["First do it", "then do it right", "then do it better", "the quick brown fox jumps over the lazy dog"]


def text_gen():
    """An endless stream, producing batches faster than any server encodes them."""
    while True:
        yield SENTENCES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-batches", type=int, default=10)
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()

    received = 0
    with hint_when_no_server(f"{args.ip}:{args.port}"), \
            BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout) as bc:
        # Each item is a Response(id, embedding, tokens): the id says which batch it answers.
        for response in bc.encode_async(text_gen(), max_num_batch=args.num_batches):
            received += 1
            print(f"request {response.id}: received {response.embedding.shape[0]} x {response.embedding.shape[1]}")
    print(f"{received} batches encoded")


if __name__ == "__main__":
    main()
