"""Triton python-backend model written by bert-export (target ``embedded``): onnxruntime on ``model.onnx`` beside it.

The bundled tritonserver ships only the python backend, so this file stands in for the onnxruntime backend.
Imports are limited to numpy, onnxruntime and the standard library: the stub loads this file twice per model load.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
OUTPUT_NAME = "encodes"
# Token positions per onnxruntime call when config.pbtxt does not say (its parameter "positions_per_run", written by
# bert-export): a larger request (from a caller other than the bridge, whose chunks are small) runs in slices of at
# most this many. Small calls stay in the CPU's caches -- on a 2-core Zen 4, fp32 MiniLM ran 598 sentences/s at 16
# tokens, 225 at 40 and 70 at 128 in slices of 1,024 positions, against 482, 184 and 55 in slices of 4,096 -- and
# memory stays flat: whole batches of 256 rows x 320 tokens took the service to 6 GB RSS (docs/PERFORMANCE.md).
DEFAULT_POSITIONS_PER_RUN = 1024


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args["model_config"])
        # The onnxruntime backend's parameter name, so the same config.pbtxt edit works for both targets.
        threads = config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value", "0")
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(threads or 0)  # 0: onnxruntime decides
        positions = config.get("parameters", {}).get("positions_per_run", {}).get("string_value")
        self.positions_per_run = int(positions or DEFAULT_POSITIONS_PER_RUN)
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), sess_options=session_options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        # Each request -- from the bridge, one chunk of at most 32 length-sorted sentences -- is its own onnxruntime
        # call, even when Triton's batcher merged several: a call of that size stays in the CPU's caches, and its
        # shape recurs, so onnxruntime reuses its memory plan; concatenating a merged batch and cutting it anew made
        # shapes never seen before and calls too large for the caches (docs/PERFORMANCE.md, "What each lever bought").
        responses = []
        for request in requests:
            try:
                feeds = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUT_NAMES}
                encodes = self._run(feeds)
            except Exception as error:  # report to this caller instead of failing the whole execution
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(error))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, encodes)]))
        return responses

    def _run(self, batch):
        rows, length = batch["input_ids"].shape
        step = max(1, self.positions_per_run // max(length, 1))
        if rows <= step:
            return self.session.run([OUTPUT_NAME], batch)[0]
        return np.concatenate([self.session.run([OUTPUT_NAME], {name: array[start:start + step]
                                                                for name, array in batch.items()})[0]
                               for start in range(0, rows, step)], axis=0)

    def finalize(self):
        self.session = None
