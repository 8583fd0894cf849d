"""IR -> torch eager module: every op the builder makes runs with the IR's shapes."""

import pytest
import torch

from latlab.encoders import NetBuilder
from latlab.encoders.torch_export import to_torch
from latlab.errors import FeatureError


def _many_ops_net():
    b = NetBuilder("t", (2, 3, 33, 33))
    x = b.relu6(b.bn(b.conv(b.input, 16, 3, 2)))
    x = b.conv(x, 16, 3, padding=(0, 0, 1, 1))  # asymmetric pads
    y = b.dwconv(x, 5)
    z = b.mul(y, b.hardsigmoid(b.conv(b.global_avgpool(y), 16, 1, bias=True)))
    z = b.channel_shuffle(z, 2)
    a, c = b.split(z, [8, 8])
    z = b.concat([b.maxpool(a, 3, 1, 1, ceil_mode=True), b.avgpool(c, 3, 1, 1)])
    z = b.pad(z, [0, 0, 1, 1, 0, 0, 1, 1])
    z = b.slice(z, [1], [15], [2])
    z = b.resize(z, 2.0)
    z = b.lrn(b.swish(b.hardswish(z)))
    z = b.flatten(b.global_maxpool(z))
    z = b.softmax(b.gemm(b.relu(b.gemm(z, 32)), 10))
    return b.build()


def test_every_layer_output_matches_ir_shapes():
    g = _many_ops_net()
    module = to_torch(g)
    env = {"input": torch.randn(g.inputs["input"])}
    with torch.inference_mode():
        for layer, op in zip(g.layers, module.ops, strict=True):
            out = op(*(env[t] for t in layer.inputs))
            outs = out if len(layer.outputs) > 1 else (out,)
            for name, tensor, shape in zip(layer.outputs, outs, layer.output_shapes, strict=True):
                assert tuple(tensor.shape) == shape, layer.name
                env[name] = tensor
        y = module(torch.randn(g.inputs["input"]))
    assert tuple(y.shape) == (2, 10)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(2))


def test_unknown_op_is_named():
    b = NetBuilder("t", (1, 4))
    b.add_layer("Mystery", [b.input], output_shapes=[(1, 4)])
    with pytest.raises(FeatureError, match="'Mystery'"):
        to_torch(b.build())
