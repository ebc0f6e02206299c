"""Organ phenotypes: each organ placed by its response and progression hazard ratios (Zhou et al. Fig. 3c,d).

An organ whose lesions respond faster than the reference (response HR > 1) has a *high* response; one
whose lesions progress faster (progression HR > 1) has a *high* progression. The four phenotypes are
``high-high`` (e.g. liver), ``high-low`` (lung, lymph nodes), ``low-high`` (bone, brain/CNS) and
``low-low``. The threshold is HR = 1 (the reference organ) by default, or the median HR across organs
(on the log scale); organs whose 95% CI crosses the threshold on either axis are flagged ``uncertain``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from .data.organs import ORGAN_LABELS
from .errors import ConfigError, DataError

PHENOTYPES: tuple[str, ...] = ("high-high", "high-low", "low-high", "low-low")
PHENOTYPE_COLORS: dict[str, str] = {
    "high-high": "#c0392b",
    "high-low": "#2e86c1",
    "low-high": "#8e44ad",
    "low-low": "#7f8c8d",
}
INPUT_COLUMNS = ("organ", "response_hr", "response_ci_lower", "response_ci_upper",
                 "progression_hr", "progression_ci_lower", "progression_ci_upper")

#: Where each organ sits on the schematic body of :func:`plot_anatomy` (x, y in axis units, body
#: centred on x = 0.5, head at the top). Drawn, not traced from any image.
ORGAN_POSITIONS: dict[str, tuple[float, float]] = {
    "brain_cns": (0.50, 0.93),
    "head_neck": (0.50, 0.82),
    "lymph_node_distal": (0.40, 0.76),
    "lung": (0.40, 0.66),
    "pleura": (0.61, 0.66),
    "liver": (0.42, 0.55),
    "spleen": (0.60, 0.55),
    "adrenal": (0.57, 0.50),
    "pancreas": (0.50, 0.50),
    "kidney": (0.62, 0.46),
    "abdominal": (0.50, 0.44),
    "gi": (0.43, 0.40),
    "peritoneum": (0.57, 0.40),
    "lymph_node_regional": (0.50, 0.36),
    "gr": (0.50, 0.30),
    "muscle": (0.33, 0.30),
    "bone": (0.58, 0.14),
    "skin": (0.27, 0.50),
    "other": (0.84, 0.92),
}


@dataclass(frozen=True, eq=False)
class OrganPhenotypes:
    """Organs classified by response and progression hazard ratios.

    Attributes
    ----------
    table : DataFrame
        ``organ, response_hr, response_ci_lower, response_ci_upper, progression_hr, progression_ci_lower,
        progression_ci_upper, response_level, progression_level, phenotype, uncertain``.
    threshold : str
        ``reference`` (HR = 1) or ``median``.
    response_threshold, progression_threshold : float
        The HR values used as thresholds.
    """

    table: pd.DataFrame
    threshold: str
    response_threshold: float
    progression_threshold: float
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Organs per phenotype: ``phenotype, n_organs, organs, n_uncertain``."""
        rows = []
        for p in PHENOTYPES:
            sub = self.table[self.table["phenotype"] == p]
            rows.append({"phenotype": p, "n_organs": len(sub), "organs": ", ".join(sub["organ"]),
                         "n_uncertain": int(sub["uncertain"].sum())})
        return pd.DataFrame(rows)

    def phenotype_of(self, organ: str) -> str:
        row = self.table.loc[self.table["organ"] == organ, "phenotype"]
        if row.empty:
            raise KeyError(f"organ {organ!r} not classified; organs are {', '.join(self.table['organ'])}")
        return str(row.iloc[0])

    def __repr__(self) -> str:
        counts = self.table["phenotype"].value_counts()
        parts = ", ".join(f"{p}: {int(counts.get(p, 0))}" for p in PHENOTYPES)
        return f"OrganPhenotypes({len(self.table)} organs; {parts}; threshold {self.threshold})"

    def plot_quadrant(self, ax: Any = None) -> Any:
        """Response HR (x) against progression HR (y), log scales, CIs as bars, thresholds as lines."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 5))
        t = self.table
        for _, r in t.iterrows():
            color = PHENOTYPE_COLORS[r["phenotype"]]
            ax.errorbar(r["response_hr"], r["progression_hr"],
                        xerr=[[r["response_hr"] - r["response_ci_lower"]], [r["response_ci_upper"] - r["response_hr"]]],
                        yerr=[[r["progression_hr"] - r["progression_ci_lower"]],
                              [r["progression_ci_upper"] - r["progression_hr"]]],
                        fmt="o", color=color, alpha=0.5 if r["uncertain"] else 1.0, ms=6, lw=0.8, capsize=0)
            ax.annotate(ORGAN_LABELS.get(r["organ"], r["organ"]), (r["response_hr"], r["progression_hr"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(0.25, 0.5, 1.0, 2.0, 4.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.axvline(self.response_threshold, color="0.5", lw=0.8, ls="--")
        ax.axhline(self.progression_threshold, color="0.5", lw=0.8, ls="--")
        ax.set_xlabel("response hazard ratio")
        ax.set_ylabel("progression hazard ratio")
        for p, (x, y, ha, va) in {"high-high": (0.98, 0.98, "right", "top"), "low-high": (0.02, 0.98, "left", "top"),
                                  "high-low": (0.98, 0.02, "right", "bottom"),
                                  "low-low": (0.02, 0.02, "left", "bottom")}.items():
            ax.text(x, y, p, transform=ax.transAxes, ha=ha, va=va, fontsize=8, color=PHENOTYPE_COLORS[p])
        return ax

    def plot_anatomy(self, ax: Any = None) -> Any:
        """A schematic body with each classified organ's position coloured by its phenotype."""
        return plot_anatomy(dict(zip(self.table["organ"], self.table["phenotype"])),
                            uncertain=set(self.table.loc[self.table["uncertain"], "organ"]), ax=ax)

    def to_dir(self, path: Any) -> Any:
        """Write the table (Parquet + CSV) and ``meta.json`` atomically."""
        from pathlib import Path

        from .io import write_result_dir

        return write_result_dir(Path(path), {"phenotypes": self.table},
                                {"threshold": self.threshold, "response_threshold": self.response_threshold,
                                 "progression_threshold": self.progression_threshold, **self.meta})

    @classmethod
    def from_dir(cls, path: Any) -> OrganPhenotypes:
        import json
        from pathlib import Path

        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        table = pd.read_parquet(path / "phenotypes.parquet")
        return cls(table=table, threshold=meta.pop("threshold"), response_threshold=meta.pop("response_threshold"),
                   progression_threshold=meta.pop("progression_threshold"), meta=meta)


def classify_organs(
    hazard_ratios: pd.DataFrame,
    threshold: Literal["reference", "median"] = "reference",
    *,
    reference: str | None = None,
) -> OrganPhenotypes:
    """Classify organs into the four phenotypes by their response and progression hazard ratios.

    Parameters
    ----------
    hazard_ratios : DataFrame
        One row per organ: ``organ, response_hr, response_ci_lower, response_ci_upper, progression_hr,
        progression_ci_lower, progression_ci_upper`` (the reference organ may be included with HR 1 and
        no CI; it is classified ``reference`` and never uncertain).
    threshold : {'reference', 'median'}
        HR = 1 (the reference organ), or the median HR across organs on each axis.
    reference : str, optional
        The reference organ, recorded in the result.

    Returns
    -------
    OrganPhenotypes

    Notes
    -----
    An organ is *high* on an axis when its HR is above the threshold, else *low*. It is ``uncertain``
    when the 95% CI of either HR contains the threshold.
    """
    if threshold not in ("reference", "median"):
        raise ConfigError(f"threshold must be 'reference' or 'median', got {threshold!r}")
    missing = [c for c in INPUT_COLUMNS if c not in hazard_ratios.columns]
    if missing:
        raise DataError(f"hazard ratio table: column(s) {', '.join(missing)} missing", code="missing-column")
    t = hazard_ratios.loc[:, list(INPUT_COLUMNS)].copy()
    for c in INPUT_COLUMNS[1:]:
        t[c] = pd.to_numeric(t[c], errors="coerce").astype(float)
    bad = t[["response_hr", "progression_hr"]].le(0).any(axis=1) | t[["response_hr", "progression_hr"]].isna().any(axis=1)
    if bad.any():
        raise DataError(f"hazard ratio table: organ(s) {', '.join(map(str, t.loc[bad, 'organ']))} have a missing or "
                        "non-positive hazard ratio", code="bad-value")
    if threshold == "median":
        rt = float(np.exp(np.median(np.log(t["response_hr"]))))
        pt = float(np.exp(np.median(np.log(t["progression_hr"]))))
    else:
        rt = pt = 1.0
    t["response_level"] = np.where(t["response_hr"] > rt, "high", "low")
    t["progression_level"] = np.where(t["progression_hr"] > pt, "high", "low")
    t["phenotype"] = t["response_level"] + "-" + t["progression_level"]

    def crosses(lo: pd.Series, hi: pd.Series, at: float) -> pd.Series:
        return (lo <= at) & (hi >= at)

    t["uncertain"] = (crosses(t["response_ci_lower"], t["response_ci_upper"], rt)
                      | crosses(t["progression_ci_lower"], t["progression_ci_upper"], pt)).fillna(False).astype(bool)
    return OrganPhenotypes(table=t.reset_index(drop=True), threshold=threshold, response_threshold=rt,
                           progression_threshold=pt, meta={"reference": reference})


def patient_phenotype_groups(lesions: pd.DataFrame, phenotypes: OrganPhenotypes) -> pd.DataFrame:
    """Per patient: does any lesion sit in a ``low-high`` organ; are all lesions in ``high-low`` organs?

    ``lesions`` needs ``patient_id`` and ``organ``. Returns ``patient_id, any_low_high, only_high_low,
    n_lesions`` (the paper compared OS of these groups with the other patients).
    """
    pheno = dict(zip(phenotypes.table["organ"], phenotypes.table["phenotype"]))
    p = lesions["organ"].map(pheno)
    frame = pd.DataFrame({"patient_id": lesions["patient_id"].to_numpy(), "low_high": (p == "low-high").to_numpy(),
                          "high_low": (p == "high-low").to_numpy()})
    g = frame.groupby("patient_id", sort=True)
    return pd.DataFrame({"any_low_high": g["low_high"].any(), "only_high_low": g["high_low"].all(),
                         "n_lesions": g.size()}).reset_index()


def plot_anatomy(organ_phenotypes: dict[str, str], *, uncertain: set[str] | None = None, ax: Any = None) -> Any:
    """Draw a schematic body outline and a dot per organ coloured by its phenotype."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse, FancyBboxPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 6.5))
    outline = dict(facecolor="#f4efe9", edgecolor="0.45", lw=1.2)
    ax.add_patch(Ellipse((0.5, 0.91), 0.16, 0.13, **outline))  # head
    ax.add_patch(FancyBboxPatch((0.47, 0.80), 0.06, 0.05, boxstyle="round,pad=0.005", **outline))  # neck
    ax.add_patch(FancyBboxPatch((0.33, 0.26), 0.34, 0.55, boxstyle="round,pad=0.03", **outline))  # torso
    for x0, x1 in ((0.33, 0.20), (0.67, 0.80)):  # arms
        ax.plot([x0, x1], [0.76, 0.36], color="0.45", lw=9, solid_capstyle="round", zorder=0, alpha=0.35)
    for x in (0.42, 0.58):  # legs
        ax.plot([x, x], [0.25, 0.02], color="0.45", lw=12, solid_capstyle="round", zorder=0, alpha=0.35)
    uncertain = uncertain or set()
    for organ, phenotype in organ_phenotypes.items():
        if organ not in ORGAN_POSITIONS or phenotype not in PHENOTYPE_COLORS:
            continue
        x, y = ORGAN_POSITIONS[organ]
        ax.scatter([x], [y], s=160, color=PHENOTYPE_COLORS[phenotype], edgecolor="white", lw=1.5, zorder=3,
                   alpha=0.45 if organ in uncertain else 1.0)
        ax.annotate(ORGAN_LABELS.get(organ, organ), (x, y), textcoords="offset points", xytext=(8, -3),
                    fontsize=6.5, zorder=4)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=p, ms=8) for p, c in PHENOTYPE_COLORS.items()]
    ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=False, title="phenotype", title_fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
