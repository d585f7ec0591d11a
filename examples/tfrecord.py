"""Save encodings to a TFRecord file and load them back as a `tf.data.Dataset`.

Sentence vectors are stored as they are; token-level ones (`-pooling_strategy NONE`) are flattened to 1-D on writing
and reshaped on reading.

    .venv/bin/python examples/tfrecord.py --output /tmp/encodings.tfrecord
"""
import argparse

import numpy as np
import tensorflow as tf

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server
from toy_data import labelled_sentences


def float_feature(values: np.ndarray) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values.reshape(-1)))


def int_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="encodings.tfrecord")
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()

    sentences, labels, _ = labelled_sentences()
    with hint_when_no_server(f"{args.ip}:{args.port}"), \
            BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout) as bc:
        vectors = bc.encode(sentences)
    with tf.io.TFRecordWriter(args.output) as writer:
        for vector, label in zip(vectors, labels):
            example = tf.train.Example(features=tf.train.Features(
                feature={"features": float_feature(vector), "labels": int_feature([label])}))
            writer.write(example.SerializeToString())
    print(f"wrote {len(vectors)} encodings of shape {vectors.shape[1:]} to {args.output}")

    row_shape = vectors.shape[1:]  # [D], or [max_seq_len, D] for token-level encodings
    schema = {"features": tf.io.FixedLenFeature([int(np.prod(row_shape))], tf.float32),
              "labels": tf.io.FixedLenFeature([], tf.int64)}

    def decode_record(record):
        example = tf.io.parse_single_example(record, schema)
        example["features"] = tf.reshape(example["features"], row_shape)
        return example

    ds = tf.data.TFRecordDataset(args.output).map(decode_record).batch(16)
    loaded = np.concatenate([batch["features"].numpy() for batch in ds])
    loaded_labels = np.concatenate([batch["labels"].numpy() for batch in ds])
    same = np.array_equal(loaded, vectors) and loaded_labels.tolist() == labels
    print(f"read back {len(loaded)} encodings of shape {loaded.shape[1:]}: "
          f"{'identical to what was written' if same else 'DIFFERENT from what was written'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
