"""bert-export: freezes a BERT-family encoder together with its pooling into a Triton model repository.

One module, one job::

    cli.py            the `bert-export` command (click); builds ExportOptions, prints one-line errors
    options.py        ExportOptions: every setting of one export, validated once
    export.py         export_model(options) -> Path: the orchestration
    staging.py        the hidden staging folder (owned by host + pid), stale ones removed, the move into place
    encoder_config.py EncoderConfig: the architecture numbers every family maps its config onto
    bert_config.py    BertConfig read from bert_config.json / config.json
    families/         one module per model family (bert, roberta, distilbert, mpnet): its config and weight names
    source.py         which files make the model: config, vocabulary, weights
    sentence_transformers.py  -pooling_strategy AUTO: a sentence-transformers folder's pooling, length, Normalize
    weights.py        weights from Google checkpoints / safetensors / pytorch_model.bin into one neutral dict
    onnx_builder.py   GraphBuilder: onnx.helper with names and weights
    encoder.py        the shared encoder as ONNX, fused (onnxruntime's kernels) or standard (TensorRT) form
    pooling.py        the pooling strategies and the heads after them (pooler, Dense, normalize, fp16)
    build.py          model.onnx of an export: encoder + pooling, checked in onnxruntime
    graph.py          the TensorFlow 2 BERT with the pooling inside (the SavedModel target)
    quantize.py       -quantize int8: onnxruntime dynamic quantization, checked against fp32
    triton_config.py  config.pbtxt through Triton's ModelConfig protobuf
    targets.py        the model folder of each target (embedded, onnx, tensorrt, savedmodel)
    manifest.py       bert_export.json, what the bridge reads (standard library only)
    errors.py         the ExportError tree and the one place third-party errors are translated
    templates/model.py  the embedded target's python-backend model

Importing this package loads nothing heavy: TensorFlow, onnx and onnxruntime load inside the export.
"""
