"""Broadcasting to clones: clients that share an identity all receive every reply for it (`BertClient.listen()`).

One client sends; two clones, each in its own thread (they could be other processes), receive the same vectors.

    .venv/bin/python examples/broadcast.py
"""
import argparse
import threading

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server

SENTENCES = ["First do it", "then do it right", "then do it better"]
NUM_REQUESTS = 3


def client_clone(identity: str, index: int, ready: threading.Barrier, address: dict) -> None:
    with BertClient(identity=identity, **address) as clone:  # address has the timeout: fail, never hang
        ready.wait()
        for received, vectors in enumerate(clone.listen(), start=1):
            print(f"clone-client-{index}: received {vectors.shape[0]} x {vectors.shape[1]}")
            if received == NUM_REQUESTS:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()
    address = {"ip": args.ip, "port": args.port, "port_out": args.port_out, "timeout": args.timeout}

    with hint_when_no_server(f"{args.ip}:{args.port}"), BertClient(**address) as bc:
        ready = threading.Barrier(3)  # the clones subscribe before the first request goes out
        clones = [threading.Thread(target=client_clone, args=(bc.identity, j, ready, address)) for j in range(2)]
        for clone in clones:
            clone.start()
        ready.wait()
        for _ in range(NUM_REQUESTS):
            vectors = bc.encode(SENTENCES)
            print(f"sender: received {vectors.shape[0]} x {vectors.shape[1]}")
        for clone in clones:
            clone.join()


if __name__ == "__main__":
    main()
