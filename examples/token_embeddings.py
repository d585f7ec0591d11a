"""ELMo-like contextual token embeddings: a server with `-pooling_strategy NONE` returns one vector per token.

    .venv/bin/bert-serving-start -pooling_strategy NONE -show_tokens_to_client -port 5557 -port_out 5558   # in another terminal
    .venv/bin/python examples/token_embeddings.py --port 5557 --port_out 5558
"""
import argparse

import numpy as np

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server

START = "bert-serving-start -pooling_strategy NONE -show_tokens_to_client"  # the server this needs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()

    with hint_when_no_server(f"{args.ip}:{args.port}", START), \
            BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout) as bc:
        if bc.server_config["pooling_strategy"] != 0:  # the original's int for NONE
            raise SystemExit("this server pools its vectors: start it with -pooling_strategy NONE")
        if not bc.token_info_available:
            raise SystemExit("this server does not send tokens: start it with -show_tokens_to_client")
        vec, tokens = bc.encode(["hey you", "whats up?"], show_tokens=True)
    print(f"shape {vec.shape}: [sentences, max_seq_len, hidden]")
    for sentence, sentence_tokens in zip(vec, tokens):
        for position, row in enumerate(sentence):
            token = sentence_tokens[position] if position < len(sentence_tokens) else "(padding)"
            print(f"  {position:2d} {token:12s} |v| = {np.linalg.norm(row):.3f}")
            if position >= len(sentence_tokens):
                break  # every later row is padding too: all zeros
        print()


if __name__ == "__main__":
    main()
