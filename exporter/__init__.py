"""bert-export: freezes a BERT together with its pooling into a Triton model repository.

One module, one job::

    cli.py            the `bert-export` command (click); builds ExportOptions, prints one-line errors
    options.py        ExportOptions: every setting of one export, validated once
    export.py         export_model(options) -> Path: the orchestration
    staging.py        the hidden staging folder (owned by host + pid), stale ones removed, the move into place
    bert_config.py    BertConfig read from bert_config.json / config.json
    source.py         which files make the model: config, vocabulary, weights
    sentence_transformers.py  -pooling_strategy AUTO: a sentence-transformers folder's pooling, length, Normalize
    weights.py        weights from Google checkpoints / safetensors / pytorch_model.bin into one neutral dict
    graph.py          the TensorFlow 2 BERT with the pooling inside
    convert.py        tf2onnx, verified in onnxruntime
    triton_config.py  config.pbtxt through Triton's ModelConfig protobuf
    targets.py        the model folder of each target (embedded, onnx, tensorrt, savedmodel)
    manifest.py       bert_export.json, what the bridge reads (standard library only)
    errors.py         the ExportError tree and the one place third-party errors are translated
    templates/model.py  the embedded target's python-backend model

Importing this package loads nothing heavy: TensorFlow, tf2onnx and onnxruntime load inside the export.
"""
