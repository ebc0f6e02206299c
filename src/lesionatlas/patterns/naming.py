"""Names for progression groups, from what their members share - never from a cluster's index.

Each cluster is described by its members (:func:`describe_clusters`): the share with exactly one
progressing organ (``share_mono``), the share with ``hetero_min_organs`` (3) or more (``share_hetero``),
the mean number of progressing organs, and the distribution of the first-progressing organ (a patient
whose first rank is shared by :math:`m` organs counts :math:`1/m` for each).

Rules (:func:`name_clusters`), applied to each cluster in turn:

1. ``share_mono > 0.5`` -> **Mono-Organ** (one progressive organ);
2. else ``share_hetero > 0.5`` -> **Hetero-Organ** (many progressive organs);
3. else by the most common first organ *o* with share ``top_first_share``: more than 0.5 ->
   **<Organ>-First** (``Liver-First``, ``Lung-First``, ``Peritoneum-First``, ...); otherwise
   **Other-First** (no single organ leads).

When two clusters get the same name, the one that fits it best keeps it (largest ``share_mono``,
``share_hetero`` or ``top_first_share``; then the less dominated by one first organ, i.e. the more generic;
then larger size; then smaller cluster number) and the others are made descriptive: their first organ is
added in parentheses when more than half of the members share it (``Mono-Organ (Liver)``); otherwise, or if
that still repeats, a number (``Liver-First 2``). The outcome depends only on the members, so it is deterministic.

Sub-clusters of the Hetero-Organ group are named by where one organ (default liver) sits in their
sequences (:func:`name_by_organ_rank`): ``Liver 1st``, ``Liver 2nd``, ``Liver 3rd+`` or ``No Liver``, by
the most common rank of that organ among the members.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.organs import ORGAN_LABELS

MONO = "Mono-Organ"
HETERO = "Hetero-Organ"
OTHER_FIRST = "Other-First"
NO_PROGRESSION = "No-Progression"
PAPER_GROUPS = (MONO, HETERO, "Liver-First", "Lung-First", OTHER_FIRST)


def organ_label(organ: str) -> str:
    """Display label of an organ (``lymph_node_distal`` -> ``Lymph node (distal)``)."""
    return ORGAN_LABELS.get(organ, organ.replace("_", " ").capitalize())


def first_name(organ: str) -> str:
    """``liver`` -> ``Liver-First``."""
    return f"{organ_label(organ)}-First"


def describe_clusters(ordered: pd.DataFrame, clusters: pd.Series, *, hetero_min_organs: int = 3) -> pd.DataFrame:
    """One row per cluster: what its members share.

    Parameters
    ----------
    ordered : DataFrame
        Sequences with ``patient_id, rank, organ`` (one row per progressing organ).
    clusters : Series
        Cluster number indexed by ``patient_id`` (patients with a sequence).

    Returns
    -------
    DataFrame
        ``cluster, n_patients, share_mono, share_hetero, mean_n_organs, top_first_organ,
        top_first_share, second_first_organ, second_first_share``, sorted by cluster.
    """
    n = ordered.groupby("patient_id").size().reindex(clusters.index).fillna(0)
    first = ordered[ordered["rank"] == 1]
    w = 1.0 / first.groupby("patient_id")["organ"].transform("size")
    fw = pd.DataFrame({"cluster": clusters.reindex(first["patient_id"]).to_numpy(), "organ": first["organ"].to_numpy(),
                       "w": w.to_numpy()})
    shares = fw.groupby(["cluster", "organ"])["w"].sum().unstack(fill_value=0.0)
    rows = []
    for c in sorted(clusters.unique()):
        members = clusters.index[clusters == c]
        nn = n.loc[members]
        dist = (shares.loc[c] / len(members)) if c in shares.index else pd.Series(dtype=float)
        # most common first, ties by organ name
        dist = dist[dist > 0].sort_index()
        dist = dist.iloc[np.lexsort((np.arange(len(dist)), -dist.to_numpy()))] if len(dist) else dist
        rows.append({
            "cluster": int(c), "n_patients": int(len(members)),
            "share_mono": float((nn == 1).mean()), "share_hetero": float((nn >= hetero_min_organs).mean()),
            "mean_n_organs": float(nn.mean()),
            "top_first_organ": str(dist.index[0]) if len(dist) else "",
            "top_first_share": float(dist.iloc[0]) if len(dist) else 0.0,
            "second_first_organ": str(dist.index[1]) if len(dist) > 1 else "",
            "second_first_share": float(dist.iloc[1]) if len(dist) > 1 else 0.0,
        })
    return pd.DataFrame(rows)


def name_clusters(description: pd.DataFrame, *, majority: float = 0.5) -> pd.DataFrame:
    """Name each cluster by the rules of the module notes; adds ``group``, ``rule`` and ``fit`` columns."""
    d = description.copy()
    names, rules, fits = [], [], []
    for _, r in d.iterrows():
        if r["share_mono"] > majority:
            names.append(MONO), rules.append("share_mono > 0.5"), fits.append(r["share_mono"])
        elif r["share_hetero"] > majority:
            names.append(HETERO), rules.append("share_hetero > 0.5"), fits.append(r["share_hetero"])
        elif r["top_first_share"] > majority:
            names.append(first_name(r["top_first_organ"])), rules.append("top_first_share > 0.5")
            fits.append(r["top_first_share"])
        else:
            names.append(OTHER_FIRST), rules.append("no first organ > 0.5"), fits.append(1.0 - r["top_first_share"])
    d["group"], d["rule"], d["fit"] = names, rules, fits
    return _dedupe(d)


def _dedupe(d: pd.DataFrame) -> pd.DataFrame:
    d = d.copy()
    top = d["top_first_share"].to_numpy(dtype=float) if "top_first_share" in d else np.zeros(len(d))
    order = np.lexsort((d["cluster"].to_numpy(), -d["n_patients"].to_numpy(), top, -d["fit"].to_numpy()))
    final: dict[int, str] = {}
    used: set[str] = set()
    for i in order:
        r = d.iloc[i]
        name = str(r["group"])
        if name in used:
            qual = organ_label(r["top_first_organ"]) if r["top_first_organ"] and r.get("top_first_share", 0) > 0.5 else ""
            if qual and not name.startswith(qual):
                name = f"{name} ({qual})"
            base, j = name, 2
            while name in used:
                name, j = f"{base} {j}", j + 1
        used.add(name)
        final[int(r["cluster"])] = name
    d["group"] = d["cluster"].map(final)
    return d


def _ordinal(k: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(k, f"{k}th")


def name_by_organ_rank(ordered: pd.DataFrame, clusters: pd.Series, *, organ: str = "liver",
                       last_rank: int = 3) -> pd.DataFrame:
    """Name sub-clusters by the most common rank of ``organ`` among their members.

    Returns ``cluster, n_patients, <organ>_rank_mode, share_mode, mean_n_organs, group, rule, fit``;
    ranks from ``last_rank`` on are pooled (``Liver 3rd+``); patients in whom the organ never progresses
    count as ``No Liver``.
    """
    label = organ_label(organ)
    rk = ordered[ordered["organ"] == organ].set_index("patient_id")["rank"]
    rk = rk.reindex(clusters.index)
    n = ordered.groupby("patient_id").size().reindex(clusters.index)
    cat = rk.clip(upper=last_rank).fillna(0).astype(int)  # 0 = never
    rows = []
    for c in sorted(clusters.unique()):
        members = clusters.index[clusters == c]
        counts = cat.loc[members].value_counts()
        counts = counts.sort_index().iloc[np.argsort(-counts.sort_index().to_numpy(), kind="stable")]
        mode = int(counts.index[0])
        if mode == 0:
            name = f"No {label}"
        elif mode >= last_rank:
            name = f"{label} {_ordinal(last_rank)}+"
        else:
            name = f"{label} {_ordinal(mode)}"
        rows.append({"cluster": int(c), "n_patients": int(len(members)), f"{organ}_rank_mode": mode,
                     "share_mode": float(counts.iloc[0] / len(members)), "mean_n_organs": float(n.loc[members].mean()),
                     "top_first_organ": "", "group": name, "rule": f"most common {organ} rank",
                     "fit": float(counts.iloc[0] / len(members))})
    d = pd.DataFrame(rows)
    d = _dedupe(d)
    return d
