"""Report section: predicting the progression group from baseline data (Zhou et al. 2024, Supplementary Fig. 11).

The paper trained a gradient-boosting classifier of the patient's progression group (the k-means groups of
the organ progression sequences) from what is known at treatment start: demographic and clinical
characteristics, the metastatic organs, lesion counts and baseline target volumes; a 4:1 split, a grid
search by 5-fold cross-validation scored by F1, and accuracy, precision, recall and ROC curves on the test
part (test AUC 0.91, Supplementary Fig. 11 and Supplementary Table 4).

:func:`build` shows the predictor stage's :class:`~lesionatlas.patterns.GroupPredictor`: one-vs-rest ROC
curves per group with their AUC, the confusion matrix (counts and row percentages), the permutation
importance of the baseline features, the test metrics next to those of always predicting the most common
group, the metrics per group, the chosen hyper-parameters and the cross-validation grid, and the
baseline features that matter most summarised by group (from ``predictor/features.csv``).
"""
from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...data.organs import ORGAN_LABELS
from ..document import Section, colour, new_figure

SECTION_ID = "prediction"
TITLE = "Predicting the progression pattern from baseline data"
TOP_FEATURES = 15
FEATURES_BY_GROUP = 10
CV_ROWS = 10

_FEATURE_LABELS = {
    "age": "Age (years)",
    "bmi": "Body-mass index (kg/m²)",
    "bsa": "Body surface area (m²)",
    "line": "Treatment line",
    "prior_surgery": "Prior surgery (yes/no)",
    "prior_radiation": "Prior radiation (yes/no)",
    "sex": "Sex",
    "race": "Race",
    "tumor_type": "Primary tumour type",
    "treatment": "Treatment",
    "treatment_group": "Treatment group",
    "kras": "KRAS status",
    "n_organs": "Metastatic organs (n)",
    "n_target_lesions": "Target lesions (n)",
    "n_nontarget_lesions": "Non-target lesions (n)",
    "baseline_volume_sum_mm3": "Baseline target volume, sum (mm³)",
    "baseline_volume_max_mm3": "Largest baseline target volume (mm³)",
}

_METRIC_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy (mean sensitivity over the groups = macro-average recall)",
    "precision_macro": "Precision, macro-average",
    "f1_macro": "F1 score, macro-average",
    "auc_macro": "ROC AUC, macro-average (one-vs-rest)",
    "auc_micro": "ROC AUC, micro-average",
    "cv_f1_macro": "Cross-validated macro F1 of the chosen settings (training part)",
    "n_train": "Patients in the training part",
    "n_test": "Patients in the test part",
}

_PARAM_LABELS = {
    "learning_rate": "learning rate",
    "max_leaf_nodes": "maximum leaves per tree",
    "max_depth": "maximum tree depth",
    "min_samples_leaf": "minimum patients per leaf",
    "l2_regularization": "L2 regularisation",
    "max_iter": "maximum boosting iterations",
    "max_bins": "bins per feature",
}


# ------------------------------------------------------------------------------------------ labels
def _organ(organ: str) -> str:
    return ORGAN_LABELS.get(organ, organ.replace("_", " ").capitalize())


def feature_label(feature: str) -> str:
    """Display label of a baseline feature column (``n_lesions_liver`` -> ``Liver lesions (n)``)."""
    if feature in _FEATURE_LABELS:
        return _FEATURE_LABELS[feature]
    if feature.startswith("has_"):
        return f"{_organ(feature[4:])} metastasis (yes/no)"
    if feature.startswith("n_lesions_"):
        return f"{_organ(feature[10:])} lesions (n)"
    return feature.replace("_", " ").capitalize()


def _param_label(name: str) -> str:
    return _PARAM_LABELS.get(name, name.replace("_", " "))


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if np.isfinite(x) else "n/a"


# ------------------------------------------------------------------------------------------ tables
def confusion_counts(predictor: Any) -> pd.DataFrame:
    """Test confusion matrix as a square table of counts (rows true group, columns predicted group)."""
    mat = predictor.confusion.pivot(index="true_group", columns="predicted_group", values="n")
    return mat.reindex(index=predictor.classes, columns=predictor.classes).fillna(0).astype(int)


def _auc(predictor: Any, curve: str) -> float:
    sub = predictor.roc.loc[predictor.roc["curve"] == curve, "auc"]
    return float(sub.iloc[0]) if len(sub) else float("nan")


def group_metrics(predictor: Any) -> pd.DataFrame:
    """Per group on the test part: ``group, n_test, n_predicted, sensitivity, precision, f1, auc``."""
    mat = confusion_counts(predictor).to_numpy()
    n_true, n_pred, hit = mat.sum(axis=1), mat.sum(axis=0), np.diag(mat)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = np.where(n_true > 0, hit / np.maximum(n_true, 1), np.nan)
        prec = np.where(n_pred > 0, hit / np.maximum(n_pred, 1), np.nan)
        f1 = np.where(sens + prec > 0, 2 * sens * prec / (sens + prec), 0.0)
    return pd.DataFrame({"group": predictor.classes, "n_test": n_true.astype(int), "n_predicted": n_pred.astype(int),
                         "sensitivity": sens, "precision": prec, "f1": np.where(np.isnan(sens), np.nan, f1),
                         "auc": [_auc(predictor, g) for g in predictor.classes]})


def _metric(predictor: Any, name: str) -> float:
    row = predictor.metrics.loc[predictor.metrics["metric"] == name, "value"]
    return float(row.iloc[0]) if len(row) else float("nan")


def metrics_table(predictor: Any) -> pd.DataFrame:
    """The test metrics with the majority-class baseline beside them: ``metric, predictor, majority_class``.

    Balanced accuracy is the mean sensitivity over the groups present in the test part (from the
    confusion table); always predicting one group has a balanced accuracy of 1 / (number of groups), a
    macro precision of its accuracy / (number of groups) (the other groups are never predicted and count
    as 0) and, being a constant score, a ROC AUC of 0.5.
    """
    per = group_metrics(predictor)
    present = per[per["n_test"] > 0]
    k = len(present)
    balanced = float(present["sensitivity"].mean()) if k else float("nan")
    majority = _metric(predictor, "majority_accuracy")
    base = {"accuracy": majority, "balanced_accuracy": 1.0 / k if k else float("nan"),
            "precision_macro": majority / k if k else float("nan"),
            "f1_macro": _metric(predictor, "majority_f1_macro"), "auc_macro": 0.5, "auc_micro": 0.5}
    rows = []
    for key in ("accuracy", "balanced_accuracy", "precision_macro", "f1_macro", "auc_macro",
                "auc_micro", "cv_f1_macro", "n_train", "n_test"):
        value = balanced if key == "balanced_accuracy" else _metric(predictor, key)
        if key in ("n_train", "n_test") and np.isfinite(value):
            value = int(value)
        rows.append({"metric": _METRIC_LABELS[key], "key": key, "predictor": value,
                     "majority_class": base.get(key, np.nan)})
    return pd.DataFrame(rows)


def hyperparameter_table(predictor: Any) -> pd.DataFrame:
    """``setting, value, how_chosen``: the grid-searched values, the fixed settings, the split and the seed."""
    meta = predictor.meta or {}
    grid = meta.get("grid", {}) or {}
    rows = []
    for name, value in predictor.best_params.items():
        searched = ", ".join(str(v) for v in grid.get(name, [])) or "searched"
        rows.append((_param_label(name), str(value), f"grid search over {searched} (best cross-validated macro F1)"))
    params = predictor.model.get_params() if hasattr(predictor.model, "get_params") else {}
    for name in ("max_iter", "min_samples_leaf", "l2_regularization", "max_depth", "max_bins"):
        if name in params and name not in predictor.best_params:
            rows.append((_param_label(name), "no limit" if params[name] is None else str(params[name]), "fixed"))
    if params.get("early_stopping"):
        rows.append(("early stopping", f"after {params.get('n_iter_no_change')} iterations without improvement on "
                     f"a {params.get('validation_fraction'):g} validation split", "fixed"))
    n_iter = getattr(predictor.model, "n_iter_", None)
    if n_iter is not None:
        rows.append(("boosting iterations used", str(int(n_iter)), "early stopping"))
    if "test_size" in meta:
        test = float(meta["test_size"])
        rows.append(("train : test split", f"{(1 - test) / test:.3g} : 1 (stratified by group)", "fixed"))
    if "cv" in meta:
        rows.append(("cross-validation folds", str(meta["cv"]), "fixed (stratified)"))
    if meta.get("excluded_groups"):
        rows.append(("groups left out", ", ".join(meta["excluded_groups"]), "fixed"))
    if "seed" in meta:
        rows.append(("seed", str(meta["seed"]), "derived from the run seed"))
    return pd.DataFrame(rows, columns=["setting", "value", "how_chosen"])


def cv_table(predictor: Any) -> pd.DataFrame:
    """The grid, best first: ``rank``, one column per hyper-parameter, ``mean_f1_macro, sd_f1_macro``."""
    cv = predictor.cv_results.copy()
    params = []
    for p in cv["params"]:
        try:
            d = ast.literal_eval(p) if isinstance(p, str) else dict(p)
        except (ValueError, SyntaxError):
            d = {"settings": p}
        params.append(d)
    wide = pd.DataFrame(params, index=cv.index)
    out = pd.concat([cv[["rank"]], wide, cv[["mean_f1_macro", "sd_f1_macro"]]], axis=1)
    return out.sort_values(["rank", "mean_f1_macro"], ascending=[True, False], kind="stable").reset_index(drop=True)


def _short(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _summarise(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    if pd.api.types.is_numeric_dtype(v):
        if set(np.unique(v.to_numpy())) <= {0.0, 1.0}:
            return f"{100 * v.mean():.0f}%"
        q1, med, q3 = np.percentile(v.to_numpy(dtype=float), [25, 50, 75])
        if max(abs(q3), abs(med)) >= 100:
            return f"{med:,.0f} ({q1:,.0f}–{q3:,.0f})"
        return f"{_short(med)} ({_short(q1)}–{_short(q3)})"
    top = v.astype(str).value_counts()
    return f"{top.index[0]} {100 * top.iloc[0] / len(v):.0f}%"


def features_by_group(features: pd.DataFrame, groups: pd.Series, order: list[str], columns: list[str]) -> pd.DataFrame:
    """The baseline features ``columns`` summarised per group (all patients with a group, train and test).

    Numbers as median (IQR), yes/no features as % yes, text features as the most common value and its share.
    """
    f = features.copy()
    f.index = f.index.astype(str)
    g = groups.copy()
    g.index = g.index.astype(str)
    g = g[g.isin(order)]
    f = f.loc[f.index.intersection(g.index)]
    g = g.loc[f.index]
    rows = [{"feature": "Patients (n)", **{grp: f"{int((g == grp).sum()):,}" for grp in order}}]
    for col in columns:
        if col not in f:
            continue
        rows.append({"feature": feature_label(col), **{grp: _summarise(f.loc[g == grp, col]) for grp in order}})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ figures
def roc_figure(predictor: Any) -> Any:
    k = len(predictor.classes)
    fig, ax = new_figure(7.6, 4.8 if k <= 8 else 5.6)
    predictor.plot_roc(ax, colors=[colour(i) for i in range(k)])
    ax.set_title("ROC curves on the test part, one group against the rest", fontsize=10)
    return fig


def confusion_figure(predictor: Any) -> Any:
    k = len(predictor.classes)
    width = min(11.0, max(7.5, 1.0 * k + 3.5))
    fig, ax = new_figure(width, width * 0.72)
    predictor.plot_confusion(ax)
    ax.set_title("Confusion matrix on the test part (count, % of the true group)", fontsize=10)
    return fig


def importance_figure(predictor: Any, top: int = TOP_FEATURES) -> Any:
    n = min(top, len(predictor.importance))
    fig, ax = new_figure(8.0, 0.32 * n + 1.5)
    predictor.plot_importance(ax, top=top, labels=feature_label)
    ax.set_title(f"Permutation importance of the baseline features (top {n})", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------ text
def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _majority_group(predictor: Any, per: pd.DataFrame, n_test: int) -> str | None:
    """The group that always predicting gives ``majority_accuracy`` on the test part, when only one fits."""
    acc = _metric(predictor, "majority_accuracy")
    if not np.isfinite(acc) or n_test <= 0:
        return None
    fits = per.loc[per["n_test"] == round(acc * n_test), "group"].tolist()
    return fits[0] if len(fits) == 1 else None


def baseline_note(predictor: Any) -> tuple[str, str]:
    """A plain-language comparison with always predicting the most common group, and the note's kind."""
    table = metrics_table(predictor).set_index("key")
    per = group_metrics(predictor)
    n_test = int(per["n_test"].sum())
    acc, base_acc = float(table.at["accuracy", "predictor"]), float(table.at["accuracy", "majority_class"])
    bal, base_bal = float(table.at["balanced_accuracy", "predictor"]), float(table.at["balanced_accuracy", "majority_class"])
    f1, base_f1 = float(table.at["f1_macro", "predictor"]), float(table.at["f1_macro", "majority_class"])
    auc = float(table.at["auc_macro", "predictor"])
    hits = int(np.trace(confusion_counts(predictor).to_numpy()))
    lo, hi = _wilson(hits, n_test)
    maj = _majority_group(predictor, per, n_test)
    who = f" ({maj})" if maj else ""
    gain = acc - base_acc
    if gain > 0:
        times = f", {acc / base_acc:.1f} times as many" if base_acc > 0 else ""
        verdict = (f"That is {100 * gain:.0f} percentage points better than always predicting the most common "
                   f"group{who}, which is right for {_pct(base_acc)}{times}.")
    else:
        verdict = (f"That is no better than always predicting the most common group{who}, which is right for "
                   f"{_pct(base_acc)}.")
    ranked = per[np.isfinite(per["auc"])].sort_values("auc", ascending=False)
    groups = ""
    if len(ranked) >= 2:
        best, worst = ranked.iloc[0], ranked.iloc[-1]
        groups = (f" It separates {best['group']} best (AUC {best['auc']:.2f}) and {worst['group']} least "
                  f"well (AUC {worst['auc']:.2f}).")
    text = (f"On the {n_test:,} test patients it never saw, the predictor put {hits:,} ({_pct(acc)}, 95% CI "
            f"{_pct(lo)}–{_pct(hi)}) in their progression group. {verdict} Averaged over the groups, so that "
            f"favouring a large group earns nothing, it finds {_pct(bal)} of each group's patients against "
            f"{_pct(base_bal)} for a single-group guess (macro F1 {f1:.2f} against {base_f1:.2f}). The "
            f"macro-average ROC AUC is {auc:.2f}, where 0.5 is chance and 1 perfect; the paper reported a "
            f"test AUC of 0.91.{groups}")
    return text, ("info" if gain > 0 and bal > base_bal else "warning")


# ------------------------------------------------------------------------------------------ builder
def _read_features(folder: Path) -> pd.DataFrame | None:
    path = folder / "features.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype={"patient_id": str})
    return frame.set_index("patient_id")


def _groups(run: Any) -> pd.Series | None:
    try:
        if run["patterns"].status != "done":
            return None
    except KeyError:
        return None
    patterns = run.load("patterns")
    if patterns is None:
        return None
    a = patterns.assignments
    return a.set_index(a["patient_id"].astype(str))["group"].astype(str)


def build(run: Any) -> list[Section]:
    """The prediction section (id ``prediction``) of a finished run.

    Parameters
    ----------
    run : RunView
        A finished run (:class:`lesionatlas.pipeline.RunResult` or the same few attributes).

    Returns
    -------
    list of Section
        One section; a ``skipped`` note instead of figures when the predictor stage did not run.
    """
    section = Section(SECTION_ID, TITLE, intro=(
        "Can the progression pattern be foreseen at treatment start? As in the paper, a gradient-boosting "
        "classifier is trained on baseline data only (demographic and clinical characteristics, the metastatic "
        "organs, lesion counts per organ and the baseline target-lesion volumes) to predict each patient's "
        "progression group; patients without progression are left out. The patients are split 4:1 into "
        "training and test parts (stratified by group), the hyper-parameters are chosen by a grid search with "
        "cross-validation scored by macro F1 on the training part, and every figure and metric below is "
        "computed on the held-out test part."))
    record = run["predictor"]
    predictor = run.load("predictor") if record.status == "done" else None
    if predictor is None:
        reason = (record.reason or "").strip() or f"its status is '{record.status}'"
        section.skipped("predictor", reason)
        return [section]

    table = metrics_table(predictor).set_index("key")
    per = group_metrics(predictor)
    features = _read_features(Path(run.out) / "predictor")
    section.facts([
        ("ROC AUC, macro-average (test)", f"{table.at['auc_macro', 'predictor']:.2f}"),
        ("Accuracy (test)", _pct(table.at["accuracy", "predictor"])),
        ("Majority-class accuracy", _pct(table.at["accuracy", "majority_class"])),
        ("Balanced accuracy", _pct(table.at["balanced_accuracy", "predictor"])),
        ("Macro F1", f"{table.at['f1_macro', 'predictor']:.2f}"),
        ("Patients train / test", f"{int(table.at['n_train', 'predictor']):,} / {int(table.at['n_test', 'predictor']):,}"),
        ("Groups predicted", f"{len(predictor.classes)}"),
        ("Baseline features", f"{len(predictor.feature_columns)}"),
    ])
    text, kind = baseline_note(predictor)
    section.note(text, kind)

    section.figure("figS11_roc_curves", "ROC curves of the group predictor (test part)", roc_figure(predictor), (
        "One-vs-rest receiver operating characteristic curves of the predicted group probabilities on the test "
        "patients, one per progression group, with the macro-average (mean of the group curves, dashed black) "
        "and the micro-average (all group decisions pooled, dotted grey); the area under each curve (AUC) is in "
        "the legend, the diagonal is chance (AUC 0.5). The paper (Supplementary Fig. 11) reported a test AUC "
        "of 0.91, with Mono-Organ and Hetero-Organ predicted better than the organ-first groups."))
    section.figure("prediction_confusion_matrix", "Confusion matrix of the group predictor (test part)",
                   confusion_figure(predictor), (
        "Rows are the true progression groups of the test patients (n per group in brackets), columns the "
        "predicted groups; each cell shows the number of patients and their share of the row, so the "
        "diagonal gives each group's sensitivity. Shading follows the row percentage."))
    if predictor.importance.empty:
        section.note("No permutation importance was computed for this predictor.", "warning")
    else:
        sd = "importance_sd" in predictor.importance and predictor.importance["importance_sd"].notna().any()
        section.figure("prediction_feature_importance", "Which baseline features the predictor relies on",
                       importance_figure(predictor), (
            "Permutation importance on the test part: how much the macro F1 score drops when one feature's values "
            "are shuffled among the test patients" + (", mean and one SD (error bars) over the repeats" if sd else "")
            + f"; the {min(TOP_FEATURES, len(predictor.importance))} most important of "
            f"{len(predictor.importance)} features. Values near zero mean the model does not need the feature "
            "(a correlated feature may carry the same information)."))

    section.table("prediction_metrics", "Test performance against the majority-class baseline",
                  table.reset_index()[["metric", "predictor", "majority_class"]], (
        "Predictor: the gradient-boosting classifier on the test part. Majority class: always predicting the "
        "group most common in the training part. Balanced accuracy is the mean sensitivity over the groups "
        "(1 / number of groups for any single-group guess); the groups never predicted count as precision 0; "
        "a constant score has a ROC AUC of 0.5. "
        "Macro averages weigh every group equally."), source="predictor/metrics.csv")
    section.table("prediction_by_group", "Test performance per progression group", per, (
        "n_test: true members in the test part; n_predicted: patients predicted into the group; sensitivity "
        "(recall) and precision from the confusion matrix; AUC: one-vs-rest ROC AUC of the group's probability."),
        source="predictor/confusion.csv, predictor/roc.csv")
    section.table("tableS4_hyperparameters", "Model settings (gradient boosting, as Supplementary Table 4)",
                  hyperparameter_table(predictor), (
        "scikit-learn HistGradientBoostingClassifier: the settings chosen by the grid search, the fixed ones, "
        "and how the patients were split."), source="predictor/meta.json")
    grid = cv_table(predictor)
    section.table("prediction_cv_results", "Cross-validated grid search (best settings first)", grid, (
        f"Mean and SD of the macro F1 over the {predictor.meta.get('cv', 'cross-validation')} stratified folds of the training "
        "part, for each combination of the grid; rank 1 was refitted on the whole training part."
        + (f" The top {CV_ROWS} of {len(grid)} rows are shown." if len(grid) > CV_ROWS else "")),
        max_rows=CV_ROWS, source="predictor/cv_results.csv")

    groups = _groups(run)
    if features is None:
        section.note("The baseline feature table (predictor/features.csv) is missing from the run folder, so the "
                     "features are not summarised by group.", "warning")
    elif groups is None:
        section.note("The progression groups could not be read (patterns stage), so the baseline features are not "
                     "summarised by group.", "warning")
    else:
        top = [f for f in predictor.importance["feature"].head(FEATURES_BY_GROUP) if f in features.columns]
        section.table("prediction_features_by_group", "The most important baseline features by progression group",
                      features_by_group(features, groups, list(predictor.classes), top), (
            f"The {len(top)} features with the largest permutation importance, for all patients with a "
            "progression group (training and test parts): median (interquartile range) for numbers, % yes for "
            "yes/no features, the most common value and its share for text features."),
            source="predictor/features.csv")
    return [section]


__all__ = ["build", "confusion_counts", "cv_table", "feature_label", "features_by_group", "group_metrics",
           "hyperparameter_table", "metrics_table"]
