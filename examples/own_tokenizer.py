"""Your own tokenizer: send token lists with `is_tokenized=True`; the server only maps them to WordPiece ids.

Any server works; with `-pooling_strategy NONE` you see which positions hold tokens (the rest is padding, all zeros).

    .venv/bin/python examples/own_tokenizer.py --port 5557 --port_out 5558
"""
import argparse

import numpy as np

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()

    texts = ["hello world!", "good day"]
    tokenized = [s.split() for s in texts]  # a naive whitespace tokenizer: "world!" stays one token
    with hint_when_no_server(f"{args.ip}:{args.port}"), \
            BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout) as bc:
        vecs = bc.encode(tokenized, is_tokenized=True)
    print(f"{tokenized} -> shape {vecs.shape}")
    if vecs.ndim == 3:  # token-level: [CLS] hello world! [SEP] are the only rows with values
        for text, matrix in zip(texts, vecs):
            filled = int(np.count_nonzero(np.abs(matrix).sum(axis=1)))
            print(f"{text!r}: {filled} of {matrix.shape[0]} rows hold tokens ([CLS], the tokens, [SEP])")


if __name__ == "__main__":
    main()
