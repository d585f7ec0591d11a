"""Serving a fine-tuned BERT, end to end: fine-tune, save a checkpoint, serve it with -tuned_model_dir/-ckpt_name.

1. Fine-tune the packaged all-MiniLM-L6-v2 for a few steps on a toy task (which of four topics a sentence is about),
   in TensorFlow 2 on the CPU: the encoder is bert-export's TensorFlow BERT (exporter/graph.py, the SavedModel
   target's; the ONNX graph it writes computes the same), with a linear classifier on top.
2. Save a TF checkpoint laid out as Google's run_classifier.py writes one (`bert/...` variables, the classifier's
   `output_weights`/`output_bias`, `global_step`), named `model.ckpt-STEPS`.
3. Serve it: `bert-serving-start -model_dir <packaged model> -tuned_model_dir OUTPUT -ckpt_name model.ckpt-STEPS`,
   here from Python with BertServer, and check that the served vectors are the fine-tuned model's own, not the
   pretrained ones.

    .venv/bin/python examples/fine_tuned_model.py --output /tmp/finetuned
"""
import argparse
import shlex
from pathlib import Path

import numpy as np
import tensorflow as tf

from bert_bridge.core.tokenization import TokenizerSettings, WordPieceTokenizer
from bert_exporter.bert_config import BertConfig
from bert_exporter.graph import BertEncoder
from bert_exporter.manifest import PoolingStrategy
from bert_exporter.options import packaged_model_dir
from bert_exporter.weights import load_weights
from bert_serving.client import BertClient
from bert_serving.server import BertServer
from bert_serving.server.helper import get_args_parser
from toy_data import labelled_sentences

MAX_SEQ_LEN = 25  # the server's default
PROBES = ["the match ended in a draw", "add a pinch of salt to the pan", "bond yields rose this morning"]


def model_inputs(tokenizer: WordPieceTokenizer, texts: list[str]) -> list[tf.Tensor]:
    """input_ids, input_mask, segment_ids, padded to the longest sentence (pooling ignores padding)."""
    encodings = tokenizer.encode(texts)
    length = max(len(e.input_ids) for e in encodings)
    arrays = [np.zeros((len(texts), length), np.int32) for _ in range(3)]
    for row, e in enumerate(encodings):
        for array, values in zip(arrays, (e.input_ids, e.input_mask, e.segment_ids)):
            array[row, :len(values)] = values
    return [tf.constant(a) for a in arrays]


def fine_tune(encoder: BertEncoder, inputs: list[tf.Tensor], labels: np.ndarray, num_classes: int, *,
              steps: int, learning_rate: float) -> tuple[tf.Variable, tf.Variable]:
    """Plain SGD on BERT and a softmax classifier over the pooled vectors; returns the classifier."""
    hidden = encoder.config.hidden_size
    output_weights = tf.Variable(tf.random.stateless_normal([num_classes, hidden], seed=[0, 0], stddev=0.02))
    output_bias = tf.Variable(tf.zeros([num_classes]))
    bert_variables = list(encoder.variables_by_name.values())
    trained = bert_variables + [output_weights, output_bias]
    for step in range(1, steps + 1):
        with tf.GradientTape() as tape:
            tape.watch(bert_variables)  # the exporter builds them as constants-to-be (trainable=False)
            pooled = encoder.encode(*inputs)["encodes"]
            logits = tf.matmul(pooled, output_weights, transpose_b=True) + output_bias
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        for variable, gradient in zip(trained, tape.gradient(loss, trained)):
            if gradient is not None:  # None: layers above the pooled one do not shape the vectors
                variable.assign_sub(learning_rate * tf.convert_to_tensor(gradient))
        print(f"step {step}: loss {float(loss):.4f}")
    return output_weights, output_bias


def save_checkpoint(prefix: Path, encoder: BertEncoder, classifier: tuple[tf.Variable, tf.Variable],
                    global_step: int) -> None:
    """A TF checkpoint with run_classifier.py's variable names: what -tuned_model_dir/-ckpt_name read."""
    tensors = {f"bert/{name}": variable for name, variable in encoder.variables_by_name.items()}
    tensors.update({"output_weights": classifier[0], "output_bias": classifier[1],
                    "global_step": tf.constant(global_step, tf.int64)})
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.convert_to_tensor(tensors[name]) for name in names])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("finetuned"), help="the fine-tuned model's folder")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--vectors-out", type=Path, help="also save the served vectors of the probe sentences (.npy)")
    parser.add_argument("--port", type=int, default=5557)
    parser.add_argument("--port_out", type=int, default=5558)
    args = parser.parse_args()

    model_dir = packaged_model_dir()
    config = BertConfig.from_file(model_dir / "config.json")
    weights, _ = load_weights(model_dir, config=config, ckpt_name="bert_model.ckpt")
    settings = dict(config=config, strategy=PoolingStrategy.REDUCE_MEAN, pooling_layer=[-2])  # the server's default
    pretrained = BertEncoder(weights=weights, **settings)
    tuned = BertEncoder(weights={name: array.copy() for name, array in weights.items()}, **settings)
    tokenizer = WordPieceTokenizer(TokenizerSettings(vocab_file=model_dir / "vocab.txt", max_seq_len=MAX_SEQ_LEN))

    sentences, labels, names = labelled_sentences()
    classifier = fine_tune(tuned, model_inputs(tokenizer, sentences), np.array(labels), len(names),
                           steps=args.steps, learning_rate=args.learning_rate)
    args.output.mkdir(parents=True, exist_ok=True)
    ckpt_name = f"model.ckpt-{args.steps}"
    save_checkpoint(args.output / ckpt_name, tuned, classifier, args.steps)
    print(f"saved {args.output / ckpt_name}.index and .data-00000-of-00001")

    flags = ["-model_dir", str(model_dir), "-tuned_model_dir", str(args.output), "-ckpt_name", ckpt_name,
             "-port", str(args.port), "-port_out", str(args.port_out)]
    print("serving it, as `bert-serving-start " + shlex.join(flags) + "` would")
    with BertServer(get_args_parser().parse_args(flags)):
        with BertClient(port=args.port, port_out=args.port_out) as bc:
            served = bc.encode(PROBES)

    if args.vectors_out:
        np.save(args.vectors_out, served)
    probe_inputs = model_inputs(tokenizer, PROBES)
    own = tuned.encode(*probe_inputs)["encodes"].numpy()
    before = pretrained.encode(*probe_inputs)["encodes"].numpy()
    to_tuned, to_pretrained = np.abs(served - own).max(), np.abs(served - before).max()
    print(f"served vs the fine-tuned model's own vectors: max |difference| {to_tuned:.2e}")
    print(f"served vs the pretrained model's vectors:     max |difference| {to_pretrained:.2e}")
    if to_tuned > 1e-4 or to_pretrained < 100 * to_tuned:
        raise SystemExit("the served vectors are not the fine-tuned model's")
    print("the server serves the fine-tuned model")


if __name__ == "__main__":
    main()
