"""bert-as-service over HTTP in JSON: `POST /encode` with `{"id", "texts", "is_tokenized"}`, the server's status
from `GET /status/server`, and the OpenAI-compatible `POST /v1/embeddings`. Standard library only.

    .venv/bin/bert-serving-start -http_port 8125      # in another terminal
    .venv/bin/python examples/http_json.py --http_port 8125
"""
import argparse
import json
import urllib.request

from server_hint import add_timeout_flag, hint_when_no_server


def call(url: str, payload=None, *, timeout_s: float) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--http_port", type=int, default=8125)
    add_timeout_flag(parser)
    args = parser.parse_args()
    base = f"http://{args.ip}:{args.http_port}"

    with hint_when_no_server(base, "bert-serving-start -http_port 8125"):
        show_every_route(base, args.timeout / 1000)


def show_every_route(base: str, timeout_s: float) -> None:
    reply = call(f"{base}/encode", {"id": 123, "texts": ["hello world", "good day!"], "is_tokenized": False},
                 timeout_s=timeout_s)
    print(f"/encode: id {reply['id']}, status {reply['status']}, "
          f"{len(reply['results'])} vectors of {len(reply['results'][0])} floats")
    reply = call(f"{base}/encode", {"id": 124, "texts": [["hello", "world"], ["good", "day"]], "is_tokenized": True},
                 timeout_s=timeout_s)
    print(f"/encode tokenized: id {reply['id']}, {len(reply['results'])} vectors")

    openai = call(f"{base}/v1/embeddings", {"input": ["hello world", "good day!"], "model": "bert"},
                  timeout_s=timeout_s)
    print(f"/v1/embeddings: {len(openai['data'])} embeddings of {len(openai['data'][0]['embedding'])} floats, "
          f"{openai['usage']['total_tokens']} tokens")

    status = call(f"{base}/status/server", timeout_s=timeout_s)
    print(f"/status/server: {status['statistic']['num_data_request']} data requests so far, "
          f"pooling_layer {status['pooling_layer']}, server_version {status['server_version']}")


if __name__ == "__main__":
    main()
