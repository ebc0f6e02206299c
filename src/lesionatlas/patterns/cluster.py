r"""k-means on encoded progression sequences, the choice of k, and the result :class:`ProgressionPatterns`.

For each k in 1..``k_max`` scikit-learn's :class:`~sklearn.cluster.KMeans` is fitted (``random_state`` =
the seed, ``n_init`` = 10 by default) and scored by

- **inertia** (within-cluster sum of squares, RSS) and its *knee* (:func:`knee_point`: the point of the
  normalised curve farthest from the chord between its ends - Kneedle's difference curve; the paper's
  "elbow");
- **silhouette** (k >= 2; on a seeded sample of at most ``silhouette_sample`` patients at large n);
- **AIC / BIC** of k-means read as a hard-assignment mixture of spherical Gaussians with one shared
  variance (:func:`kmeans_information_criteria`);
- **survival separation**: the log-rank chi-square of OS across the k clusters (lifelines
  ``multivariate_logrank_test``) with its degrees of freedom and :math:`\log_{10} p` (when the patients
  table has ``os_days``/``os_event``).

The default rule, ``elbow_survival``, formalises what the paper did ("K = 4, 5 and 6 showed similar
performance ... k = 5 showed the finest separation of patient survival"): the candidates are the knee of
the inertia curve and the next ``ELBOW_WINDOW`` (3) values of k; among them the k whose clusters
separate OS best (smallest log-rank :math:`\log_{10} p`, which charges for the extra degrees of freedom)
is chosen; without OS data, the knee. The knee is the one geometric criterion that neither keeps
improving with k on these discrete data (BIC, AIC and silhouette all favour the largest k tried once
clusters become sets of identical sequences) nor stops at the coarsest split. Note that choosing k by
survival uses the outcome that the groups are later compared on: the log-rank p-value of the chosen
grouping is optimistic. ``rule`` picks another criterion (``knee`` alone avoids this); ``k=5`` forces the
paper's number.
"""
from __future__ import annotations

import math

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, ExclusionWarning
from .encode import SequenceEncoding, order_sequences, resolve_encoding
from .naming import NO_PROGRESSION, describe_clusters, name_by_organ_rank, name_clusters

Rule = Literal["elbow_survival", "knee", "silhouette", "bic", "aic", "logrank"]
RULES: tuple[str, ...] = ("elbow_survival", "knee", "silhouette", "bic", "aic", "logrank")
ELBOW_WINDOW = 3  # elbow_survival looks at k = knee .. knee + 3
SELECTION_COLUMNS = ("k", "inertia", "silhouette", "aic", "bic", "logrank_chi2", "logrank_df", "logrank_log10_p")
_STAGE = 5  # stream id of this stage (STYLE section 6)


# ----------------------------------------------------------------------------------------- criteria
def knee_point(x: Any, y: Any) -> float:
    r"""The knee of a decreasing curve: the point farthest from the chord joining its first and last points.

    Both axes are scaled to [0, 1] first, so the answer does not depend on units (Satopää et al. 2011,
    "Kneedle": on the normalised curve the distance to the chord is their difference curve up to a
    constant factor).

    .. math:: \hat x = \arg\max_i \; \big| \tilde y_i - (1 - \tilde x_i) \big|, \qquad
              \tilde x = \frac{x - x_1}{x_n - x_1}, \; \tilde y = \frac{y - y_n}{y_1 - y_n}

    Returns ``x[0]`` when the curve has fewer than 3 points or is flat.

    Examples
    --------
    >>> knee_point([1, 2, 3, 4, 5, 6], [100, 40, 20, 15, 12, 10])
    3.0
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 3 or x[-1] == x[0] or y[0] == y[-1]:
        return float(x[0])
    xt = (x - x[0]) / (x[-1] - x[0])
    yt = (y - y[-1]) / (y[0] - y[-1])
    dist = yt - (1.0 - xt)  # below the chord is negative for a convex decreasing curve
    return float(x[int(np.argmax(np.abs(dist)))])


def kmeans_information_criteria(rss: float, n: int, d: int, k: int) -> tuple[float, float]:
    r"""AIC and BIC of a k-means solution.

    k-means is read as the maximum of a hard-assignment mixture of :math:`k` spherical Gaussians in
    :math:`d` dimensions with one shared variance :math:`\sigma^2`; at its maximum
    :math:`\hat\sigma^2 = \mathrm{RSS}/(nd)` and

    .. math::
        -2\log\hat L = nd\,\log(2\pi\,\mathrm{RSS}/(nd)) + nd, \qquad p = kd + 1,

        \mathrm{AIC} = -2\log\hat L + 2p, \qquad \mathrm{BIC} = -2\log\hat L + p\log n.

    Up to terms constant in k this is :math:`\mathrm{BIC} = nd\log(\mathrm{RSS}/(nd)) + kd\log n`
    (e.g. Pelleg & Moore 2000, X-means; Hastie, Tibshirani & Friedman, sect. 7.7). An RSS of 0 gives
    ``-inf``.

    Examples
    --------
    >>> aic, bic = kmeans_information_criteria(rss=8.0, n=4, d=2, k=1)
    >>> round(aic, 4), round(bic, 4)
    (28.703, 26.8619)
    """
    nd = float(n) * float(d)
    if rss <= 0:
        return -np.inf, -np.inf
    m2ll = nd * np.log(2.0 * np.pi * rss / nd) + nd
    p = k * d + 1
    return float(m2ll + 2.0 * p), float(m2ll + p * np.log(n))


def _logrank(durations: np.ndarray, events: np.ndarray, labels: np.ndarray) -> tuple[float, int, float]:
    from lifelines.statistics import multivariate_logrank_test
    from scipy.stats import chi2

    k = len(np.unique(labels))
    if k < 2:
        return np.nan, 0, np.nan
    res = multivariate_logrank_test(durations, labels, events)
    stat = float(res.test_statistic)
    return stat, k - 1, float(chi2.logsf(stat, k - 1) / np.log(10.0))


def choose_k(selection: pd.DataFrame, rule: str = "knee") -> int:
    """The k a criterion picks from a selection table (see the module notes); ties go to the smaller k."""
    if rule not in RULES:
        raise ConfigError(f"rule = {rule!r}; allowed: {', '.join(RULES)}")
    s = selection.sort_values("k")
    knee = int(knee_point(s["k"], s["inertia"]))
    if rule == "knee":
        return knee
    if rule == "elbow_survival":
        window = s[(s["k"] >= knee) & (s["k"] <= knee + ELBOW_WINDOW)]
        lp = window["logrank_log10_p"].to_numpy(dtype=float)
        if not np.isfinite(lp).any():
            return knee
        ok = np.isfinite(lp)
        return int(window["k"].to_numpy()[ok][np.argmin(lp[ok])])
    col, best = {"silhouette": ("silhouette", "max"), "bic": ("bic", "min"), "aic": ("aic", "min"),
                 "logrank": ("logrank_log10_p", "min")}[rule]
    v = s[col].to_numpy(dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        raise DataError(f"choose_k: criterion {rule!r} is not available (no finite {col}); "
                        "use rule='knee' or give os_days/os_event for 'logrank'", code="no-criterion")
    idx = np.where(ok)[0]
    pick = idx[np.argmax(v[ok])] if best == "max" else idx[np.argmin(v[ok])]
    return int(s["k"].iloc[pick])


# ----------------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class ProgressionPatterns:
    """Patients grouped by the order in which their organs progress (Zhou et al. 2024, Fig. 4).

    Attributes
    ----------
    assignments : DataFrame
        ``patient_id, cluster, group, n_progressed_organs, first_organs``; patients without a progressing
        organ have ``cluster = -1`` and group ``No-Progression`` (they are not clustered).
    selection : DataFrame
        ``k, inertia, silhouette, aic, bic, logrank_chi2, logrank_df, logrank_log10_p``, one row per k.
    chosen_k : int
        The k used (forced, or picked by ``rule``).
    rule : str
        ``forced`` or the criterion that picked ``chosen_k``.
    encoding : dict
        The encoding's ``name`` and its parameters.
    centroids : DataFrame
        ``cluster, group`` + one column per feature (the k-means centres, in feature units).
    naming : DataFrame
        Per cluster what its members share and the rule that named it (:mod:`.naming`).
    heatmap : DataFrame
        ``group, position, organ, n_patients``: how many patients of a group had ``organ`` progress at
        ``position`` (1 = first).
    intervals : DataFrame
        ``patient_id, group, step, step_index, days``: the day of the 1st progression (``1st``) and the days
        between successive progressions (``2nd-1st``, ...; organs progressing the same day are one step).
    features : DataFrame
        The encoded matrix (index ``patient_id``) that k-means saw.
    meta : dict
        ``seed, k_max, n_init, n_clustered, n_no_progression, choices`` (the k each rule picks), versions.
    """

    assignments: pd.DataFrame
    selection: pd.DataFrame
    chosen_k: int
    rule: str
    encoding: dict[str, Any]
    centroids: pd.DataFrame
    naming: pd.DataFrame
    heatmap: pd.DataFrame
    intervals: pd.DataFrame
    features: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    _TABLES = ("assignments", "selection", "centroids", "naming", "heatmap", "intervals")

    @property
    def groups(self) -> list[str]:
        """Group names of the clusters, largest first."""
        return list(self.naming.sort_values(["n_patients", "cluster"], ascending=[False, True])["group"])

    def group_of(self, patient_id: str) -> str:
        row = self.assignments.loc[self.assignments["patient_id"] == str(patient_id), "group"]
        if row.empty:
            raise KeyError(f"patient {patient_id!r} is not in the assignments")
        return str(row.iloc[0])

    def summary(self) -> pd.DataFrame:
        """Per group: ``group, cluster, n_patients, share_mono, share_hetero, mean_n_organs,
        top_first_organ, top_first_share, rule`` (No-Progression last, cluster -1)."""
        cols = ["group", "cluster", "n_patients", "share_mono", "share_hetero", "mean_n_organs",
                "top_first_organ", "top_first_share", "rule"]
        out = self.naming.reindex(columns=cols).sort_values("cluster").reset_index(drop=True)
        n_none = int(self.meta.get("n_no_progression", 0))
        if n_none:
            none = pd.DataFrame([{"group": NO_PROGRESSION, "cluster": -1, "n_patients": n_none, "share_mono": 0.0,
                                  "share_hetero": 0.0, "mean_n_organs": 0.0, "top_first_organ": "",
                                  "top_first_share": 0.0, "rule": "no progressing organ"}])
            out = pd.concat([out, none], ignore_index=True)
        return out

    def __repr__(self) -> str:
        sizes = ", ".join(f"{g} {n}" for g, n in zip(self.naming["group"], self.naming["n_patients"]))
        return (f"ProgressionPatterns(k={self.chosen_k} ({self.rule}), encoding={self.encoding.get('name')}; "
                f"{sizes}; {self.meta.get('n_no_progression', 0)} without progression)")

    def _repr_html_(self) -> str:
        return f"<p>{self!r}</p>" + self.summary().to_html(index=False)

    # ------------------------------------------------------------------ plots
    def plot_selection(self, ax: Any = None) -> Any:
        """Inertia, silhouette, BIC/AIC and log-rank chi-square against k (normalised to [0, 1]), chosen k marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        s = self.selection.sort_values("k")
        for col, style in (("inertia", "o-"), ("silhouette", "s-"), ("bic", "^-"), ("aic", "v-"),
                           ("logrank_chi2", "d-")):
            v = s[col].to_numpy(dtype=float)
            ok = np.isfinite(v)
            if ok.sum() < 1:
                continue
            lo, hi = np.nanmin(v[ok]), np.nanmax(v[ok])
            scaled = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
            ax.plot(s["k"][ok], scaled[ok], style, ms=4, lw=1, label=col)
        ax.axvline(self.chosen_k, color="0.3", ls="--", lw=0.8)
        ax.set_xlabel("k")
        ax.set_ylabel("criterion (scaled to [0, 1])")
        ax.set_title(f"choice of k: {self.chosen_k} ({self.rule})")
        ax.legend(fontsize=7, frameon=False)
        return ax

    def plot_heatmap(self, ax: Any = None, *, max_positions: int | None = None) -> Any:
        """Sequences per group: rows = group x organ, columns = progression order, colour log10(n + 1)."""
        import matplotlib.pyplot as plt

        from .naming import organ_label

        h = self.heatmap
        if max_positions is not None:
            h = h[h["position"] <= max_positions]
        groups = self.groups
        organs = sorted(h["organ"].unique(), key=lambda o: -h.loc[h["organ"] == o, "n_patients"].sum())
        positions = list(range(1, int(h["position"].max()) + 1)) if len(h) else [1]
        index = pd.MultiIndex.from_product([groups, organs], names=["group", "organ"])
        mat = (h.pivot_table(index=["group", "organ"], columns="position", values="n_patients", aggfunc="sum")
               .reindex(index=index, columns=positions).fillna(0.0))
        if ax is None:
            _, ax = plt.subplots(figsize=(1.0 + 0.45 * len(positions), 0.16 * len(index) + 1.0))
        im = ax.imshow(np.log10(mat.to_numpy() + 1.0), aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(len(positions)), [f"{p}" for p in positions])
        ax.set_xlabel("progression order")
        ax.set_yticks(range(len(index)), [organ_label(o) for _, o in index], fontsize=6)
        for i, g in enumerate(groups):
            if i:
                ax.axhline(i * len(organs) - 0.5, color="white", lw=1.5)
            ax.text(len(positions) - 0.4, (i + 0.5) * len(organs) - 0.5, g, va="center", ha="left", fontsize=8)
        ax.figure.colorbar(im, ax=ax, label="log10(n + 1)", pad=0.25)
        return ax

    def plot_intervals(self, ax: Any = None, *, max_steps: int = 4) -> Any:
        """Box plots (whiskers at the 10th and 90th percentiles) of the days to the 1st progression and
        between successive progressions, by group."""
        import matplotlib.pyplot as plt

        t = self.intervals[self.intervals["step_index"] <= max_steps]
        groups = self.groups
        steps = sorted(t["step_index"].unique())
        if ax is None:
            _, ax = plt.subplots(figsize=(1.2 + 1.1 * len(steps) * max(len(groups), 1) / 3, 4))
        width = 0.8 / max(len(groups), 1)
        cmap = plt.get_cmap("tab10")
        for gi, g in enumerate(groups):
            data = [t.loc[(t["group"] == g) & (t["step_index"] == s), "days"].to_numpy() for s in steps]
            pos = [si + (gi - (len(groups) - 1) / 2) * width for si in range(len(steps))]
            keep = [i for i, d in enumerate(data) if len(d)]
            if not keep:
                continue
            bp = ax.boxplot([data[i] for i in keep], positions=[pos[i] for i in keep], widths=width * 0.9,
                            whis=(10, 90), showfliers=False, patch_artist=True)
            for box in bp["boxes"]:
                box.set_facecolor(cmap(gi % 10))
                box.set_alpha(0.7)
            ax.plot([], [], "s", color=cmap(gi % 10), label=g)
        labels = t.drop_duplicates("step_index").set_index("step_index")["step"]
        ax.set_xticks(range(len(steps)), [labels.get(s, str(s)) for s in steps])
        ax.set_ylabel("days")
        ax.legend(fontsize=7, frameon=False)
        return ax

    # ------------------------------------------------------------------ files
    def to_dir(self, path: str | Path) -> Path:
        """Write the tables (Parquet + CSV), the features (Parquet) and ``meta.json``, atomically."""
        from ..io import write_result_dir, write_table

        return write_result_dir(
            path, {name: getattr(self, name) for name in self._TABLES},
            {"chosen_k": self.chosen_k, "rule": self.rule, "encoding": self.encoding, **self.meta},
            extra=lambda tmp: write_table(self.features.reset_index(), tmp, "features", csv=False),
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> ProgressionPatterns:
        """Read what :meth:`to_dir` wrote."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in cls._TABLES}
        features = pd.read_parquet(path / "features.parquet").set_index("patient_id")
        chosen_k, rule, encoding = meta.pop("chosen_k"), meta.pop("rule"), meta.pop("encoding")
        return cls(chosen_k=int(chosen_k), rule=str(rule), encoding=encoding, features=features, meta=meta, **tables)

    def equals(self, other: ProgressionPatterns) -> bool:
        """Same tables (values and dtypes), k, rule and encoding."""
        return (self.chosen_k == other.chosen_k and self.rule == other.rule and self.encoding == other.encoding
                and all(getattr(self, n).equals(getattr(other, n)) for n in self._TABLES)
                and self.features.equals(other.features))


# ----------------------------------------------------------------------------------------- fitting
def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int) -> Any:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)


def _canonical_labels(labels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel clusters 0.. by decreasing size (ties: lexicographic centre), independent of k-means' order."""
    k = centers.shape[0]
    sizes = np.bincount(labels, minlength=k)
    keys = [tuple(-np.round(centers[c], 12)) for c in range(k)]
    order = sorted(range(k), key=lambda c: (-sizes[c], keys[c]))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return remap[labels], centers[order]


def selection_table(x: np.ndarray, k_values: list[int], *, seed: int = 0, n_init: int = 10,
                    durations: np.ndarray | None = None, events: np.ndarray | None = None,
                    silhouette_sample: int = 2000) -> tuple[pd.DataFrame, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Fit k-means for each k; return the criteria table and ``{k: (labels, centres)}`` (canonical labels)."""
    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    sample = None if n <= silhouette_sample else int(silhouette_sample)
    # One OpenMP/BLAS thread: these fits are small (thousands x tens), and on a busy machine scikit-learn's
    # OpenMP threads spin-wait on each other - measured 0.6-1.1 s per KMeans fit with 2 threads on a loaded
    # 2-core machine against 0.02-0.03 s with one (1,782 patients, n_init = 10).
    with threadpool_limits(1):
        return _selection_loop(x, k_values, seed, n_init, durations, events, sample)


def _selection_loop(x: np.ndarray, k_values: list[int], seed: int, n_init: int, durations: np.ndarray | None,
                    events: np.ndarray | None, sample: int | None
                    ) -> tuple[pd.DataFrame, dict[int, tuple[np.ndarray, np.ndarray]]]:
    from sklearn.metrics import silhouette_score

    n, d = x.shape
    rows, fits = [], {}
    for k in k_values:
        km = _kmeans(x, k, seed, n_init)
        labels, centers = _canonical_labels(km.labels_, km.cluster_centers_)
        fits[k] = (labels, centers)
        # exactly rounded sum of squares (math.fsum): the same bits whatever the summation order, where
        # km.inertia_ can differ in its last digit between processes (threaded, vectorised sums)
        rss = math.fsum(np.square(x - centers[labels]).ravel().tolist())
        aic, bic = kmeans_information_criteria(rss, n, d, k)
        sil = np.nan
        if 2 <= len(np.unique(labels)) <= n - 1:
            sil = float(silhouette_score(x, labels, sample_size=sample, random_state=seed))
        chi2, df, lp = (np.nan, 0, np.nan)
        if durations is not None and events is not None:
            chi2, df, lp = _logrank(durations, events, labels)
        rows.append({"k": k, "inertia": rss, "silhouette": sil, "aic": aic, "bic": bic, "logrank_chi2": chi2,
                     "logrank_df": df, "logrank_log10_p": lp})
    table = pd.DataFrame(rows, columns=list(SELECTION_COLUMNS))
    table["k"] = table["k"].astype("int64")
    table["logrank_df"] = table["logrank_df"].astype("int64")
    return table, fits


def _intervals(ordered: pd.DataFrame, group: pd.Series) -> pd.DataFrame:
    days = ordered.dropna(subset=["day"]).drop_duplicates(["patient_id", "rank"]).sort_values(["patient_id", "rank"])
    if days.empty:
        return pd.DataFrame({"patient_id": pd.Series(dtype=str), "group": pd.Series(dtype=str),
                             "step": pd.Series(dtype=str), "step_index": pd.Series(dtype="int64"),
                             "days": pd.Series(dtype=float)})
    d = days["day"].astype(float).to_numpy()
    pid = days["patient_id"].to_numpy()
    step = days.groupby("patient_id").cumcount().to_numpy() + 1
    prev = np.r_[np.nan, d[:-1]]
    gap = np.where(step == 1, d, d - prev)
    ordn = {1: "1st", 2: "2nd", 3: "3rd"}
    name = lambda s: ordn.get(s, f"{s}th")  # noqa: E731
    labels = [name(1) if s == 1 else f"{name(s)}-{name(s - 1)}" for s in step]
    return pd.DataFrame({"patient_id": pid, "group": group.reindex(pid).to_numpy(), "step": labels,
                         "step_index": step.astype("int64"), "days": gap})


def _prepare_patients(patients: pd.DataFrame | None, ids: np.ndarray) -> pd.DataFrame | None:
    if patients is None:
        return None
    if "patient_id" not in patients.columns:
        raise DataError("patients: column patient_id missing", code="missing-column")
    p = patients.copy()
    p["patient_id"] = p["patient_id"].astype(str)
    if p["patient_id"].duplicated().any():
        raise DataError(f"patients: patient_id repeated ({', '.join(p.loc[p['patient_id'].duplicated(), 'patient_id'][:5])})",
                        code="duplicate")
    unknown = sorted(set(ids) - set(p["patient_id"]))
    if unknown:
        raise DataError(f"sequences: {len(unknown)} patient(s) not in the patients table (first: "
                        f"{', '.join(unknown[:5])}); give every sequenced patient a row", code="unknown-id")
    return p


def cluster_sequences(
    sequences: pd.DataFrame,
    patients: pd.DataFrame | None = None,
    *,
    encoding: str | SequenceEncoding = "rank",
    k: int | None = None,
    k_max: int = 15,
    rule: Rule = "elbow_survival",
    seed: int = 0,
    n_init: int = 10,
    silhouette_sample: int = 2000,
    naming: Literal["content", "organ_rank"] = "content",
    naming_organ: str = "liver",
) -> ProgressionPatterns:
    """Cluster patients by their organ progression sequence and name the groups.

    Parameters
    ----------
    sequences : DataFrame
        ``patient_id, rank, organ, day``: one row per (patient, progressing organ).
    patients : DataFrame, optional
        One row per patient: ``patient_id`` and, for the survival criterion, ``os_days``/``os_event``.
        Patients here without a sequence are reported as ``No-Progression`` (cluster -1) and counted; they
        are not clustered (they have no sequence to encode). Without it only sequenced patients appear.
    encoding : {"rank", "position_onehot"} or SequenceEncoding
        How sequences become features (:mod:`lesionatlas.patterns.encode`).
    k : int, optional
        Force the number of clusters (``k=5`` as the paper); the criteria are still computed for 1..k_max.
    k_max : int
        Largest k tried (at most the number of distinct encoded sequences).
    rule : {"elbow_survival", "knee", "silhouette", "bic", "aic", "logrank"}
        Criterion that picks k when ``k`` is None (module notes).
    seed : int
        ``random_state`` of k-means and of the silhouette sample.
    naming : {"content", "organ_rank"}
        ``content``: Mono-Organ / Hetero-Organ / <Organ>-First / Other-First (:func:`.naming.name_clusters`);
        ``organ_rank``: by the rank of ``naming_organ`` (for the Hetero-Organ sub-clusters).

    Returns
    -------
    ProgressionPatterns

    Raises
    ------
    DataError
        Bad sequence table, sequenced patients missing from ``patients``, fewer than 2 sequenced patients.
    ConfigError
        ``k``, ``k_max``, ``rule``, ``n_init`` or ``encoding`` not allowed.

    References
    ----------
    Zhou J. et al., Nature Communications 15, 2024: k-means on encoded sequences, k = 5 (Fig. 4a).
    """
    if rule not in RULES:
        raise ConfigError(f"rule = {rule!r}; allowed: {', '.join(RULES)}")
    if naming not in ("content", "organ_rank"):
        raise ConfigError(f"naming = {naming!r}; allowed: 'content', 'organ_rank'")
    if int(n_init) < 1:
        raise ConfigError(f"n_init = {n_init!r}; must be >= 1 (10 or more recommended)")
    if int(k_max) < 1:
        raise ConfigError(f"k_max = {k_max!r}; must be >= 1")
    enc = resolve_encoding(encoding)
    ordered = order_sequences(sequences)
    ids = ordered["patient_id"].unique()
    pats = _prepare_patients(patients, ids)
    from .encode import encode_sequences

    features = encode_sequences(ordered[["patient_id", "rank", "organ", "day"]], enc)
    n = len(features)
    if n < 2:
        raise DataError(f"sequences: {n} patient(s) with a progressing organ; clustering needs at least 2",
                        code="too-few")
    x = features.to_numpy(dtype=float)
    n_distinct = len(np.unique(x, axis=0))
    if k is not None and not (1 <= int(k) <= n_distinct):
        raise ConfigError(f"k = {k!r}; must be between 1 and {n_distinct} (distinct encoded sequences)")
    k_top = min(int(k_max), n_distinct)
    k_values = sorted(set(range(1, k_top + 1)) | ({int(k)} if k is not None else set()))
    durations = events = None
    if pats is not None and {"os_days", "os_event"} <= set(pats.columns):
        surv = pats.set_index("patient_id").reindex(features.index)
        dur = pd.to_numeric(surv["os_days"], errors="coerce").to_numpy(dtype=float)
        ev = pd.to_numeric(surv["os_event"].astype("Float64"), errors="coerce").to_numpy(dtype=float)
        if np.isfinite(dur).all() and np.isfinite(ev).all():
            durations, events = dur, ev > 0
        else:
            warnings.warn(f"patients: {int((~np.isfinite(dur) | ~np.isfinite(ev)).sum())} sequenced patient(s) lack "
                          "os_days/os_event; the log-rank criterion is left out", ExclusionWarning, stacklevel=2)
    selection, fits = selection_table(x, k_values, seed=seed, n_init=n_init, durations=durations, events=events,
                                      silhouette_sample=silhouette_sample)
    choices: dict[str, int | None] = {}
    for r in RULES:
        try:
            choices[r] = choose_k(selection[selection["k"] <= k_top], r)
        except DataError:
            choices[r] = None
    if k is not None:
        chosen, rule_used = int(k), "forced"
    else:
        if choices[rule] is None:
            raise DataError(f"rule {rule!r} cannot be evaluated on these data; use rule='knee'", code="no-criterion")
        chosen, rule_used = int(choices[rule]), rule  # type: ignore[arg-type]
    labels, centers = fits[chosen]
    clusters = pd.Series(labels, index=features.index, name="cluster")
    if naming == "content":
        named = name_clusters(describe_clusters(ordered, clusters))
    else:
        named = name_by_organ_rank(ordered, clusters, organ=naming_organ)
    group_of = dict(zip(named["cluster"], named["group"]))
    group = clusters.map(group_of)
    n_org = ordered.groupby("patient_id").size()
    first = ordered[ordered["rank"] == 1].groupby("patient_id")["organ"].agg("+".join)
    all_ids = features.index.to_numpy() if pats is None else np.array(sorted(pats["patient_id"]))
    assignments = pd.DataFrame({"patient_id": all_ids})
    assignments["cluster"] = clusters.reindex(all_ids).fillna(-1).astype("int64").to_numpy()
    assignments["group"] = group.reindex(all_ids).fillna(NO_PROGRESSION).astype(str).to_numpy()
    assignments["n_progressed_organs"] = n_org.reindex(all_ids).fillna(0).astype("int64").to_numpy()
    assignments["first_organs"] = first.reindex(all_ids).fillna("").astype(str).to_numpy()
    centroids = pd.DataFrame(centers, columns=features.columns)
    centroids.insert(0, "cluster", np.arange(chosen, dtype=np.int64))
    centroids.insert(1, "group", centroids["cluster"].map(group_of))
    heat = ordered.assign(group=group.reindex(ordered["patient_id"]).to_numpy())
    heatmap = (heat.groupby(["group", "position", "organ"]).size().rename("n_patients").reset_index()
               .sort_values(["group", "position", "organ"]).reset_index(drop=True))
    heatmap["position"] = heatmap["position"].astype("int64")
    heatmap["n_patients"] = heatmap["n_patients"].astype("int64")
    intervals = _intervals(ordered, group)
    n_none = int((assignments["cluster"] == -1).sum())
    import sklearn

    meta = {"seed": int(seed), "k_max": int(k_max), "n_init": int(n_init), "n_clustered": int(n),
            "n_no_progression": n_none, "n_distinct_sequences": int(n_distinct), "choices": choices,
            "naming": naming, "naming_organ": naming_organ if naming == "organ_rank" else None,
            "silhouette_sample": int(silhouette_sample), "versions": {"scikit-learn": sklearn.__version__}}
    enc_dict = {"name": enc.name, **{f.name: getattr(enc, f.name) for f in dataclasses.fields(enc)  # type: ignore[arg-type]
                                     if f.name != "name"}} if dataclasses.is_dataclass(enc) else {"name": enc.name}
    enc_dict = json.loads(json.dumps(enc_dict, default=list))
    return ProgressionPatterns(assignments=assignments, selection=selection, chosen_k=chosen, rule=rule_used,
                               encoding=enc_dict, centroids=centroids, naming=named, heatmap=heatmap,
                               intervals=intervals, features=features, meta=meta)


def subcluster_group(
    patterns: ProgressionPatterns,
    sequences: pd.DataFrame,
    patients: pd.DataFrame | None = None,
    *,
    group: str = "Hetero-Organ",
    organ: str = "liver",
    k: int | None = 4,
    k_max: int = 10,
    rule: Rule = "knee",
    seed: int = 0,
    encoding: str | SequenceEncoding | None = None,
) -> ProgressionPatterns:
    """Cluster the patients of one group again and name the sub-groups by the rank of ``organ``.

    The paper split its Hetero-Organ patients into 4 sub-groups that differed by when the liver
    progressed (Supplementary Fig. 9). Defaults reproduce that: ``k=4``, names ``Liver 1st``,
    ``Liver 2nd``, ``Liver 3rd+``, ``No Liver``; ``k=None`` picks k by ``rule``. The encoding defaults to the
    parent's (with its default parameters when it was a built-in name).
    """
    ids = set(patterns.assignments.loc[patterns.assignments["group"] == group, "patient_id"])
    if not ids:
        raise DataError(f"group {group!r} has no patients; groups are {', '.join(patterns.groups)}", code="empty-group")
    seq = sequences[sequences["patient_id"].astype(str).isin(ids)]
    pats = None if patients is None else patients[patients["patient_id"].astype(str).isin(ids)]
    if encoding is None:
        name = patterns.encoding.get("name", "rank")
        params = {key: v for key, v in patterns.encoding.items() if key != "name"}
        from .encode import PositionOneHot, RankEncoding

        cls = {"rank": RankEncoding, "position_onehot": PositionOneHot}.get(name)
        if cls is None:
            raise ConfigError(f"encoding {name!r} of the parent is not built in; pass encoding=")
        if "count_thresholds" in params:
            params["count_thresholds"] = tuple(params["count_thresholds"])
        encoding = cls(**params)
    return cluster_sequences(seq, pats, encoding=encoding, k=k, k_max=k_max, rule=rule, seed=seed,
                             naming="organ_rank", naming_organ=organ)
