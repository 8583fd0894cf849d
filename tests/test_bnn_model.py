"""The XNOROP/LXNOROP model: counts, memory, the forward and inverse tasks, targets."""

import json
import logging

import pytest

from latlab.errors import DataError, TargetError
from latlab.predictors.bnn import (
    count_network,
    detect_host,
    forward,
    get_target,
    inverse,
    load_catalog,
    load_target_file,
    model_memory,
    target_from_dict,
    write_target,
)

MLP = "bnn-fcnn:784-512-512-10"
CNN = "bnn-cnn:3x32x32-c64-c64-p-c128-p-f256-10"


def test_counts_by_hand():
    c = count_network(MLP, 32)
    assert c.binary_layers == 1
    assert c.xnorops == 512 * 16  # O·⌈512/32⌉
    assert count_network(MLP, 8).xnorops == 512 * 64
    assert c.binary_outputs == 512
    assert c.fp_macs == 784 * 512 + 512 * 10
    # BN (2/elt) + Sign (1/elt) after the first layer, the two Gemm biases
    assert c.other_flops == 2 * 512 + 512 + 512 + 10
    assert c.layers == 7  # executed layers: 2 fused blocks of 3 and the classifier
    cnn = count_network(CNN, 64)
    # c64->c64 at 32x32 (9 words), c64->c128 at 16x16 (9 words), 8192->256 FC (128 words)
    assert cnn.xnorops == 64 * 1024 * 9 + 128 * 256 * 9 + 256 * 128
    assert count_network(CNN, 128).xnorops == 64 * 1024 * 5 + 128 * 256 * 5 + 256 * 64


def test_memory_formula_by_hand():
    m = model_memory(MLP)
    weights = (784 * 512 + 512) * 4 + 512 * 512 // 8 + (512 * 10 + 10) * 4
    assert m.weights_bytes == weights
    # both BN+Sign pairs fuse into one int32 threshold per channel
    assert m.other_bytes == 512 * 4 + 512 * 4
    # peak at the first (fused) layer: float input (784·4) + its 512 output bits
    assert m.activations_bytes == 784 * 4 + 512 // 8
    assert m.total_bytes == weights + 4096 + 3200
    cnn = model_memory(CNN)
    # peak at the first conv: float 3x32x32 input + 64x32x32 output bits
    assert cnn.activations_bytes == 3 * 1024 * 4 + 64 * 1024 // 8
    assert cnn.other_bytes == 4 * (64 + 64 + 128 + 256)
    nofuse = model_memory("bnn-cnn:1x8x8-c4-10")  # Conv+BN+Sign fused, then Flatten, Gemm
    assert nofuse.activations_bytes == 8 * 8 * 4 + 4 * 64 // 8


def test_forward_on_catalog_target_by_hand():
    res = forward(MLP, "stm32h743")
    # Clocks_LXNOROP = xnor 1 + popcount 5 + acc 1 + 2·Speed 1 = 9 (catalog entry)
    assert res.clocks_xnorop == 7 and res.clocks_lxnorop == 9
    clocks = (
        512 * 16 * 9  # XNOROPs
        + 512 * 3  # thresholds
        + (784 * 512 + 512 * 10) * 2  # float MACs at 2 clocks
        + (2 * 512 + 512 + 512 + 10) * 1  # other FLOPs at 1 clock
    )
    assert res.clocks.total == pytest.approx(clocks)
    assert res.fps == pytest.approx(480e6 / clocks)
    assert res.lxnorops == pytest.approx(clocks / 9)
    assert res.xnorops == 8192
    # 1.6 MB of weights fit the 2 MB flash, the rest the 1 MB RAM
    assert res.fits
    tiny = forward(MLP, "atmega328p")
    assert not tiny.fits and tiny.bus_width == 8 and tiny.xnorops == 512 * 64
    wide = forward(MLP, "stm32h743", bus_width=8)
    assert wide.xnorops == 512 * 64 and wide.fps < res.fps


def test_per_layer_costs_add_up():
    res = forward(CNN, "rpi4b")
    # conv+BN+Sign, binconv block, pool, binconv block, pool, flatten, binfc block, classifier
    assert [r["op"] for r in res.layers] == [
        "Conv", "BinaryConv", "MaxPool", "BinaryConv", "MaxPool", "Flatten", "BinaryGemm", "Gemm"
    ]  # fmt: skip
    assert sum(r["clocks"] for r in res.layers) == pytest.approx(res.clocks.total)
    assert sum(r["xnorops"] for r in res.layers) == res.xnorops
    assert sum(r["share"] for r in res.layers) == pytest.approx(1.0)
    binary = [r for r in res.layers if r["binary"]]
    assert all(len(r["layers"]) == 3 and r["layers"][2].startswith("sign") for r in binary)


def test_forward_json_keys_and_cores():
    d = forward(CNN, "rpi4b").as_dict()
    for key in ("fps", "xnorops", "lxnorops", "memory_bytes", "fits"):
        assert key in d
    json.dumps(d)
    pi = get_target("rpi4b")
    assert pi.cp_hz == 4 * 1.5e9
    one = forward(CNN, pi.with_cores(1))
    assert one.fps == pytest.approx(d["fps"] / 4)


def test_no_binary_layers_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="latlab"):
        res = forward("bnn-fcnn:784-256-10", "rpi4b")
    assert res.xnorops == 0 and res.fps > 0
    assert "has no binary layers" in res.warnings[0]
    assert "bnn-fcnn:784-256-10" in caplog.text


def test_inverse_is_consistent_with_forward():
    res = inverse(CNN, 100)
    names = {m.target for m in res.matches}
    for t in load_catalog():
        f = forward(CNN, t)
        assert (t.name in names) == (f.fps >= 100 and f.fits)
    margins = [m.margin for m in res.matches]
    assert margins == sorted(margins, reverse=True) and all(m >= 0 for m in margins)
    assert all(m.reason for m in res.rejected)
    assert len(res.matches) + len(res.rejected) == len(load_catalog())
    assert inverse(CNN, 1e9).matches == ()


@pytest.mark.parametrize("fps", [0, -3, float("nan"), "fast"])
def test_inverse_rejects_bad_rates(fps):
    with pytest.raises(DataError, match="inference rate"):
        inverse(MLP, fps)


def test_catalog_has_real_targets_with_sources():
    cat = load_catalog()
    assert len(cat) >= 12
    assert {8, 16, 32, 128, 256} <= {t.bus_width for t in cat}
    for t in cat:
        assert t.source and t.cp_hz > 0 and t.clocks_lxnorop > t.clocks_xnorop > 0


def test_bad_targets_are_named(tmp_path):
    with pytest.raises(TargetError, match="unknown target 'nope'"):
        get_target("nope")
    good = get_target("rpi4b").to_dict()
    bad_bus = dict(good, bus_width=12)
    with pytest.raises(TargetError, match=r"'rpi4b'.*bus width 12 is not one of"):
        target_from_dict(bad_bus)
    with pytest.raises(TargetError, match="bus width 24"):
        forward(MLP, "rpi4b", bus_width=24)
    missing = json.loads(json.dumps(good))
    del missing["cpu"]["freq_hz"]
    path = tmp_path / "cat.json"
    path.write_text(json.dumps({"targets": [missing]}))
    with pytest.raises(TargetError, match=r"target 'rpi4b' lacks field 'cpu.freq_hz'"):
        load_catalog(path)
    no_name = {k: v for k, v in good.items() if k != "name"}
    path.write_text(json.dumps({"targets": [good, no_name]}))
    with pytest.raises(TargetError, match=r"entry 1 lacks field 'name'"):
        load_catalog(path)
    path.write_text("{not json")
    with pytest.raises(TargetError, match="not valid JSON"):
        inverse(MLP, 10, catalog=path)


def test_target_files_round_trip(tmp_path):
    t = get_target("rp2040")
    p = write_target(t, tmp_path / "t.json")
    again = load_target_file(p)
    assert again == t
    assert get_target(str(p)) == t
    het = dict(t.to_dict(), name="biglittle", cpu={"freq_hz": [2.0e9, 2.0e9, 1.0e9]})
    big = target_from_dict(het)
    assert big.cores == 3 and big.cp_hz == 5.0e9


def test_host_is_detected():
    host = detect_host()
    assert host.bus_width == 64 and host.cp_hz > 1e8 and host.memory_bytes > 1e8
    assert forward(MLP, "host").fps > 0
