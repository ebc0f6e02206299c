"""Report sections: the cohort (Fig. 1), the patient characteristics (Table 1) and the data checks.

:func:`build` returns three sections:

- ``cohort`` — "Figure 1 — Cohort and lesions": key figures, the CONSORT flow of the selection stage
  (Fig. 1a, :func:`plot_consort`), lesion counts by organ for all and target lesions and the number of
  organs involved per patient (Fig. 1b, :func:`plot_organ_counts`), with the same counts as a table.
- ``table1`` — "Table 1 — Patient characteristics": :func:`table_one` on the selected patients, overall
  and by treatment group.
- ``data-checks`` — "Data checks": the problems the validation stage found.

Decisions
---------
- Organs involved per patient are counted on the baseline lesions (target and non-target); new lesions
  appear during treatment and are not part of the baseline disease.
- Percentages in Table 1 are of all patients of the column, unknown values included (as in the paper,
  where "Unknown" is a level of KRAS status and prior radiation).
- Survival times are summarised by the Kaplan–Meier median with its 95% CI, not by the median of the
  observed times (which ignores censoring); follow-up by the reverse Kaplan–Meier median (deaths censored).

References
----------
Zhou J, et al. Mapping lesion-specific response and progression dynamics and inter-organ variability in
metastatic colorectal cancer. Nat Commun 2024 (Fig. 1, Table 1).
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from ...data.organs import ORGAN_GROUPS, ORGAN_LABELS
from ..document import Section, colour, new_figure

#: Baseline lesion kinds (new lesions appear during treatment).
BASELINE_KINDS: Final[tuple[str, ...]] = ("target", "nontarget")

#: Known patient columns: column -> (label, kind); kind is ``categorical``, ``continuous`` or ``survival``.
#: Other columns are described too, after these, with a kind guessed from their values.
VARIABLES: Final[dict[str, tuple[str, str]]] = {
    "age": ("Age, years", "continuous"),
    "sex": ("Sex", "categorical"),
    "race": ("Race", "categorical"),
    "bmi": ("Body mass index, kg/m²", "continuous"),
    "bsa": ("Body surface area, m²", "continuous"),
    "ecog": ("ECOG performance status", "categorical"),
    "tumor_type": ("Tumor type", "categorical"),
    "primary_site": ("Primary tumor site", "categorical"),
    "prior_surgery": ("Prior surgery", "categorical"),
    "prior_radiation": ("Prior radiation", "categorical"),
    "line": ("Line of therapy", "categorical"),
    "kras": ("KRAS status", "categorical"),
    "ras": ("RAS status", "categorical"),
    "treatment": ("Treatment", "categorical"),
    "treatment_group": ("Treatment group", "categorical"),
    "best_response": ("Best overall response", "categorical"),
    "n_organs": ("Metastatic organs per patient", "categorical"),
    "n_lesions": ("Lesions per patient (baseline)", "continuous"),
    "n_target_lesions": ("Target lesions per patient", "continuous"),
    "study_id": ("Study", "categorical"),
    "pfs_days": ("Progression-free survival, days", "survival"),
    "os_days": ("Overall survival, days", "survival"),
}

#: Level spellings shown in Table 1.
LEVEL_LABELS: Final[dict[str, dict[str, str]]] = {
    "sex": {"M": "Male", "F": "Female"},
    "best_response": {"CR": "Complete response", "PR": "Partial response", "SD": "Stable disease",
                      "PD": "Progressive disease", "NE": "Not evaluable"},
    "kras": {"wild-type": "Wild-type", "mutant": "Mutant"},
    "tumor_type": {"colon": "Colon", "rectal": "Rectal"},
    "treatment_group": {"chemo": "Chemotherapy alone", "antibody+chemo": "Antibody + chemotherapy"},
}

#: Level orders where the natural order is not "most frequent first".
LEVEL_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "sex": ("M", "F"),
    "best_response": ("CR", "PR", "SD", "PD", "NE"),
    "kras": ("wild-type", "mutant"),
    "n_organs": ("1", "2", "3", "≥4"),
}

#: Event column of each survival duration column.
_EVENTS: Final[dict[str, str]] = {"pfs_days": "pfs_event", "os_days": "os_event"}
_UNKNOWN: Final[str] = "Unknown"
_SKIP: Final[frozenset[str]] = frozenset({"patient_id", *_EVENTS.values()})


# ============================================================================================ helpers
def _status(run: Any, stage: str) -> tuple[str, str]:
    """``(status, reason)`` of a stage; a stage the run does not know is ``not run``."""
    try:
        record = run[stage]
    except KeyError:
        return "not run", "this run has no such stage"
    status = str(record.status)
    reason = str(getattr(record, "reason", "") or "")
    if not reason:
        reason = {"failed": "the stage failed (see the run's manifest.json)",
                  "not run": "an earlier stage did not finish"}.get(status, f"its status is '{status}'")
    return status, reason


def _load(run: Any, stage: str) -> tuple[Any, str]:
    """The stage's result (or None) and why there is none."""
    status, reason = _status(run, stage)
    if status != "done":
        return None, reason
    result = run.load(stage)
    return result, ("" if result is not None else "its result could not be read")


def organ_label(organ: str) -> str:
    """The organ name as words (``lymph_node_distal`` -> ``Lymph node (distal)``)."""
    return ORGAN_LABELS.get(organ, str(organ).replace("_", " ").capitalize())


def _fmt_int(n: Any) -> str:
    return f"{int(n):,}"


def _fmt_num(x: float) -> str:
    """A summary number: whole numbers without decimals, else none from 100 up, one from 1, two below; inf is NR."""
    if not np.isfinite(x):
        return "NR" if x > 0 else ""
    a = abs(x)
    if float(x).is_integer():
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 1 or a == 0:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _pct(n: int, total: int) -> str:
    return f"{n:,} ({100.0 * n / total:.1f}%)" if total else f"{n:,}"


# ============================================================================================ Table 1
def _kind_of(col: str, values: pd.Series) -> str:
    if col in VARIABLES:
        return VARIABLES[col][1]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "categorical"
    num = pd.to_numeric(values, errors="coerce").dropna()
    integer = bool(len(num)) and bool(np.all(np.mod(num.to_numpy(dtype=float), 1) == 0))
    return "categorical" if integer and num.nunique() <= 6 else "continuous"


def _as_levels(col: str, values: pd.Series) -> pd.Series:
    """Values as level texts (missing stays missing); booleans as Yes/No, integers without decimals."""
    if pd.api.types.is_bool_dtype(values):
        out = values.astype("boolean").map({True: "Yes", False: "No"})
        return out.astype("string")
    if pd.api.types.is_numeric_dtype(values):
        num = pd.to_numeric(values, errors="coerce").astype("Float64")
        text = num.map(lambda v: f"{v:g}" if pd.notna(v) else pd.NA)
        return text.astype("string")
    return values.astype("string")


def _level_order(col: str, levels: pd.Series) -> list[str]:
    seen = levels.dropna()
    counts = seen.value_counts(sort=False)
    if col in LEVEL_ORDER:
        first = [v for v in LEVEL_ORDER[col] if v in counts.index]
        rest = sorted((v for v in counts.index if v not in first), key=lambda v: (-counts[v], str(v)))
        return first + rest
    if set(counts.index) <= {"Yes", "No"}:
        return [v for v in ("Yes", "No") if v in counts.index]
    numeric = pd.to_numeric(pd.Series(list(counts.index), dtype=object), errors="coerce")
    if len(counts) and numeric.notna().all():
        return [v for _, v in sorted(zip(numeric, counts.index))]
    return sorted(counts.index, key=lambda v: (-counts[v], str(v)))


def _categorical_rows(col: str, label: str, values: pd.Series, masks: Sequence[np.ndarray]) -> list[list[str]]:
    levels = _as_levels(col, values)
    names = LEVEL_LABELS.get(col, {})
    rows = []
    missing = levels.isna().to_numpy()
    for level in _level_order(col, levels):
        hit = (levels == level).fillna(False).to_numpy(dtype=bool)
        rows.append([label, names.get(level, level),
                     *(_pct(int(hit[m].sum()), int(m.sum())) for m in masks)])
    if missing.any():
        rows.append([label, _UNKNOWN, *(_pct(int(missing[m].sum()), int(m.sum())) for m in masks)])
    return rows


def _median_iqr(x: np.ndarray) -> str:
    x = x[np.isfinite(x)]
    if not len(x):
        return ""
    q = np.quantile(x, [0.25, 0.5, 0.75])
    if all(float(v).is_integer() for v in q):
        return f"{q[1]:,.0f} ({q[0]:,.0f}–{q[2]:,.0f})"
    # one precision for the three numbers, set by the median's size
    digits = 0 if abs(q[1]) >= 100 else (1 if abs(q[1]) >= 1 else 2)
    return f"{q[1]:,.{digits}f} ({q[0]:,.{digits}f}–{q[2]:,.{digits}f})"


def _mean_sd(x: np.ndarray) -> str:
    x = x[np.isfinite(x)]
    if not len(x):
        return ""
    mean = float(np.mean(x))
    digits = 0 if abs(mean) >= 100 else (1 if abs(mean) >= 1 else 2)
    sd = f"{float(np.std(x, ddof=1)):,.{digits}f}" if len(x) > 1 else "–"
    return f"{mean:,.{digits}f} ({sd})"


def _continuous_rows(label: str, values: pd.Series, masks: Sequence[np.ndarray]) -> list[list[str]]:
    x = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    rows = [[label, "median (IQR)", *(_median_iqr(x[m]) for m in masks)],
            [label, "mean (SD)", *(_mean_sd(x[m]) for m in masks)]]
    missing = ~np.isfinite(x)
    if missing.any():
        rows.append([label, _UNKNOWN, *(_pct(int(missing[m].sum()), int(m.sum())) for m in masks)])
    return rows


def _km_cell(frame: pd.DataFrame, duration: str, event: str) -> str:
    from ...survival import km_medians

    data = frame[[duration, event]].dropna()
    if data.empty:
        return ""
    med = km_medians(data, duration, event).iloc[0]
    return f"{_fmt_num(med['median'])} ({_fmt_num(med['ci_lower'])}–{_fmt_num(med['ci_upper'])})"


def _survival_rows(col: str, label: str, patients: pd.DataFrame, masks: Sequence[np.ndarray]) -> list[list[str]]:
    event = _EVENTS.get(col)
    if event is None or event not in patients.columns or patients[event].isna().all():
        return _continuous_rows(label, patients[col], masks)
    frame = pd.DataFrame({"duration": pd.to_numeric(patients[col], errors="coerce").astype("float64"),
                          "event": patients[event].astype("Float64")})
    events = frame["event"].fillna(0).to_numpy(dtype=float) > 0
    return [[label, "KM median (95% CI)", *(_km_cell(frame[m], "duration", "event") for m in masks)],
            [label, "events", *(_pct(int(events[m].sum()), int(m.sum())) for m in masks)]]


def _group_masks(frame: pd.DataFrame, by: str | None, order: Sequence[str] | None = None
                 ) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Column headers, row masks and group values: "Overall" first, then one per group of ``by``."""
    n = len(frame)
    headers = [f"Overall (n={n:,})"]
    masks = [np.ones(n, dtype=bool)]
    if by is None:
        return headers, masks, []
    groups = frame[by].astype("string")
    order = list(order) if order is not None else _level_order(by, groups)
    names = LEVEL_LABELS.get(by, {})
    for g in order:
        m = (groups == g).fillna(False).to_numpy(dtype=bool)
        headers.append(f"{names.get(g, g)} (n={int(m.sum()):,})")
        masks.append(m)
    return headers, masks, order


def table_one(patients: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Patient characteristics as in the paper's Table 1, overall and by group.

    Parameters
    ----------
    patients : DataFrame
        One row per patient. Every column is described except ``patient_id``, event flags (used with
        their duration column) and columns without any value. Known columns (:data:`VARIABLES`) come
        first, in that order, with their labels; others follow, categorical when they hold text, yes/no
        values or at most 6 distinct integers, continuous otherwise.
    by : str, optional
        A column whose groups get a column each (patients without a group count in "Overall" only).

    Returns
    -------
    DataFrame
        ``characteristic, level, Overall (n=N), <group> (n=N)...``, all text. Categorical variables:
        one row per level, ``n (%)`` with the column's patients as denominator (an ``Unknown`` row for
        missing values); continuous variables: ``median (IQR)`` and ``mean (SD)`` rows (and ``Unknown``);
        survival durations with an event column (``os_days``/``os_event``, ``pfs_days``/``pfs_event``):
        the Kaplan–Meier median with its 95% CI and the number of events.

    Raises
    ------
    KeyError
        When ``by`` is not a column of ``patients``.

    Examples
    --------
    >>> frame = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "sex": ["M", "F", "M"],
    ...                       "age": [50.0, 60.0, 70.0]})
    >>> table_one(frame).values.tolist()
    [['Age, years', 'median (IQR)', '60 (55–65)'], ['Age, years', 'mean (SD)', '60.0 (10.0)'], \
['Sex', 'Male', '2 (66.7%)'], ['Sex', 'Female', '1 (33.3%)']]
    """
    if by is not None and by not in patients.columns:
        raise KeyError(f"table_one: no column {by!r}; columns are {', '.join(map(str, patients.columns))}")
    patients = patients.reset_index(drop=True)
    headers, masks, _ = _group_masks(patients, by)
    known = [c for c in VARIABLES if c in patients.columns]
    others = [c for c in patients.columns if c not in VARIABLES]
    rows: list[list[str]] = []
    for col in [*known, *others]:
        values = patients[col]
        if col in _SKIP or col == by or values.isna().all():
            continue
        label = VARIABLES.get(col, (str(col).replace("_", " ").capitalize(), ""))[0]
        kind = _kind_of(col, values)
        if kind == "survival":
            rows += _survival_rows(col, label, patients, masks)
        elif kind == "continuous":
            rows += _continuous_rows(label, values, masks)
        else:
            rows += _categorical_rows(col, label, values, masks)
    return pd.DataFrame(rows, columns=["characteristic", "level", *headers])


# ============================================================================================ Fig. 1a
def _consort_steps(consort: pd.DataFrame) -> list[dict[str, Any]]:
    steps = []
    for i, r in enumerate(consort.reset_index(drop=True).to_dict("records")):
        prev = steps[-1] if steps else None
        step = {k: r[k] for k in ("step", "patients", "lesions", "target_lesions", "measurements")}
        step["excluded_patients"] = int(r.get("excluded_patients", 0) or 0)
        step["reason"] = "" if pd.isna(r.get("reason")) else str(r.get("reason") or "")
        step["excluded_lesions"] = int(prev["lesions"] - r["lesions"]) if prev else 0
        step["excluded_targets"] = int(prev["target_lesions"] - r["target_lesions"]) if prev else 0
        # a criterion step (not the first, not the closing "analysed" row with nothing excluded)
        step["criterion"] = i > 0 and not (step["step"] == "analysed" and step["excluded_patients"] == 0)
        steps.append(step)
    return steps


def plot_consort(consort: pd.DataFrame) -> Any:
    """The CONSORT flow of a selection (Fig. 1a): one box per step, excluded patients beside it.

    Parameters
    ----------
    consort : DataFrame
        :attr:`lesionatlas.data.Selection.consort`: ``step, patients, lesions, target_lesions,
        measurements, excluded_patients, reason``, one row per step.

    Returns
    -------
    matplotlib.figure.Figure
        Boxes down the left hold each step's patients, lesions, target lesions and measurements; for a
        criterion step a box on the right gives the patients it excluded (and their lesions) and why.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    steps = _consort_steps(consort)
    line, pad, gap = 0.2, 0.14, 0.9  # inches: a 9-pt text line, box padding, space between boxes
    titles = []
    for i, s in enumerate(steps):
        title = "All patients" if i == 0 else ("Analysed" if s["step"] == "analysed" else "Included: " + s["step"])
        titles.append(textwrap.fill(title[0].upper() + title[1:], 66))
    heights = [2 * pad + line * (t.count("\n") + 1) + 2 * line + 0.08 for t in titles]
    width = 10.0
    height = 0.3 + sum(heights) + gap * max(len(steps) - 1, 0) + 0.15
    fig, ax = new_figure(width, height)
    fig.set_layout_engine(None)
    ax.set_position((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    main_x0, main_w = 0.2, 5.3
    side_x0, side_w = 6.15, 3.7
    centre = main_x0 + main_w / 2
    blue, orange, green = "#0072B2", "#D55E00", "#009E73"

    def box(x0: float, y_top: float, w: float, h: float, edge: str, face: str, lw: float = 1.2) -> None:
        ax.add_patch(FancyBboxPatch((x0, y_top - h), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                    linewidth=lw, edgecolor=edge, facecolor=face))

    def arrow(xy0: tuple[float, float], xy1: tuple[float, float], col: str) -> None:
        ax.add_patch(FancyArrowPatch(xy0, xy1, arrowstyle="-|>", mutation_scale=14, linewidth=1.2, color=col,
                                     shrinkA=0, shrinkB=0))

    y = height - 0.3
    for i, (s, title, h) in enumerate(zip(steps, titles, heights)):
        last = i == len(steps) - 1
        box(main_x0, y, main_w, h, green if last else blue, "#eaf7f1" if last else "#eef5fb", 2.0 if last else 1.2)
        body = (f"{_fmt_int(s['patients'])} patients  ·  {_fmt_int(s['lesions'])} lesions\n"
                f"{_fmt_int(s['target_lesions'])} target lesions  ·  {_fmt_int(s['measurements'])} measurements")
        ax.text(centre, y - pad, title, ha="center", va="top", fontsize=9, fontweight="bold", color="#12324a",
                linespacing=1.2)
        ax.text(centre, y - h + pad, body, ha="center", va="bottom", fontsize=9, linespacing=1.4)
        if not last:
            nxt = steps[i + 1]
            arrow((centre, y - h), (centre, y - h - gap), "#4d4d4d")
            if nxt["criterion"]:
                mid = y - h - gap / 2
                reason = textwrap.fill("Reason: " + textwrap.shorten(nxt["reason"] or "not recorded", 100,
                                                                     placeholder="…"), 56)
                side_h = 2 * pad + line * (2 + reason.count("\n") + 1) + 0.06
                arrow((centre, mid), (side_x0, mid), orange)
                box(side_x0, mid + side_h / 2, side_w, side_h, orange, "#fdf0ea")
                what = (f"Excluded: {_fmt_int(nxt['excluded_patients'])} patients\n"
                        f"({_fmt_int(nxt['excluded_lesions'])} lesions, "
                        f"{_fmt_int(nxt['excluded_targets'])} target lesions)")
                ax.text(side_x0 + 0.14, mid + side_h / 2 - pad, what, ha="left", va="top", fontsize=9,
                        fontweight="bold", color="#7a2d05", linespacing=1.2)
                ax.text(side_x0 + 0.14, mid - side_h / 2 + pad, reason, ha="left", va="bottom", fontsize=8.5,
                        color="#3a3a3a", linespacing=1.2)
        y -= h + gap
    return fig


# ============================================================================================ Fig. 1b
def organ_counts(lesions: pd.DataFrame) -> pd.DataFrame:
    """Lesions by organ: all lesions and target lesions, with percentages and patients involved.

    Parameters
    ----------
    lesions : DataFrame
        The lesions table of a Cohort (``patient_id, kind, organ``).

    Returns
    -------
    DataFrame
        ``organ, organ_name, all_lesions, all_percent, target_lesions, target_percent, nontarget_lesions,
        new_lesions, patients, patients_percent``, sorted by ``all_lesions`` (largest first);
        percentages of all lesions, of target lesions and of the patients with a lesion.
    """
    organ = lesions["organ"].astype("string").fillna("other")
    kind = lesions["kind"].astype("string")
    frame = pd.DataFrame({"organ": organ, "kind": kind, "patient_id": lesions["patient_id"].astype("string")})
    table = pd.crosstab(frame["organ"], frame["kind"])
    for k in ("target", "nontarget", "new"):
        if k not in table.columns:
            table[k] = 0
    n_patients = frame["patient_id"].nunique()
    out = pd.DataFrame({
        "organ": table.index.astype(str),
        "all_lesions": table.sum(axis=1).to_numpy(dtype="int64"),
        "target_lesions": table["target"].to_numpy(dtype="int64"),
        "nontarget_lesions": table["nontarget"].to_numpy(dtype="int64"),
        "new_lesions": table["new"].to_numpy(dtype="int64"),
        "patients": frame.groupby("organ")["patient_id"].nunique().reindex(table.index).to_numpy(dtype="int64"),
    })
    rank = {o: i for i, o in enumerate(ORGAN_GROUPS)}
    out["_rank"] = out["organ"].map(rank).fillna(len(rank))
    out = out.sort_values(["all_lesions", "_rank"], ascending=[False, True]).drop(columns="_rank")
    out.insert(1, "organ_name", out["organ"].map(organ_label))
    total, targets = int(out["all_lesions"].sum()), int(out["target_lesions"].sum())
    out.insert(3, "all_percent", 100.0 * out["all_lesions"] / total if total else np.nan)
    out.insert(5, "target_percent", 100.0 * out["target_lesions"] / targets if targets else np.nan)
    out["patients_percent"] = 100.0 * out["patients"] / n_patients if n_patients else np.nan
    for col in ("all_percent", "target_percent", "patients_percent"):
        out[col] = out[col].astype(float).round(1)
    return out.reset_index(drop=True)


def organs_per_patient(lesions: pd.DataFrame, patient_ids: Sequence[str] | None = None) -> pd.Series:
    """Organs involved at baseline per patient (target and non-target lesions), indexed by patient id.

    Patients of ``patient_ids`` without a baseline lesion count 0.
    """
    base = lesions[lesions["kind"].astype("string").isin(BASELINE_KINDS).fillna(False).to_numpy(dtype=bool)]
    n = base.assign(organ=base["organ"].astype("string").fillna("other")).groupby(
        base["patient_id"].astype("string"))["organ"].nunique()
    if patient_ids is not None:
        n = n.reindex(pd.Index(pd.Series(patient_ids, dtype="string"), name="patient_id"), fill_value=0)
    return n.astype("int64")


def organ_count_distribution(n_organs: pd.Series) -> pd.DataFrame:
    """Patients by number of organs involved: ``organs`` (1, 2, 3, ≥4; 0 only when present), ``patients``,
    ``percent``."""
    labels = np.where(n_organs >= 4, "≥4", n_organs.astype(str))
    counts = pd.Series(labels).value_counts()
    order = (["0"] if "0" in counts.index else []) + ["1", "2", "3", "≥4"]
    patients = counts.reindex(order, fill_value=0).astype("int64")
    total = int(patients.sum())
    return pd.DataFrame({"organs": order, "patients": patients.to_numpy(),
                         "percent": (100.0 * patients.to_numpy() / total).round(1) if total else np.nan})


def plot_organ_counts(counts: pd.DataFrame, distribution: pd.DataFrame) -> Any:
    """Fig. 1b: lesions by organ (all vs target, horizontal bars) and organs involved per patient."""
    n = len(counts)
    height = max(4.0, 0.3 * n + 1.4)
    fig, (ax, ax2) = new_figure(10.5, height, ncols=2, gridspec_kw={"width_ratios": [2.3, 1]})
    y = np.arange(n)
    bar = 0.4
    all_bars = ax.barh(y - bar / 2, counts["all_lesions"], height=bar, color=colour(0),
                       label="All lesions (target, non-target, new)")
    target_bars = ax.barh(y + bar / 2, counts["target_lesions"], height=bar, color=colour(1),
                          label="Target lesions")
    for bars in (all_bars, target_bars):
        ax.bar_label(bars, labels=[f"{int(v):,}" for v in bars.datavalues], padding=2, fontsize=8)
    ax.set_yticks(y, counts["organ_name"], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("Number of lesions")
    ax.set_xlim(0, max(1, float(counts["all_lesions"].max())) * 1.15)
    ax.legend(loc="lower right", fontsize=9, frameon=False)
    ax.set_title("Lesions by organ", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)

    bars2 = ax2.bar(distribution["organs"], distribution["patients"], color=colour(2), width=0.65)
    ax2.bar_label(bars2, labels=[f"{int(n):,}\n({p:.1f}%)" for n, p in
                                 zip(distribution["patients"], distribution["percent"])], padding=2, fontsize=8)
    ax2.set_xlabel("Organs involved at baseline")
    ax2.set_ylabel("Patients")
    ax2.set_ylim(0, max(1, float(distribution["patients"].max())) * 1.22)
    ax2.set_title("Metastatic organs per patient", fontsize=11)
    ax2.spines[["top", "right"]].set_visible(False)
    return fig


# ============================================================================================ sections
def _lesion_summaries(cohort: Any) -> pd.DataFrame:
    """Per patient: organs involved, baseline lesions and target lesions."""
    patients = cohort.patients["patient_id"].astype("string")
    lesions = cohort.lesions
    kind = lesions["kind"].astype("string")
    pid = lesions["patient_id"].astype("string")
    base = kind.isin(BASELINE_KINDS).fillna(False).to_numpy(dtype=bool)
    target = (kind == "target").fillna(False).to_numpy(dtype=bool)
    idx = pd.Index(patients, name="patient_id")
    n_organs = organs_per_patient(lesions, patients)
    return pd.DataFrame({
        "n_organs": np.where(n_organs.to_numpy() >= 4, "≥4", n_organs.to_numpy().astype(str)),
        "n_lesions": pid[base].value_counts().reindex(idx, fill_value=0).to_numpy(dtype="int64"),
        "n_target_lesions": pid[target].value_counts().reindex(idx, fill_value=0).to_numpy(dtype="int64"),
    }, index=idx)


def _measurements_per_target(cohort: Any) -> pd.Series:
    lesions = cohort.lesions
    targets = lesions.loc[(lesions["kind"].astype("string") == "target").fillna(False).to_numpy(dtype=bool),
                          "lesion_id"].astype("string")
    counts = cohort.measurements["lesion_id"].astype("string").value_counts()
    return counts.reindex(pd.Index(targets), fill_value=0).astype("int64")


def _follow_up(patients: pd.DataFrame) -> str:
    """Median follow-up (reverse Kaplan–Meier on overall survival), or '' without survival data."""
    if not {"os_days", "os_event"} <= set(patients.columns):
        return ""
    frame = pd.DataFrame({"days": pd.to_numeric(patients["os_days"], errors="coerce").astype("float64"),
                          "censored": 1.0 - patients["os_event"].astype("Float64")}).dropna()
    if frame.empty or frame["censored"].sum() == 0:
        return ""
    from ...survival import km_medians

    med = float(km_medians(frame, "days", "censored")["median"].iloc[0])
    return f"{med:,.0f} days" if np.isfinite(med) else ""


def _treatment_column(patients: pd.DataFrame) -> str | None:
    for col in ("treatment_group", "treatment"):
        if col in patients.columns and patients[col].dropna().nunique() >= 2:
            if col == "treatment" and patients[col].dropna().nunique() > 6:
                continue
            return col
    return None


def _cohort_section(selection: Any) -> Section:
    section = Section("cohort", "Figure 1 — Cohort and lesions", intro=(
        "Patients were selected with the paper's criteria (patients without target-lesion longitudinal "
        "measurements and those whose baseline scan was too long before treatment start were excluded). "
        "Fig. 1a follows each step of the selection; Fig. 1b counts the lesions of the analysed patients "
        "by organ."))
    consort = selection.consort
    cohort = selection.cohort
    lesions = cohort.lesions
    kind = lesions["kind"].astype("string")
    last = consort.iloc[-1]
    n_organs = int(lesions["organ"].astype("string").fillna("other").nunique())
    items: list[tuple[str, Any]] = [
        ("patients analysed", _fmt_int(last["patients"])),
        ("patients excluded", _fmt_int(consort["excluded_patients"].sum())),
        ("lesions", _fmt_int(last["lesions"])),
        ("target lesions", _fmt_int(last["target_lesions"])),
        ("non-target lesions", _fmt_int((kind == "nontarget").fillna(False).sum())),
        ("new lesions", _fmt_int((kind == "new").fillna(False).sum())),
        ("target-lesion measurements", _fmt_int(last["measurements"])),
        ("organs with lesions", _fmt_int(n_organs)),
    ]
    per_target = _measurements_per_target(cohort)
    if len(per_target):
        q1, q2, q3 = np.quantile(per_target.to_numpy(dtype=float), [0.25, 0.5, 0.75])
        items.append(("measurements per target lesion, median (IQR)", f"{q2:g} ({q1:g}–{q3:g})"))
    follow = _follow_up(cohort.patients)
    if follow:
        items.append(("median follow-up (reverse Kaplan–Meier)", follow))
    section.facts(items)

    section.figure("fig1a_consort", "Fig. 1a — Selection of patients (CONSORT)", plot_consort(consort),
                   "Each box gives the patients kept after a step, with their lesions (target, non-target and "
                   "new), target lesions and target-lesion measurements; the boxes on the right give the "
                   "patients excluded at that step and why.")
    excluded = selection.excluded
    if len(excluded):
        section.table("excluded_patients", "Excluded patients", excluded, "The first criterion each excluded "
                      "patient failed, with their own numbers.", max_rows=15, source="select/excluded.csv")

    if len(lesions) == 0:
        section.note("The analysed patients have no lesions: Fig. 1b is left out.", "warning")
        return section
    counts = organ_counts(lesions)
    n_org = organs_per_patient(lesions, cohort.patients["patient_id"])
    dist = organ_count_distribution(n_org)
    section.figure("fig1b_lesions_by_organ", "Fig. 1b — Lesions by organ and organs per patient",
                   plot_organ_counts(counts, dist),
                   "Left: number of lesions in each organ group, all lesions (target, non-target and new) and "
                   "target lesions, sorted by the number of all lesions. Right: patients by the number of organs "
                   "with a baseline (target or non-target) lesion (paper: 1, 12.8%; 2, 26.9%; 3, 26.6%; "
                   "≥4, 33.7%).")
    shown = counts.drop(columns="organ").rename(columns={
        "organ_name": "organ", "all_lesions": "all lesions", "all_percent": "% of all",
        "target_lesions": "target lesions", "target_percent": "% of target", "nontarget_lesions": "non-target",
        "new_lesions": "new", "patients": "patients with lesions", "patients_percent": "% of patients"})
    section.table("table_lesions_by_organ", "Lesions by organ", shown,
                  "Counts of Fig. 1b; percentages of all lesions, of target lesions and of analysed patients.",
                  max_rows=30)
    section.table("table_organs_per_patient", "Metastatic organs per patient", dist.rename(columns={
        "organs": "organs involved", "percent": "% of patients"}),
        "Organs with a baseline (target or non-target) lesion.", max_rows=10)
    return section


def _table1_section(selection: Any) -> Section:
    section = Section("table1", "Table 1 — Patient characteristics", intro=(
        "Characteristics of the analysed patients: n (%) for categorical variables (percent of the column's "
        "patients, unknown values included), median (IQR) and mean (SD) for continuous ones, Kaplan–Meier "
        "median (95% CI) for survival times."))
    cohort = selection.cohort
    patients = cohort.patients.reset_index(drop=True)
    extra = _lesion_summaries(cohort).reset_index(drop=True)
    frame = pd.concat([patients, extra], axis=1)
    by = _treatment_column(patients)
    table = table_one(frame, by)
    per_target = _measurements_per_target(cohort)
    if len(per_target):
        # a lesion-level row: the groups of the lesions' patients, in Table 1's column order
        lesion_frame = pd.DataFrame({"lesion_id": per_target.index, "n": per_target.to_numpy(dtype=float)})
        if by is not None:
            _, _, order = _group_masks(patients, by)
            group = pd.Series(patients[by].astype("string").to_numpy(),
                              index=patients["patient_id"].astype("string").to_numpy())
            owner = pd.Series(cohort.lesions["patient_id"].astype("string").to_numpy(),
                              index=cohort.lesions["lesion_id"].astype("string").to_numpy())
            lesion_frame[by] = owner.reindex(lesion_frame["lesion_id"]).map(group).astype("string").to_numpy()
            _, masks, _ = _group_masks(lesion_frame, by, order)
        else:
            _, masks, _ = _group_masks(lesion_frame, None)
        values = lesion_frame["n"].to_numpy()
        table.loc[len(table)] = ["Measurements per target lesion", "median (IQR)",
                                 *(_median_iqr(values[m]) for m in masks)]
    shown = table.copy()
    repeat = shown["characteristic"].eq(shown["characteristic"].shift())
    shown.loc[repeat, "characteristic"] = ""
    section.table("table1_patient_characteristics", "Table 1 — Patient characteristics", shown,
                  "By " + VARIABLES.get(by, (by,))[0].lower() + "." if by else
                  "No treatment column with at least two groups: overall only.", max_rows=200)
    if by is None:
        section.note("The patients table has no treatment group: Table 1 is shown for all patients only.")
    return section


def _checks_section(report: Any) -> Section:
    section = Section("data-checks", "Data checks", intro=(
        "Every validation rule was run on the data as read; errors make data unusable, warnings describe "
        "dirty but usable data (the analysis goes on and says what it did)."))
    problems = report.problems
    sev = problems["severity"].astype("string") if len(problems) else pd.Series(dtype="string")
    n_err, n_warn = int((sev == "error").sum()), int((sev == "warning").sum())
    items: list[tuple[str, Any]] = [("errors", _fmt_int(n_err)), ("warnings", _fmt_int(n_warn))]
    for table in ("patients", "lesions", "measurements", "assessments"):
        if table in (report.counts or {}):
            items.append((f"{table} rows read", _fmt_int(report.counts[table])))
    section.facts(items)
    if report.source:
        section.note(f"Data checked: {report.source}")
    if problems.empty:
        section.note("No problem found: every validation rule passed.")
        return section
    cols = [c for c in ("severity", "code", "rule", "table", "column", "n", "ids", "message") if c in problems]
    shown = problems.loc[:, cols].rename(columns={"n": "rows or ids"})
    section.table("data_problems", "Problems found", shown, "One row per problem, errors first; 'rows or ids' "
                  "counts the rows or ids concerned, 'ids' lists the first few.", max_rows=60,
                  source="validate/problems.csv")
    return section


def build(run: Any) -> list[Section]:
    """The cohort (Fig. 1), Table 1 and data-checks sections of ``run``.

    Parameters
    ----------
    run : RunView
        A finished run; the sections use the ``select`` and ``validate`` stages and show a skipped
        note where one did not run.

    Returns
    -------
    list of Section
        ``cohort``, ``table1``, ``data-checks``.
    """
    selection, why = _load(run, "select")
    if selection is None:
        cohort = Section("cohort", "Figure 1 — Cohort and lesions").skipped("select", why)
        table1 = Section("table1", "Table 1 — Patient characteristics").skipped("select", why)
    else:
        cohort, table1 = _cohort_section(selection), _table1_section(selection)
    report, why = _load(run, "validate")
    checks = (_checks_section(report) if report is not None
              else Section("data-checks", "Data checks").skipped("validate", why))
    return [cohort, table1, checks]


__all__ = ["VARIABLES", "build", "organ_count_distribution", "organ_counts", "organ_label", "organs_per_patient",
           "plot_consort", "plot_organ_counts", "table_one"]
