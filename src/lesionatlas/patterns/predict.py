"""Predict a patient's progression group from baseline data (Zhou et al. 2024, Supplementary Fig. 11).

:func:`baseline_features` builds one row per patient from what is known at treatment start only -
demographics and clinical columns of ``patients`` (never best response, PFS or OS), the metastatic organs
(indicator and lesion count per organ, target and non-target lesions; new lesions appear later and are
left out) and the baseline target volumes (sum and largest, from each target lesion's last measurement
at day <= 0).

:func:`train_group_predictor` fits scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
(native categorical handling, missing values allowed) as the paper did with gradient boosting: a 4:1
stratified split (seeded), a small grid searched by 5-fold stratified cross-validation scored by macro F1,
then on the test part accuracy, macro precision / recall / F1, the confusion matrix, one-vs-rest ROC curves
per class with micro and macro AUC, and permutation importance (seeded, macro F1). The result,
:class:`GroupPredictor`, predicts new patients and is saved with joblib together with the column layout
and the package versions it was trained with.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, DataWarning

PATIENT_NUMERIC = ("age", "bmi", "bsa", "line")
PATIENT_BOOLEAN = ("prior_surgery", "prior_radiation")
PATIENT_CATEGORICAL = ("sex", "race", "tumor_type", "treatment", "treatment_group", "kras")
DEFAULT_GRID: dict[str, list[Any]] = {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [7, 15]}
_FORMAT = 1


def baseline_features(cohort: Any, *, organs: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per patient (index ``patient_id``) of baseline features for :func:`train_group_predictor`.

    Parameters
    ----------
    cohort : lesionatlas.data.Cohort
        Its ``patients``, ``lesions`` and ``measurements`` tables.
    organs : tuple of str, optional
        Organ vocabulary of the per-organ columns (default: organs of the baseline lesions).

    Returns
    -------
    DataFrame
        Demographic/clinical columns present in ``patients`` (numbers as float, yes/no as float 0/1 with NaN
        for unknown, text as ``category``); ``has_<organ>`` (0/1) and ``n_lesions_<organ>``; ``n_organs``,
        ``n_target_lesions``, ``n_nontarget_lesions``; ``baseline_volume_sum_mm3`` and
        ``baseline_volume_max_mm3`` (NaN when a patient has no baseline measurement).
    """
    pats = cohort.patients.copy()
    pats["patient_id"] = pats["patient_id"].astype(str)
    out = pd.DataFrame(index=pd.Index(sorted(pats["patient_id"]), name="patient_id"))
    p = pats.set_index("patient_id")
    for col in PATIENT_NUMERIC:
        if col in p and p[col].notna().any():
            out[col] = pd.to_numeric(p[col], errors="coerce").astype(float).reindex(out.index)
    for col in PATIENT_BOOLEAN:
        if col in p and p[col].notna().any():
            out[col] = p[col].astype("Float64").astype(float).reindex(out.index)
    for col in PATIENT_CATEGORICAL:
        if col in p and p[col].notna().any():
            values = p[col].astype("string").reindex(out.index)
            out[col] = pd.Categorical(values.astype(object).where(values.notna(), None),
                                      categories=sorted(values.dropna().unique()))
    les = cohort.lesions
    les = les[les["kind"].astype(str).isin(["target", "nontarget"])].copy()
    les["patient_id"] = les["patient_id"].astype(str)
    les["organ"] = les["organ"].astype(str)
    vocab = tuple(sorted(set(les["organ"]) | set(organs or ()))) if organs is None else tuple(organs)
    counts = les.groupby(["patient_id", "organ"]).size().unstack(fill_value=0).reindex(index=out.index,
                                                                                        columns=list(vocab))
    counts = counts.fillna(0).astype(float)
    for o in vocab:
        out[f"has_{o}"] = (counts[o] > 0).astype(float)
    for o in vocab:
        out[f"n_lesions_{o}"] = counts[o]
    out["n_organs"] = (counts > 0).sum(axis=1).astype(float)
    kind = les.groupby(["patient_id", "kind"]).size().unstack(fill_value=0)
    out["n_target_lesions"] = kind.get("target", pd.Series(dtype=float)).reindex(out.index).fillna(0).astype(float)
    out["n_nontarget_lesions"] = kind.get("nontarget", pd.Series(dtype=float)).reindex(out.index).fillna(0).astype(float)
    m = cohort.measurements
    m = m[pd.to_numeric(m["day"], errors="coerce") <= 0].copy()
    m["lesion_id"] = m["lesion_id"].astype(str)
    m = m.sort_values(["lesion_id", "day"]).drop_duplicates("lesion_id", keep="last")
    owner = cohort.lesions.assign(lesion_id=cohort.lesions["lesion_id"].astype(str),
                                  patient_id=cohort.lesions["patient_id"].astype(str)).set_index("lesion_id")["patient_id"]
    m["patient_id"] = m["lesion_id"].map(owner)
    vol = pd.to_numeric(m["volume_mm3"], errors="coerce")
    g = vol.groupby(m["patient_id"])
    out["baseline_volume_sum_mm3"] = g.sum(min_count=1).reindex(out.index).astype(float)
    out["baseline_volume_max_mm3"] = g.max().reindex(out.index).astype(float)
    return out


def _versions() -> dict[str, str]:
    import sklearn

    from .. import __version__

    return {"lesionatlas": __version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "pandas": pd.__version__}


@dataclass(frozen=True, eq=False)
class GroupPredictor:
    """A fitted gradient-boosting classifier of the progression group and how well it did on held-out data.

    Attributes
    ----------
    model : HistGradientBoostingClassifier
        Refitted on the whole training part with ``best_params``.
    feature_columns : list of str
        Column order the model expects; :meth:`predict` aligns any table to it.
    categories : dict
        Levels of each categorical column at training (others become missing).
    classes : list of str
    metrics : DataFrame
        ``metric, value``: ``accuracy, precision_macro, recall_macro, f1_macro, auc_micro, auc_macro,
        majority_accuracy, majority_f1_macro, cv_f1_macro, n_train, n_test`` (test part unless named cv).
    confusion : DataFrame
        ``true_group, predicted_group, n`` on the test part.
    roc : DataFrame
        ``curve, fpr, tpr`` (one curve per class, plus ``micro`` and ``macro``) and ``auc`` per row's curve.
    importance : DataFrame
        ``feature, importance_mean, importance_sd`` (drop in test macro F1 when permuted), largest first.
    best_params : dict
    cv_results : DataFrame
        ``params, mean_f1_macro, sd_f1_macro, rank`` of the grid.
    meta : dict
        ``seed, test_size, grid, versions``.
    """

    model: Any
    feature_columns: list[str]
    categories: dict[str, list[str]]
    classes: list[str]
    metrics: pd.DataFrame
    confusion: pd.DataFrame
    roc: pd.DataFrame
    importance: pd.DataFrame
    best_params: dict[str, Any]
    cv_results: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        row = self.metrics.loc[self.metrics["metric"] == name, "value"]
        if row.empty:
            raise KeyError(f"metric {name!r}; metrics are {', '.join(self.metrics['metric'])}")
        return float(row.iloc[0])

    def summary(self) -> pd.DataFrame:
        """The metrics table (``metric, value``)."""
        return self.metrics.copy()

    def __repr__(self) -> str:
        return (f"GroupPredictor({len(self.classes)} groups, {len(self.feature_columns)} features; test accuracy "
                f"{self.metric('accuracy'):.3f}, macro F1 {self.metric('f1_macro'):.3f}, macro AUC "
                f"{self.metric('auc_macro'):.3f}; majority accuracy {self.metric('majority_accuracy'):.3f})")

    def _repr_html_(self) -> str:
        return f"<p>{self!r}</p>" + self.metrics.to_html(index=False)

    def _align(self, features: pd.DataFrame) -> pd.DataFrame:
        return _align(features, self.feature_columns, self.categories)

    def predict(self, features: pd.DataFrame) -> pd.Series:
        """Predicted group per row of ``features`` (a :func:`baseline_features` table), same index."""
        x = self._align(features)
        return pd.Series(self.model.predict(x).astype(str), index=features.index, name="predicted_group")

    def predict_proba(self, features: pd.DataFrame) -> pd.DataFrame:
        """Class probabilities, one column per group."""
        x = self._align(features)
        return pd.DataFrame(self.model.predict_proba(x), index=features.index, columns=list(self.model.classes_))

    def save(self, path: str | Path) -> Path:
        """Save with joblib (model + layout + tables + versions), atomically."""
        import os
        import tempfile

        import joblib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"format": _FORMAT, "versions": _versions(),
                 **{f: getattr(self, f) for f in self.__dataclass_fields__}}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            joblib.dump(state, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> GroupPredictor:
        """Load what :meth:`save` wrote; warns when it was saved with other package versions.

        Only load files you trust: joblib files can run code when loaded (they are pickles).
        """
        import joblib

        state = joblib.load(path)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise DataError(f"{path}: not a lesionatlas GroupPredictor file (format {_FORMAT})", code="format")
        saved, now = state.pop("versions"), _versions()
        state.pop("format")
        diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
        if diff:
            warnings.warn(f"{path}: saved with other versions ({', '.join(f'{k} {a} now {b}' for k, (a, b) in diff.items())}); "
                          "predictions may differ", DataWarning, stacklevel=2)
        return cls(**state)

    # ------------------------------------------------------------------ plots
    def plot_roc(self, ax: Any = None, *, colors: Any = None, legend_outside: bool = True) -> Any:
        """Test ROC curves, one-vs-rest per group, with the macro (dashed) and micro (dotted) averages.

        Parameters
        ----------
        ax : Axes, optional
        colors : sequence of colours, optional
            One per group (in ``classes`` order); default matplotlib's cycle.
        legend_outside : bool
            Legend to the right of the square plot, where it hides no curve.

        Returns
        -------
        Axes
            Each curve's legend label is ``"<curve> (AUC <auc:.2f>)"``.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
        curves = dict(tuple(self.roc.groupby("curve", sort=False)))
        names = {"macro": "macro-average", "micro": "micro-average"}
        ax.plot([0, 1], [0, 1], color="#9a9a9a", ls="--", lw=0.8, label="chance (AUC 0.50)")
        for i, group in enumerate(c for c in self.classes if c in curves):
            sub = curves[group]
            color = colors[i % len(colors)] if colors else None
            ax.plot(sub["fpr"], sub["tpr"], "-", lw=1.4, color=color, label=f"{group} (AUC {sub['auc'].iloc[0]:.2f})")
        for avg, style, color in (("macro", "--", "#000000"), ("micro", ":", "#555555")):
            if avg in curves:
                sub = curves[avg]
                ax.plot(sub["fpr"], sub["tpr"], ls=style, lw=2.2, color=color,
                        label=f"{names[avg]} (AUC {sub['auc'].iloc[0]:.2f})")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (1 − specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.grid(alpha=0.3, lw=0.5)
        if legend_outside:
            ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
        else:
            ax.legend(fontsize=7, frameon=False, loc="lower right")
        return ax

    def plot_confusion(self, ax: Any = None, *, colorbar: bool = True) -> Any:
        """Confusion matrix of the test part: counts and row percentages, shaded by the row percentage.

        Rows are the true groups, so the diagonal percentage of a row is that group's sensitivity.
        Each cell's text is ``"<count>\\n<row percent>%"``.
        """
        import matplotlib.pyplot as plt

        mat = self.confusion.pivot(index="true_group", columns="predicted_group", values="n")
        counts = mat.reindex(index=self.classes, columns=self.classes).fillna(0).to_numpy().astype(int)
        totals = counts.sum(axis=1, keepdims=True)
        pct = np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 5), layout="constrained")
        im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        k = len(self.classes)
        size = 9 if k <= 6 else 8
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{counts[i, j]:d}\n{pct[i, j]:.0f}%", ha="center", va="center", fontsize=size,
                        color="white" if pct[i, j] > 55 else "#1d2733")
        ax.set_xticks(range(k), self.classes, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(k), [f"{c} (n={int(t)})" for c, t in zip(self.classes, totals[:, 0])], fontsize=8)
        ax.set_xlabel("predicted group")
        ax.set_ylabel("true group (test patients)")
        if colorbar:
            ax.figure.colorbar(im, ax=ax, shrink=0.8, label="% of the true group")
        return ax

    def plot_importance(self, ax: Any = None, *, top: int = 15, labels: Any = None, color: str = "#0072B2") -> Any:
        """Permutation importance (mean drop in macro F1, error bars one SD over the repeats), top features.

        Parameters
        ----------
        ax : Axes, optional
        top : int
            Number of features shown, most important at the top.
        labels : callable, optional
            Feature column name -> display label.
        color : str
        """
        import matplotlib.pyplot as plt

        t = self.importance.head(top).iloc[::-1]
        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 0.3 * len(t) + 1.2), layout="constrained")
        names = [labels(f) if labels else f for f in t["feature"]]
        y = np.arange(len(t))
        sd = t["importance_sd"].to_numpy(dtype=float) if "importance_sd" in t else None
        ax.barh(y, t["importance_mean"], xerr=sd, color=color, height=0.7,
                error_kw={"ecolor": "#333333", "elinewidth": 0.9, "capsize": 2})
        ax.set_yticks(y, names, fontsize=8)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_xlabel("drop in test macro F1 when the feature is permuted (mean ± SD)")
        ax.grid(axis="x", alpha=0.3, lw=0.5)
        return ax


def _align(features: pd.DataFrame, columns: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise DataError(f"features: {len(missing)} column(s) the model needs are missing ({', '.join(missing[:8])}); "
                        "build them with baseline_features()", code="missing-column")
    x = features.loc[:, columns].copy()
    for col in columns:
        if col in categories:
            vals = x[col].astype("string")
            x[col] = pd.Categorical(vals.astype(object).where(vals.notna(), None), categories=categories[col])
        else:
            x[col] = pd.to_numeric(x[col], errors="coerce").astype(float)
    return x


def _roc_table(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> tuple[pd.DataFrame, float, float]:
    from sklearn.metrics import auc, roc_curve
    from sklearn.preprocessing import label_binarize

    yb = label_binarize(y, classes=classes)
    if len(classes) == 2:
        yb = np.hstack([1 - yb, yb])
    parts, fprs, tprs, aucs = [], [], [], []
    for i, c in enumerate(classes):
        fpr, tpr, _ = roc_curve(yb[:, i], proba[:, i])
        fprs.append(fpr), tprs.append(tpr), aucs.append(auc(fpr, tpr))
        parts.append(pd.DataFrame({"curve": c, "fpr": fpr, "tpr": tpr, "auc": aucs[-1]}))
    fpr, tpr, _ = roc_curve(yb.ravel(), proba.ravel())
    auc_micro = float(auc(fpr, tpr))
    parts.append(pd.DataFrame({"curve": "micro", "fpr": fpr, "tpr": tpr, "auc": auc_micro}))
    grid = np.unique(np.concatenate(fprs))
    mean_tpr = np.mean([np.interp(grid, f, t) for f, t in zip(fprs, tprs)], axis=0)
    auc_macro = float(auc(grid, mean_tpr))
    parts.append(pd.DataFrame({"curve": "macro", "fpr": grid, "tpr": mean_tpr, "auc": auc_macro}))
    return pd.concat(parts, ignore_index=True), auc_micro, auc_macro


def train_group_predictor(
    features: pd.DataFrame,
    groups: pd.Series,
    *,
    seed: int = 0,
    test_size: float = 0.2,
    grid: dict[str, list[Any]] | None = None,
    cv: int = 5,
    max_iter: int = 200,
    n_repeats: int = 5,
    exclude: tuple[str, ...] = ("No-Progression",),
) -> GroupPredictor:
    """Train and evaluate a gradient-boosting classifier of the progression group from baseline features.

    Parameters
    ----------
    features : DataFrame
        Index ``patient_id`` (a :func:`baseline_features` table, or any numeric/categorical columns).
    groups : Series
        Group per patient, indexed by ``patient_id`` (e.g. ``patterns.assignments.set_index("patient_id")
        ["group"]``). Patients in ``exclude`` or without a group or features are left out.
    seed : int
        Seed of the split, the folds, the boosting and the permutations.
    test_size : float
        Share held out for testing (0.2 = the paper's 4:1).
    grid : dict, optional
        Hyper-parameter grid of ``HistGradientBoostingClassifier`` (default :data:`DEFAULT_GRID`).
    cv : int
        Folds of the stratified cross-validation of the grid search (scored by macro F1).
    max_iter : int
        Boosting iterations (with early stopping on a 10% validation split of each training set).
    n_repeats : int
        Repeats of the permutation importance.

    Returns
    -------
    GroupPredictor

    Raises
    ------
    DataError
        Fewer than 2 groups, or a group too small to be split and cross-validated.
    ConfigError
        ``test_size`` not in (0, 1), ``cv`` < 2.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
    from threadpoolctl import threadpool_limits

    if not 0 < float(test_size) < 1:
        raise ConfigError(f"test_size = {test_size!r}; must be between 0 and 1 (0.2 = a 4:1 split)")
    if int(cv) < 2:
        raise ConfigError(f"cv = {cv!r}; must be >= 2")
    y_all = groups.copy()
    y_all.index = y_all.index.astype(str)
    feats = features.copy()
    feats.index = feats.index.astype(str)
    y_all = y_all[y_all.notna() & ~y_all.astype(str).isin(exclude)].astype(str)
    ids = sorted(set(y_all.index) & set(feats.index))
    if len(ids) < len(y_all):
        warnings.warn(f"{len(y_all) - len(ids)} patient(s) with a group have no features and are left out",
                      DataWarning, stacklevel=2)
    y = y_all.loc[ids]
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataError(f"groups: {len(counts)} group(s) to predict; need at least 2", code="too-few")
    need = int(np.ceil(cv / (1 - test_size))) + 1
    small = counts[counts < need]
    if len(small):
        raise DataError(f"groups: {', '.join(f'{g} ({n})' for g, n in small.items())} too small for a {test_size:g} "
                        f"test split and {cv}-fold CV (need >= {need} patients each); merge or drop them",
                        code="too-few")
    categories = {c: [str(v) for v in feats[c].cat.categories] for c in feats.columns
                  if isinstance(feats[c].dtype, pd.CategoricalDtype)}
    columns = [str(c) for c in feats.columns]
    x = _align(feats.loc[ids], columns, categories)
    classes = sorted(counts.index)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.to_numpy(), test_size=test_size, stratify=y.to_numpy(),
                                              random_state=seed)
    base = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=int(max_iter),
                                          early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
                                          random_state=seed)
    grid = dict(DEFAULT_GRID if grid is None else grid)
    search = GridSearchCV(base, grid, scoring="f1_macro", cv=StratifiedKFold(int(cv), shuffle=True, random_state=seed),
                          n_jobs=1, refit=True)
    # one thread: HistGradientBoosting's OpenMP threads spin-wait on a busy machine (see cluster.py)
    with threadpool_limits(1):
        search.fit(x_tr, y_tr)
        model = search.best_estimator_
        pred = model.predict(x_te)
        proba = model.predict_proba(x_te)
        imp = permutation_importance(model, x_te, y_te, scoring="f1_macro", n_repeats=int(n_repeats),
                                     random_state=seed, n_jobs=1)
    order = [list(model.classes_).index(c) for c in classes]
    proba = proba[:, order]
    roc, auc_micro, auc_macro = _roc_table(y_te, proba, classes)
    train_counts = pd.Series(y_tr).value_counts()
    majority = sorted(train_counts.index[train_counts == train_counts.max()])[0]  # most common training group
    maj_pred = np.full(len(y_te), str(majority))
    rows = [
        ("accuracy", accuracy_score(y_te, pred)),
        ("precision_macro", precision_score(y_te, pred, average="macro", zero_division=0)),
        ("recall_macro", recall_score(y_te, pred, average="macro", zero_division=0)),
        ("f1_macro", f1_score(y_te, pred, average="macro", zero_division=0)),
        ("auc_micro", auc_micro), ("auc_macro", auc_macro),
        ("majority_accuracy", accuracy_score(y_te, maj_pred)),
        ("majority_f1_macro", f1_score(y_te, maj_pred, average="macro", zero_division=0)),
        ("cv_f1_macro", search.best_score_), ("n_train", len(y_tr)), ("n_test", len(y_te)),
    ]
    metrics = pd.DataFrame(rows, columns=["metric", "value"]).astype({"value": float})
    cm = confusion_matrix(y_te, pred, labels=classes)
    confusion = pd.DataFrame([(t, p, int(cm[i, j])) for i, t in enumerate(classes) for j, p in enumerate(classes)],
                             columns=["true_group", "predicted_group", "n"])
    importance = pd.DataFrame({"feature": columns, "importance_mean": imp.importances_mean,
                               "importance_sd": imp.importances_std})
    importance = importance.sort_values(["importance_mean", "feature"], ascending=[False, True]).reset_index(drop=True)
    res = search.cv_results_
    cv_results = pd.DataFrame({"params": [str(p) for p in res["params"]], "mean_f1_macro": res["mean_test_score"],
                               "sd_f1_macro": res["std_test_score"], "rank": res["rank_test_score"]})
    meta = {"seed": int(seed), "test_size": float(test_size), "cv": int(cv), "grid": {k: list(v) for k, v in grid.items()},
            "max_iter": int(max_iter), "excluded_groups": list(exclude), "versions": _versions()}
    return GroupPredictor(model=model, feature_columns=columns, categories=categories, classes=classes,
                          metrics=metrics, confusion=confusion, roc=roc, importance=importance,
                          best_params=dict(search.best_params_), cv_results=cv_results, meta=meta)
