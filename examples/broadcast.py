"""Broadcasting to clones: clients that share an identity all receive every reply for it (`BertClient.listen()`).

One client sends; two clones, each in its own thread (they could be other processes), receive the same vectors.

    .venv/bin/python examples/broadcast.py
"""
import argparse
import threading

from bert_serving.client import BertClient

SENTENCES = ["First do it", "then do it right", "then do it better"]
NUM_REQUESTS = 3


def client_clone(identity: str, index: int, ready: threading.Barrier, address: dict) -> None:
    with BertClient(identity=identity, timeout=60000, **address) as clone:  # fail, never hang
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
    args = parser.parse_args()
    address = {"ip": args.ip, "port": args.port, "port_out": args.port_out}

    with BertClient(**address) as bc:
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
