"""Which layer? One server per pooling layer, started from Python (BertServer), the same sentences of four topics
encoded by each, reduced to 2-D by PCA, and drawn as one PNG grid: a panel per layer, a colour per topic.

Each layer is an export of its own (tens of seconds the first time, cached after that).

    .venv/bin/python examples/layer_visualization.py --layers -1 -2 -3 -4 -5 -6 --output layers.png
"""
import argparse
import math

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bert_serving.client import BertClient  # noqa: E402
from bert_serving.server import BertServer  # noqa: E402
from bert_serving.server.helper import get_args_parser  # noqa: E402
from toy_data import labelled_sentences  # noqa: E402


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The projection on the first two principal components."""
    centered = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    return centered @ components[:2].T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[-1, -2, -3, -4, -5, -6])
    parser.add_argument("--output", default="layers.png")
    parser.add_argument("--port", type=int, default=5557)
    parser.add_argument("--port_out", type=int, default=5558)
    args = parser.parse_args()

    sentences, labels, names = labelled_sentences()
    labels = np.array(labels)
    server_args = get_args_parser().parse_args(["-port", str(args.port), "-port_out", str(args.port_out)])
    encodings = {}
    for layer in args.layers:
        server_args.pooling_layer = [layer]  # as the original's example did: change the args, start another server
        with BertServer(server_args):
            with BertClient(port=args.port, port_out=args.port_out) as bc:
                encodings[layer] = bc.encode(sentences)
        print(f"layer {layer}: encoded {len(sentences)} sentences")

    columns = min(3, len(args.layers))
    rows = math.ceil(len(args.layers) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for axis in axes.flat[len(args.layers):]:
        axis.remove()
    for axis, layer in zip(axes.flat, args.layers):
        points = pca_2d(encodings[layer])
        for index, name in enumerate(names):
            chosen = labels == index
            axis.scatter(points[chosen, 0], points[chosen, 1], s=12, label=name)
        axis.set_title(f"pooling_layer {layer}")
        axis.set_xticks([])
        axis.set_yticks([])
    axes.flat[0].legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(args.output, dpi=80)
    print(f"wrote {args.output}: {len(args.layers)} panels")


if __name__ == "__main__":
    main()
