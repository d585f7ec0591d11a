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
        threads = int(config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value", "0") or 0)
        allowed = len(os.sched_getaffinity(0))
        if not threads and allowed < os.cpu_count():
            # Pinned to some cores (taskset, a cpuset): left to decide, onnxruntime would start a thread per core of
            # the machine and pin each to its core, leaving the cores the process was given.
            threads = allowed
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads  # 0: onnxruntime decides
        positions = config.get("parameters", {}).get("positions_per_run", {}).get("string_value")
        self.positions_per_run = int(positions or DEFAULT_POSITIONS_PER_RUN)
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), sess_options=session_options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        # Calls of about positions_per_run token positions: requests of one shape (from the bridge: chunks of
        # length-sorted sentences) packed together up to that, a larger request cut into slices of it. Calls of that
        # size stay in the CPU's caches, and their shapes recur, so onnxruntime reuses its memory plans; a whole
        # merged batch in one call, or cut anew, ran up to 1.6x slower (docs/PERFORMANCE.md, "What each lever bought").
        inputs = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUT_NAMES}
            for request in requests
        ]
        responses = [None] * len(requests)
        for pack in self._packs(inputs):
            try:
                batch = {name: np.concatenate([inputs[i][name] for i in pack], axis=0) if len(pack) > 1
                         else inputs[pack[0]][name] for name in INPUT_NAMES}
                encodes = self._run(batch)
            except Exception as error:  # report to each caller instead of failing the whole execution
                for i in pack:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(error)))
                continue
            offsets = np.cumsum([0] + [inputs[i]["input_ids"].shape[0] for i in pack])
            for i, start, stop in zip(pack, offsets[:-1], offsets[1:]):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(OUTPUT_NAME, np.ascontiguousarray(encodes[start:stop]))]
                )
        return responses

    def _packs(self, inputs):
        """Indices of the requests that run together: consecutive, of one shape, at most positions_per_run positions
        together (a request larger than that alone is sliced by _run)."""
        packs, shape, positions = [], None, 0
        for index, feeds in enumerate(inputs):
            rows, length = feeds["input_ids"].shape
            if packs and feeds["input_ids"].shape[1:] == shape and positions + rows * length <= self.positions_per_run:
                packs[-1].append(index)
                positions += rows * length
            else:
                packs.append([index])
                shape, positions = feeds["input_ids"].shape[1:], rows * length
        return packs

    def _run(self, batch):
        # As few slices as fit positions_per_run, of (nearly) equal rows: 16 rows of 68 tokens run as 8 + 8, not
        # 15 + 1 (a one-row call pays onnxruntime's fixed cost of a call for a sliver of work).
        rows, length = batch["input_ids"].shape
        slices = -(-rows // max(1, self.positions_per_run // max(length, 1)))
        if slices <= 1:
            return self.session.run([OUTPUT_NAME], batch)[0]
        step = -(-rows // slices)
        return np.concatenate([self.session.run([OUTPUT_NAME], {name: array[start:start + step]
                                                                for name, array in batch.items()})[0]
                               for start in range(0, rows, step)], axis=0)

    def finalize(self):
        self.session = None
