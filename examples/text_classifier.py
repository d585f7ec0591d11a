"""A text classifier on BERT features (Keras; the original used tf.estimator, which TensorFlow 2 removed).

The sentences of four topics are encoded by the server; a small MLP learns the topic from the vectors, and its accuracy
on held-out sentences is printed next to chance.

    .venv/bin/python examples/text_classifier.py
"""
import argparse

import numpy as np
import tensorflow as tf

from bert_serving.client import BertClient
from server_hint import add_timeout_flag, hint_when_no_server
from toy_data import labelled_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--port_out", type=int, default=5556)
    add_timeout_flag(parser)
    args = parser.parse_args()

    sentences, labels, names = labelled_sentences()
    with hint_when_no_server(f"{args.ip}:{args.port}"), \
            BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout) as bc:
        features = bc.encode(sentences)
    labels = np.array(labels)
    # Every third sentence of each topic is held out for evaluation.
    held_out = np.arange(len(sentences)) % 3 == 0
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(features.shape[1],)),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dropout(0.1),
        tf.keras.layers.Dense(len(names), activation="softmax"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(features[~held_out], labels[~held_out], epochs=args.epochs, batch_size=8, verbose=0)
    _, accuracy = model.evaluate(features[held_out], labels[held_out], verbose=0)
    print(f"trained on {int((~held_out).sum())} sentences, tested on {int(held_out.sum())}")
    print(f"accuracy {accuracy:.3f} (chance {1 / len(names):.3f})")
    predicted = model.predict(features[held_out][:4], verbose=0).argmax(axis=1)
    for sentence, label in zip(np.array(sentences)[held_out][:4], predicted):
        print(f"  {names[label]:8s} <- {sentence}")


if __name__ == "__main__":
    main()
