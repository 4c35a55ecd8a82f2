"""torch.export and ONNX export of models with 4-d and 5-d convnd layers.

The lowering is traced away at export time: the exported graph holds only torch's
native 1-3-d convolutions, so an ONNX runtime that knows Conv of rank <= 3 runs it.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

import convnd

pytestmark = pytest.mark.slow


class Net(torch.nn.Module):
    """A 4-d encoder/decoder and a 5-d branch with asymmetric padding: every lowering strategy that exports."""

    def __init__(self) -> None:
        super().__init__()
        self.down = convnd.ConvNd(2, 3, (3, 3, 3, 3), padding=1, padding_mode="reflect")
        self.up = convnd.ConvTransposeNd(3, 2, (2, 2, 2, 2), stride=2, output_padding=(1, 0, 0, 1))
        self.side = convnd.ConvNd(2, 2, (2, 2, 2, 2, 2), stride=(1, 2, 1, 1, 1), padding=((1, 0), 0, 1, 0, 0))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.up(torch.relu(self.down(x))), self.side(z)


def _inputs(batch: int = 2, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 2, 3, 4, 3, 4, device=device), torch.randn(1, 2, 3, 4, 3, 3, 3, device=device)


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def test_exported_program_gives_identical_results(net: Net, device) -> None:
    model, inputs = net.to(device), _inputs(device=device)
    program = torch.export.export(model, inputs)
    for got, expected in zip(program.module()(*inputs), model(*inputs)):
        assert torch.equal(got, expected)


def test_exported_program_takes_a_dynamic_batch(net: Net, device) -> None:
    model = net.to(device)
    batch = torch.export.Dim("batch", min=2, max=16)
    program = torch.export.export(model, _inputs(device=device), dynamic_shapes=({0: batch}, None))
    for size in (3, 5):
        x, z = _inputs(size, device)
        got = program.module()(x, z)
        # the layers on x see a symbolic batch and take the shape-free plan (tap sum, trailing dims native);
        # z's sizes are static, so its layer keeps the cost model's choice, as in eager
        with convnd.strategy("tapsum", native_axes=(1, 2, 3)):
            expected = model.up(torch.relu(model.down(x)))
        assert torch.equal(got[0], expected), size
        assert torch.equal(got[1], model.side(z)), size


@pytest.mark.parametrize("strategy", ["tapsum", "fold", "unfold", "spread", "dft"])
def test_onnx_graph_has_only_native_rank_convolutions_and_runs_in_onnxruntime(net: Net, strategy: str) -> None:
    """Each strategy that runs native convolutions exports them at rank <= 3; ``unfold`` (the cost model's
    choice for these small layers) exports GEMMs only, the transposed layer whose kernel tiles its stride
    (un-patching) included: a batched GEMM, then its interleave."""
    model, inputs = net.cpu(), _inputs()
    with convnd.strategy(strategy):
        proto = torch.onnx.export(model, inputs, dynamo=True, verbose=False).model_proto
    proto = onnx.shape_inference.infer_shapes(proto)
    ranks = {t.name: len(t.dims) for t in proto.graph.initializer}
    values = [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]
    ranks |= {v.name: len(v.type.tensor_type.shape.dim) for v in values}
    convs = [node for node in proto.graph.node if node.op_type in ("Conv", "ConvTranspose")]
    if strategy == "unfold":
        assert convs == [] and any(node.op_type in ("MatMul", "Gemm", "Einsum") for node in proto.graph.node)
    else:
        assert convs, "the exported graph has no convolution"
    for node in convs:
        kernel = [list(a.ints) for a in node.attribute if a.name == "kernel_shape"]
        assert kernel and len(kernel[0]) <= 3, (node.name, kernel)
        assert ranks[node.input[0]] <= 5 and ranks[node.input[1]] <= 5, node.name  # (B, C, up to 3 spatial)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), inputs)}
    with convnd.strategy(strategy):
        outputs = model(*inputs)
    for got, expected in zip(session.run(None, feeds), outputs):
        torch.testing.assert_close(torch.from_numpy(got), expected.detach(), rtol=1e-5, atol=1e-5)
