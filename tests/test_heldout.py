"""The held-out real networks: published parameter/MAC counts, ONNX round trip, no zoo leak."""

from __future__ import annotations

import pytest

from latlab.datasets import heldout, resolve, zoo
from latlab.encoders.onnx_export import to_onnx
from latlab.encoders.onnx_import import from_onnx
from latlab.errors import NetworkReferenceError

# (parameters, MACs, relative tolerance of each, source). Exact parameter counts where the
# reference implementation's count is published to the unit (torchvision's model table
# ``num_params`` / ``_ops`` GFLOPS, which are MACs; Hugging Face ``num_parameters()``; timm);
# papers' rounded figures get the tolerance of their rounding.
PUBLISHED: dict[str, tuple[float, float, float, float, str]] = {
    "efficientnet_v2_s": (21_458_488, 8.366e9, 0, 0.001, "torchvision table (384 px)"),
    "regnet_x_400mf": (5_495_976, 0.414e9, 0, 0.002, "torchvision table"),
    "wide_resnet50_2": (68_883_240, 11.398e9, 0, 0.001, "torchvision table"),
    "convnext_tiny": (28_589_128, 4.456e9, 0, 0.001, "torchvision table"),
    # Han et al. 2020, Table 7: GhostNet 1.0x 5.2 M parameters, 141 M FLOPs (MACs)
    "ghostnet_100": (5.2e6, 141e6, 0.01, 0.01, "GhostNet paper Table 7"),
    # Tan & Le 2019, Table 2: MixNet-S 4.1 M parameters, 256 M FLOPs. The MACs of the
    # convolutions and FC come to 239 M (-6.6 %) while the parameters agree with timm's
    # mixnet_s (4.13 M) to 0.1 %: the paper's count includes more than multiply-adds.
    "mixnet_s": (4.1e6, 256e6, 0.01, 0.08, "MixConv paper Table 2; timm mixnet_s 4.13 M"),
    # Touvron et al. 2021, Table 1: DeiT-Ti 5 M parameters, 1.3 G FLOPs; timm
    # deit_tiny_patch16_224: 5,717,416 parameters, 1.26 GMACs
    "deit_tiny": (5_717_416, 1.26e9, 0, 0.01, "timm deit_tiny_patch16_224; DeiT Table 1"),
    # Mehta & Rastegari 2022, Table 4 / timm mobilevit_s: 5.6 M parameters, 2.0 G MACs @256
    "mobilevit_s": (5.6e6, 2.0e9, 0.01, 0.02, "MobileViT paper; timm mobilevit_s"),
    # Hugging Face num_parameters(): DistilBertModel (distilbert-base-uncased) and
    # GPT2LMHeadModel (gpt2, head tied to the embedding); MACs: closed form below
    "distilbert_base": (66_362_880, 0.0, 0, 0, "HF distilbert-base-uncased"),
    "gpt2_small": (124_439_808, 0.0, 0, 0, "HF gpt2"),
}
FAMILIES = {
    "efficientnet_v2_s": "efficientnetv2",
    "regnet_x_400mf": "regnetx",
    "wide_resnet50_2": "wide_resnet",
    "convnext_tiny": "convnext",
    "ghostnet_100": "ghostnet",
    "mixnet_s": "mixnet",
    "deit_tiny": "deit",
    "mobilevit_s": "mobilevit",
    "distilbert_base": "distilbert",
    "gpt2_small": "gpt",
}


def text_macs(name: str, s: int) -> int:
    """Per layer the projections and FFN S·(4·D² + 2·D·F) plus Q·Kᵀ and P·V 2·S²·D; GPT-2
    adds the LM head S·D·V."""
    layers, d, f = {"distilbert_base": (6, 768, 3072), "gpt2_small": (12, 768, 3072)}[name]
    macs = layers * (s * (4 * d * d + 2 * d * f) + 2 * s * s * d)
    return macs + (s * d * 50257 if name == "gpt2_small" else 0)


def test_the_set_is_disjoint_from_the_zoo_and_mixes_cnns_and_attention():
    assert heldout.names() == sorted(PUBLISHED)
    assert not set(heldout.names()) & set(zoo.names())
    attention = [n for n in heldout.names() if heldout.get_model(n).attention]
    assert len(attention) >= 3 and len(heldout.names()) - len(attention) >= 4
    # none is reachable as a zoo: reference (latlab compare measures every zoo network)
    with pytest.raises(NetworkReferenceError, match="unknown zoo model"):
        resolve("zoo:ghostnet_100")
    with pytest.raises(NetworkReferenceError, match="unknown held-out network 'resnet50'"):
        heldout.build("resnet50")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_match_published_figures_and_the_onnx_imports_back(name):
    params, macs, p_tol, m_tol, _source = PUBLISHED[name]
    g = heldout.build(name)
    model = heldout.get_model(name)
    assert g.totals.params == pytest.approx(params, rel=p_tol or 1e-12)
    expected = macs or text_macs(name, model.resolution)
    assert g.totals.macs == pytest.approx(expected, rel=m_tol or 1e-12)
    assert g.family == FAMILIES[name] and g.meta["held_out"] is True
    assert not g.unknown_ops
    # latlab's export (the file that is measured) imports back with the same MACs
    back = from_onnx(to_onnx(g))
    assert back.totals.macs == g.totals.macs
    assert not back.unknown_ops
    if model.attention:
        assert any(la.op == "MatMul" and len(la.inputs) == 2 for la in g.layers)
        assert any(la.op == "Softmax" for la in g.layers)


def test_reference_is_an_onnx_file_that_resolves_to_the_same_network(tmp_path):
    ref = heldout.reference("ghostnet_100", tmp_path)
    path = tmp_path / "ghostnet_100.onnx"
    assert ref == f"onnx:{path.resolve()}" and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert heldout.reference("ghostnet_100", tmp_path) == ref  # kept, not rewritten
    assert path.stat().st_mtime_ns == stamp
    g, h = resolve(ref), heldout.build("ghostnet_100")
    assert g.inputs["input"] == (1, 3, 224, 224)
    assert (g.totals.macs, g.totals.params) == (h.totals.macs, h.totals.params)


def test_text_models_take_int64_token_ids_of_their_sequence_length():
    g = heldout.build("distilbert_base")
    assert g.inputs == {"input_ids": (1, 128)} and g.input_dtype("input_ids") == "int64"
    assert heldout.build("gpt2_small").layers[-1].output_shape == (1, 128, 50257)
