"""``GraphBuilder``: a thin layer over ``onnx.helper`` that names tensors, keeps the weights and emits nodes.

The exporter writes its ONNX graphs straight from the weights with it (encoder.py, pooling.py): no framework traces
anything, so the graph holds exactly the nodes written, in the form onnxruntime's kernels (or TensorRT) want.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MICROSOFT = "com.microsoft"  # onnxruntime's contrib operators (Attention, BiasGelu, DynamicQuantizeMatMul, ...)
FLOAT = TensorProto.FLOAT
INT32 = TensorProto.INT32
INT64 = TensorProto.INT64
FLOAT16 = TensorProto.FLOAT16


class GraphBuilder:
    def __init__(self, *, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}
        self._constants: dict[tuple, str] = {}

    def _name(self, stem: str) -> str:
        count = self._counts.get(stem, 0)
        self._counts[stem] = count + 1
        return stem if count == 0 else f"{stem}_{count}"

    def weight(self, array: np.ndarray, name: str) -> str:
        """A weight tensor (float32 unless it is an integer array) stored in the model under ``name``."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        name = self._name(name)
        self.initializers.append(numpy_helper.from_array(array.copy(order="C"), name))  # keeps 0-d arrays 0-d
        return name

    def constant(self, value, dtype=np.float32) -> str:
        """A small constant (a scalar, an axes list, a shape), stored once however often it is used."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.weight(array, "const")
        return self._constants[key]

    def op(self, op_type: str, *inputs: str | None, name: str | None = None, outputs: int = 1,
           domain: str = "", output_name: str | None = None, **attributes) -> str | list[str]:
        """One node; ``None`` leaves an optional input out. Returns its output name (a list for several);
        ``output_name`` names a graph output."""
        stem = self._name(name or op_type)
        names = [stem] if outputs == 1 else [f"{stem}:{i}" for i in range(outputs)]
        if output_name:
            names[0] = output_name
        self.nodes.append(helper.make_node(op_type, ["" if x is None else x for x in inputs], names, name=stem,
                                           domain=domain, **attributes))
        return names[0] if outputs == 1 else names

    def choose(self, condition: str, if_true: Callable[[GraphBuilder], str], if_false: Callable[[GraphBuilder], str],
               *, name: str) -> str:
        """If(condition): each branch a subgraph that its function writes into a builder of its own (reading this
        graph's tensors by name), whose one float32 tensor it returns."""
        branches = []
        for write in (if_true, if_false):
            branch = GraphBuilder(opset=self.opset)
            branch._counts = self._counts  # node and tensor names stay unique across the whole model
            output = write(branch)
            branches.append(helper.make_graph(branch.nodes, self._name(f"{name}_branch"), [],
                                              [tensor(output, FLOAT, None)], initializer=branch.initializers))
        return self.op("If", condition, name=name, then_branch=branches[0], else_branch=branches[1])

    def model(self, *, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "encoder", inputs, outputs, initializer=self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        if any(node.domain == MICROSOFT for node in self.nodes):
            opsets.append(helper.make_opsetid(MICROSOFT, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="bert-export", doc_string=doc)
        model.ir_version = min(model.ir_version, 10)  # onnxruntime's and TensorRT's parsers lag onnx's newest IR
        return model


def tensor(name: str, elem_type: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, dims)
