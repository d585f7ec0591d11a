"""An export's ``model.onnx``, written straight from the weights: the family's encoder, the pooling and the heads.

The form follows the target (encoder.py): the CPU targets get onnxruntime's fused kernels, TensorRT (``-target
tensorrt`` and the onnx target's ``--trt-accelerator``) gets standard operators only; ``-quantize int8`` replaces the
fused model by the int8 form (quantize.py). Layers deeper than the deepest
pooled one are left out. The written file is loaded in onnxruntime and run on a probe batch before the export goes on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .encoder import EncoderWriter, Form
from .encoder_config import EncoderConfig
from .errors import ConversionError, OptionError
from .manifest import INPUT_NAMES, OUTPUT_NAME, PoolingStrategy, Target
from .options import ExportOptions, check_layers

log = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization
# Models past this size keep their weights in model.onnx.data beside model.onnx (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_500_000_000


def target_form(options: ExportOptions) -> Form:
    """onnxruntime's fused kernels, unless TensorRT builds from the file (-quantize int8 rewrites the fused one)."""
    return Form.STANDARD if options.target is Target.TENSORRT or options.trt_accelerator else Form.FUSED


def build_onnx(config: EncoderConfig, weights: dict[str, np.ndarray], options: ExportOptions, *, form: Form):
    """The export's graph as an ``onnx.ModelProto``."""
    from .heads import reads_first_token_alone, write_head
    from .onnx_builder import FLOAT, FLOAT16, INT32, GraphBuilder, tensor
    from .pooling import Pooler, bert_pooler, dense_module, l2_normalize, output

    if options.opset < MIN_OPSET:
        raise OptionError(f"-opset {options.opset} is too old: the graph needs opset {MIN_OPSET} or newer")
    strategy = options.pooling_strategy
    head = options.head
    check_layers(config, options.pooling_layer)
    if strategy is PoolingStrategy.CLS_POOLED and "pooler/dense/kernel" not in weights:
        raise OptionError("-pooling_strategy CLS_POOLED needs the pooler weights, which this checkpoint lacks")
    count = config.num_hidden_layers
    # Run only as deep as the deepest layer pooled (CLS_POOLED and the heads read the last one).
    if strategy is PoolingStrategy.CLS_POOLED or head is not None:
        depth = count
    else:
        depth = max(layer % count for layer in options.pooling_layer) + 1

    g = GraphBuilder(opset=options.opset)
    input_ids, input_mask, segment_ids = INPUT_NAMES
    encoder = writer_class(config)(g, config, weights, form=form,
                                   use_position_embeddings=not options.no_position_embeddings,
                                   max_length=options.max_seq_len)
    # What reads the last layer's first token alone lets the encoder compute that token alone in it.
    reads_first_token = (reads_first_token_alone(head) if head is not None
                         else strategy in (PoolingStrategy.CLS_POOLED, PoolingStrategy.FIRST_TOKEN))
    layers = encoder.write(input_ids, input_mask, segment_ids, depth=depth,
                           first_token_only=reads_first_token and encoder.trims_last_layer)
    if head is not None:
        pooled = write_head(g, head, layers[-1], input_mask, weights)
    elif strategy is PoolingStrategy.CLS_POOLED:
        pooled = bert_pooler(g, layers[-1], weights)
    else:
        pooled = Pooler(g, input_mask).pool([layers[layer % count] for layer in options.pooling_layer], strategy)
    for index, layer in enumerate((options.sentence_transformers or {}).get("dense", ())):
        pooled = dense_module(g, pooled, weights, index, layer["activation"])
    if options.normalize:  # after pooling and layer concatenation, in float32, before the fp16 cast
        pooled = l2_normalize(g, pooled)
    output(g, pooled, OUTPUT_NAME, fp16=options.fp16)

    width = options.output_dim(config)
    dims = ["batch", "sequence", width] if strategy is PoolingStrategy.NONE else ["batch", width]
    output_of = (f"its {head['kind']} head" if head is not None
                 else f"{strategy.name} over layers {list(options.pooling_layer)}")
    return g.model(inputs=[tensor(name, INT32, ["batch", "sequence"]) for name in INPUT_NAMES],
                   outputs=[tensor(OUTPUT_NAME, FLOAT16 if options.fp16 else FLOAT, dims)],
                   doc=f"{config.model_type} encoder + {output_of}, {Form(form).value} form, written by bert-export")


def writer_class(config: EncoderConfig) -> type[EncoderWriter]:
    """The shared writer, or its subclass for the encoders with rotary positions (rotary_encoder.py)."""
    from .rotary_config import RotaryEncoderConfig
    from .rotary_encoder import RotaryEncoderWriter

    return RotaryEncoderWriter if isinstance(config, RotaryEncoderConfig) else EncoderWriter


def write_onnx(config: EncoderConfig, weights: dict[str, np.ndarray], options: ExportOptions, path: Path, *,
               form: Form | None = None) -> Path:
    """Builds the graph (in the target's form unless told), saves it to ``path`` and checks it in onnxruntime."""
    import onnx

    model = build_onnx(config, weights, options, form=form or target_form(options))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")
    check(path, config=config, options=options)
    return path


def check(path: Path, *, config: EncoderConfig, options: ExportOptions) -> np.ndarray:
    """onnxruntime loads ``path``, its tensors carry our names and a probe batch gives finite vectors of the
    manifest's shape; returns them."""
    import onnxruntime as ort

    # An unloadable model raises onnxruntime's own error here; the orchestrator's translate_errors names it.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = sorted(i.name for i in session.get_inputs())
    outputs = [o.name for o in session.get_outputs()]
    if names != sorted(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
        raise ConversionError(f"the written model has inputs {names} and outputs {outputs}, "
                              f"expected {sorted(INPUT_NAMES)} and {[OUTPUT_NAME]}")
    feeds = probe_batch(config)
    vectors = session.run([OUTPUT_NAME], feeds)[0]
    rows, length = feeds["input_ids"].shape
    width = options.output_dim(config)
    expected = (rows, length, width) if options.pooling_strategy is PoolingStrategy.NONE else (rows, width)
    if vectors.shape != expected or not np.isfinite(vectors).all():
        raise ConversionError(f"the written model gives {vectors.shape} vectors on a probe batch "
                              f"(expected {expected}, finite)")
    return vectors


def probe_batch(config: EncoderConfig) -> dict[str, np.ndarray]:
    """Two rows of different real lengths, [CLS]-like first token, padding at the end, both segments."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size, size=(2, 7), dtype=np.int32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=np.int32)
    segments = np.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=np.int32)
    two_segments = config.token_types and config.type_vocab_size > 1
    return {"input_ids": ids * mask, "input_mask": mask, "segment_ids": segments * int(two_segments)}
