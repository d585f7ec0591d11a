"""Monitoring the service: the status the original's dashboard showed, from the client (`bc.server_status`) and over
HTTP (`GET /status/server`), and the dashboard page the bridge serves itself at `/dashboard`.

    .venv/bin/bert-serving-start -http_port 8125      # in another terminal
    .venv/bin/python examples/dashboard.py --http_port 8125    # then open http://localhost:8125/dashboard
"""
import argparse
import json
import urllib.request

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server

DASH_START = "bert-serving-start -http_port 8125"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    parser.add_argument("--http_port", type=int, default=8125)
    add_timeout_flag(parser)
    args = parser.parse_args()

    with hint_when_no_server(f"{args.ip}:{args.port}", DASH_START), \
            BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout) as bc:
        bc.encode(["a request, so that the counters move"])
        status = bc.server_status
    print("server_status over ZeroMQ:")
    print(json.dumps({key: status[key] for key in ("server_version", "num_process", "max_seq_len",
                                                    "pooling_strategy", "pooling_layer", "statistic")},
                     ensure_ascii=False, indent=2))

    base = f"http://{args.ip}:{args.http_port}"
    with hint_when_no_server(base, DASH_START), \
            urllib.request.urlopen(f"{base}/status/server", timeout=args.timeout / 1000) as response:
        over_http = json.load(response)
    print(f"/status/server over HTTP: {over_http['statistic']['num_data_request']} data requests, "
          f"{over_http['statistic']['num_total_client']} clients")
    with urllib.request.urlopen(f"{base}/dashboard", timeout=args.timeout / 1000) as response:
        page = response.read().decode()
    print(f"dashboard: {base}/dashboard ({response.status}, {len(page)} bytes of HTML) -- open it in a browser")


if __name__ == "__main__":
    main()
