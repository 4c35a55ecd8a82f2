"""Rewritten models export with only allowed-rank convolutions: torch.export, ONNX (dynamo) + onnxruntime."""

from __future__ import annotations

import onnx
import onnxruntime
import pytest
import torch

import convnd
from example_models import make

pytestmark = pytest.mark.slow


def onnx_convolutions(model_proto: onnx.ModelProto) -> list[tuple[str, int, int, int]]:
    """(op, kernel_shape length, input rank, weight rank) of every Conv/ConvTranspose node (shape inference)."""
    graph = onnx.shape_inference.infer_shapes(model_proto).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.value_info, *graph.input, *graph.output)}
    ranks.update((t.name, len(t.dims)) for t in graph.initializer)
    found = []
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            kernel = next(len(a.ints) for a in node.attribute if a.name == "kernel_shape")
            found.append((node.op_type, kernel, ranks[node.input[0]], ranks[node.input[1]]))
    return found


@pytest.mark.parametrize(("name", "dims"), [("wav2vec", 2), ("lightfield", 2)])
def test_onnx_export_has_only_allowed_convolutions_and_runs_in_onnxruntime(name, dims):
    model, x = make(name)
    rewritten = convnd.rewrite(model, dims)
    program = torch.onnx.export(rewritten, (x,), dynamo=True, verbose=False)
    convolutions = onnx_convolutions(program.model_proto)
    assert convolutions
    assert {(kernel, data, weight) for _, kernel, data, weight in convolutions} == {(dims, dims + 2, dims + 2)}
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "dims"), [("video", 2), ("volume", 1), ("lightfield", 1)])
def test_torch_export_has_only_allowed_convolutions(name, dims):
    model, x = make(name)
    exported = torch.export.export(convnd.rewrite(model, dims), (x,))
    weights = [
        node.args[1].meta["val"].dim()
        for node in exported.graph.nodes
        if node.op == "call_function" and "conv" in str(node.target)
    ]
    assert weights and set(weights) == {dims + 2}
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)
