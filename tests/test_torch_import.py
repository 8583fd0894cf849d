"""Torch modules to the IR through the legacy ONNX exporter: counts against hand values."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from latlab.encoders.onnx_export import to_onnx
from latlab.encoders.onnx_import import from_onnx
from latlab.encoders.torch_import import from_torch, torch_to_onnx
from latlab.errors import OnnxImportError


class ConvBnNet(nn.Module):
    """conv(no bias)-BN-ReLU, then a grouped and a depthwise branch concatenated, dropout, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(24 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.cat([self.pool(self.grouped(y)), self.depthwise(y)], dim=1)
        return self.fc(self.drop(y.view(y.size(0), -1)))


# Hand-computed counts for a (2, 3, 8, 8) input.
B = 2
CONV_MACS = B * 8 * 8 * 8 * (3 * 9)
GROUPED_MACS = B * 16 * 8 * 8 * (2 * 9)
DW_MACS = B * 8 * 4 * 4 * 9
FC_MACS = B * 10 * 384
MACS = CONV_MACS + GROUPED_MACS + DW_MACS + FC_MACS
PARAMS_NO_BN = 8 * 27 + 16 * 2 * 9 + (8 * 9 + 8) + (384 * 10 + 10)


def test_eval_export_folds_batchnorm_into_the_conv():
    g = from_torch(ConvBnNet(), (B, 3, 8, 8), name="convbn")
    assert [layer.op for layer in g.layers] == [
        "Conv", "Relu", "Conv", "MaxPool", "Conv", "Concat", "Reshape", "Gemm",
    ]  # fmt: skip
    assert g.totals.macs == MACS
    # folding gives the first conv a bias of 8
    assert g.totals.params == PARAMS_NO_BN + 8
    _, _, grouped, _, dw, cat, reshape, fc = g.layers
    assert grouped.attrs["groups"] == 4 and grouped.kind == "conv"
    assert dw.kind == "dwconv" and dw.output_shape == (B, 8, 4, 4)
    assert cat.output_shape == (B, 24, 4, 4)
    assert reshape.output_shape == (B, 384)
    assert fc.weight_shapes == ((10, 384), (10,))
    assert g.name == "convbn" and g.family == "torch" and g.unknown_ops == ()


def test_unfolded_and_training_exports_keep_batchnorm():
    net = ConvBnNet()
    net.train()
    unfolded = from_torch(net, (B, 3, 8, 8), fold_batchnorm=False)
    assert net.training  # the module's own mode is restored
    bn = [layer for layer in unfolded.layers if layer.op == "BatchNormalization"]
    assert len(bn) == 1 and bn[0].params == 16
    assert unfolded.totals.params == PARAMS_NO_BN + 16
    assert unfolded.totals.macs == MACS
    training = from_torch(net, (B, 3, 8, 8), training=True)
    ops = [layer.op for layer in training.layers]
    assert "BatchNormalization" in ops and "Dropout" in ops
    assert training.totals.macs == MACS
    assert training.totals.params == PARAMS_NO_BN + 16


class FlattenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


def test_shape_arithmetic_of_a_dynamic_batch_export_is_not_compute():
    # With a dynamic batch, x.view(x.size(0), -1) exports as Shape -> Gather -> Unsqueeze ->
    # Concat -> Reshape: only the Reshape is a layer, its target read from the folded shapes.
    model = torch_to_onnx(FlattenNet(), (1, 3, 6, 6), dynamic_batch=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"Shape", "Gather", "Concat"} <= ops  # the pattern is really there
    g = from_onnx(model, input_shape=(3, 3, 6, 6))
    assert [layer.op for layer in g.layers] == ["Conv", "Relu", "Reshape", "Gemm"]
    reshape = g.layers[2]
    assert reshape.attrs["shape"] == (3, -1) and reshape.output_shape == (3, 144)
    assert reshape.inputs == (g.layers[1].outputs[0],)
    assert g.totals.macs == 3 * (4 * 36 * 27 + 5 * 144)
    assert g.totals.params == 4 * 27 + 4 + 144 * 5 + 5
    # the symbolic batch alone defaults to the batch option
    assert from_onnx(model, batch=5).inputs["input"] == (5, 3, 6, 6)


class TinyAttention(nn.Module):
    """Single-head self-attention block with LayerNorm and GELU (transformer-style ops)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.scale = d**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        return x + nn.functional.gelu(self.out(att @ v))


def test_attention_block_counts():
    b, t, d = 2, 5, 16
    g = from_torch(TinyAttention(d), (b, t, d))
    assert g.unknown_ops == ()
    qkv = b * t * d * 3 * d
    scores = b * t * t * d
    mix = b * t * t * d
    out = b * t * d * d
    assert g.totals.macs == qkv + scores + mix + out
    # LayerNorm scale+shift, qkv and out projections; scalar constants are not parameters
    assert g.totals.params == 2 * d + (d * 3 * d + 3 * d) + (d * d + d)
    kinds = {layer.kind for layer in g.layers}
    assert {"fc", "norm", "softmax", "eltwise"} <= kinds
    assert sum(1 for layer in g.layers if layer.op == "MatMul" and not layer.weight_shapes) == 2


def test_bad_input_shapes_and_failing_modules_raise_naming_them():
    with pytest.raises(OnnxImportError, match="invalid input shape"):
        from_torch(FlattenNet(), (1, 0, 6, 6))

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no forward for you")

    with pytest.raises(OnnxImportError, match=r"export of Broken .* failed: no forward for you"):
        from_torch(Broken(), (1, 3))


def test_ceil_mode_pooling_takes_the_runtime_size():
    # onnx's shape inference keeps a last window that starts in the end padding (5 -> 4 here);
    # PyTorch and onnxruntime drop it (5 -> 3). The IR follows the runtime, downstream too.
    net = nn.Sequential(nn.MaxPool2d(2, 2, padding=1, ceil_mode=True), nn.Conv2d(2, 4, 1))
    expected = tuple(net(torch.zeros(1, 2, 5, 5)).shape)
    assert expected == (1, 4, 3, 3)
    g = from_torch(net, (1, 2, 5, 5))
    pool, conv = g.layers
    assert pool.output_shape == (1, 2, 3, 3) and pool.attrs["ceil_mode"] == 1
    assert pool.attrs["pads"] == (1, 1, 1, 1)  # the file's attributes are kept
    assert conv.output_shape == expected and conv.macs == 4 * 9 * 2


def test_imported_graphs_export_and_run_again():
    # The IR of a torch model re-exports to a runnable model (scalar operands such as the
    # attention scale are put back) whose import has the same counts.
    for net, shape in ((TinyAttention(16), (2, 5, 16)), (ConvBnNet(), (B, 3, 8, 8))):
        g = from_torch(net, shape)
        model = to_onnx(g)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"input": np.zeros(shape, np.float32)})
        assert y.shape == g.layers[-1].output_shape
        back = from_onnx(model)
        assert back.totals == g.totals
        assert [layer.op for layer in back.layers] == [layer.op for layer in g.layers]


class ClassToken(nn.Module):
    """ViT's prologue: a learned token expanded to the batch and concatenated to the tokens."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = self.cls.expand(x.shape[0], -1, -1)
        return self.proj(torch.cat([token, x], dim=1))


def test_weights_computed_at_run_time_count_their_stored_values():
    # cls.expand(batch, -1, -1) is a constant subgraph (Expand of a weight to a shape read
    # with Shape): the Concat reads a (batch, 1, d) weight, whose parameters are the d values
    # of the token, whatever the batch.
    model = torch_to_onnx(ClassToken(), (1, 4, 8), dynamic_batch=True)
    for batch in (1, 3):
        g = from_onnx(model, batch=batch)
        assert [layer.op for layer in g.layers] == ["Concat", "MatMul", "Add"]
        cat = g.layers[0]
        assert cat.weight_shapes == ((batch, 1, 8),)
        assert cat.output_shape == (batch, 5, 8)
        assert cat.params == 8 and cat.weight_bytes == batch * 8 * 4
        assert g.totals.params == sum(p.numel() for p in ClassToken().parameters())
