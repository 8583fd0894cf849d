"""Nb201OpCountEncoder: op counts over all and over live edges of the nb201 cell."""

from __future__ import annotations

import numpy as np
import pytest

from latlab.datasets.references import resolve
from latlab.encoders.base import encoder_from_state
from latlab.encoders.nb201_cell import OPS, all_archs, live_edges, parse_arch
from latlab.encoders.vector import (
    NB201_COUNT_FEATURES,
    Nb201OneHotEncoder,
    Nb201OpCountEncoder,
    make_vector_encoder,
)
from latlab.errors import FeatureError


def test_golden_cell():
    # 1<-0 conv3x3 feeds nothing that reaches the output: dead. 3<-0 skip is the only path.
    g = resolve("nb201:|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    row = Nb201OpCountEncoder().transform([g])[0]
    counts = dict(zip(NB201_COUNT_FEATURES, row, strict=True))
    assert counts["count=none"] == 4 and counts["count=nor_conv_3x3"] == 1
    assert counts["count=skip_connect"] == 1
    assert counts["live_count=skip_connect"] == 1 and counts["live_count=nor_conv_3x3"] == 0
    assert sum(row[: len(OPS)]) == 6


def test_counts_are_sums_of_the_one_hot_over_the_whole_space():
    archs = all_archs()[::37]
    graphs = [resolve(f"nb201:{a}") for a in archs]
    counts = Nb201OpCountEncoder().transform(graphs)
    onehot = Nb201OneHotEncoder().transform(graphs).reshape(len(graphs), 6, len(OPS))
    np.testing.assert_array_equal(counts[:, : len(OPS)], onehot.sum(axis=1))
    live = np.array([live_edges(parse_arch(a)) for a in archs])
    np.testing.assert_array_equal(counts[:, len(OPS) :], (onehot * live[:, :, None]).sum(axis=1))
    assert np.all(counts[:, len(OPS) :] <= counts[:, : len(OPS)])


def test_by_name_state_and_bad_input():
    enc = make_vector_encoder("nb201-onehot+nb201-counts")
    g = [resolve("nb201:|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|none~1|none~2|")]
    x = enc.fit_transform(g)
    assert x.shape == (1, 40)
    again = encoder_from_state(Nb201OpCountEncoder().to_state())
    np.testing.assert_array_equal(again.transform(g), Nb201OpCountEncoder().transform(g))
    with pytest.raises(FeatureError, match="not a NAS-Bench-201 network"):
        Nb201OpCountEncoder().transform([resolve("fcnn:4-8-2")])
