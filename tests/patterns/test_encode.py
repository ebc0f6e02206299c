from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionatlas.errors import ConfigError, DataError
from lesionatlas.patterns import PositionOneHot, RankEncoding, encode_sequences, order_sequences

SEQ = pd.DataFrame({
    "patient_id": ["a", "a", "a", "b", "c", "c"],
    "rank": [1, 2, 2, 1, 1, 1],
    "organ": ["liver", "lung", "bone", "lung", "lung", "liver"],
    "day": [10.0, 20.0, 20.0, 5.0, 7.0, 7.0],
})


def test_order_breaks_ties_by_organ_name():
    o = order_sequences(SEQ)
    assert o.loc[o["patient_id"] == "a", "organ"].tolist() == ["liver", "bone", "lung"]
    assert o.loc[o["patient_id"] == "a", "position"].tolist() == [1, 2, 3]
    assert o.loc[o["patient_id"] == "c", "organ"].tolist() == ["liver", "lung"]


def test_position_onehot_matches_hand_computation():
    x = encode_sequences(SEQ, "position_onehot")
    e = np.e
    # X1 observed categories: liver, lung (a: liver, b: lung, c: liver) -> m = 2
    assert list(x.columns[:2]) == ["X1_liver", "X1_lung"]
    assert x.loc["a", "X1_liver"] == pytest.approx(e / (e + 1))
    assert x.loc["a", "X1_lung"] == pytest.approx(1 / (e + 1))
    # X2: a bone, b none, c lung -> categories bone, lung, none (m = 3)
    assert [c for c in x.columns if c.startswith("X2_")] == ["X2_bone", "X2_lung", "X2_none"]
    assert x.loc["b", "X2_none"] == pytest.approx(e / (e + 2))
    assert x.loc["b", "X2_bone"] == pytest.approx(1 / (e + 2))
    # X3: a lung, b none, c none
    assert x.loc["a", "X3_lung"] == pytest.approx(e / (e + 1))
    assert x.loc["c", "X3_none"] == pytest.approx(e / (e + 1))
    # every block sums to 1 per row
    for p in ("X1_", "X2_", "X3_"):
        np.testing.assert_allclose(x.filter(like=p).sum(axis=1), 1.0)


def test_position_onehot_vocabulary_blocks():
    x = encode_sequences(SEQ, PositionOneHot(categories="vocabulary", max_positions=2))
    assert x.shape == (3, 2 * 4)  # (bone, liver, lung, none) x 2 positions
    assert x.loc["a", "X1_liver"] == pytest.approx(np.e / (np.e + 3))


def test_rank_encoding_by_hand():
    x = encode_sequences(SEQ, RankEncoding(first_weight=1.0, rank_weight=0.5, count_weight=1.5))
    assert x.loc["a", "rank_lung"] == pytest.approx(0.5 * 1 / 2)
    assert x.loc["a", "rank_bone"] == pytest.approx(0.5 * 1 / 2)
    assert x.loc["b", "rank_liver"] == 0.0
    assert x.loc["c", "first_liver"] == pytest.approx(0.5)  # tied first organs share the weight
    assert x.loc["c", "first_lung"] == pytest.approx(0.5)
    assert x.loc["a", "n_organs_ge_2"] == 1.5 and x.loc["a", "n_organs_ge_3"] == 1.5
    assert x.loc["b", "n_organs_ge_2"] == 0.0
    assert x.loc["c", "n_organs_ge_3"] == 0.0


def test_bad_inputs():
    with pytest.raises(DataError, match="rank"):
        encode_sequences(SEQ.drop(columns="rank"))
    with pytest.raises(DataError, match="repeated"):
        encode_sequences(pd.concat([SEQ, SEQ.iloc[:1]]))
    with pytest.raises(ConfigError, match="encoding"):
        encode_sequences(SEQ, "bogus")
    with pytest.raises(ConfigError, match="rank_weight"):
        encode_sequences(SEQ, RankEncoding(rank_weight=-1))
