"""`ConcurrentBertClient` inside a `tf.data` pipeline (TensorFlow 2): `tf.py_function` encodes each batch on the fly,
with several batches in flight at once.

    .venv/bin/python examples/tf_data_pipeline.py
"""
import argparse
import json
import tempfile
from pathlib import Path

import tensorflow as tf

from bert_serving.client import ConcurrentBertClient
from server_hint import add_timeout_flag, hint_when_no_server
from toy_data import labelled_sentences

BATCH_SIZE = 8
NUM_PARALLEL_CALLS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()

    # The input: one JSON object per line, as in the original tutorial.
    sentences, labels, names = labelled_sentences()
    train_fp = Path(tempfile.mkdtemp()) / "train.jsonl"
    train_fp.write_text("".join(json.dumps({"raw_text": s, "label": names[y]}) + "\n"
                                for s, y in zip(sentences, labels)))

    # A thread-safe pool of clients: tf.data calls get_encodes from NUM_PARALLEL_CALLS threads.
    with hint_when_no_server(f"{args.ip}:{args.port}"), \
            ConcurrentBertClient(max_concurrency=NUM_PARALLEL_CALLS, ip=args.ip, port=args.port,
                                 port_out=args.port_out, timeout=args.timeout) as bc:
        def get_encodes(lines):
            samples = [json.loads(line.numpy()) for line in lines]
            features = bc.encode([s["raw_text"] for s in samples])
            return features, [s["label"] for s in samples]

        def encode_batch(lines):
            features, label = tf.py_function(get_encodes, [lines], [tf.float32, tf.string])
            return {"feature": features, "label": label}

        ds = (tf.data.TextLineDataset(str(train_fp)).batch(BATCH_SIZE)
              .map(encode_batch, num_parallel_calls=NUM_PARALLEL_CALLS)
              .prefetch(2))
        total = 0
        for batch in ds:
            total += batch["feature"].shape[0]
            print(f"feature {tuple(batch['feature'].shape)}, labels {[l.decode() for l in batch['label'].numpy()][:3]}...")
    print(f"{total} sentences encoded through tf.data")


if __name__ == "__main__":
    main()
