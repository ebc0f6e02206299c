"""The prediction section of the report: ROC, confusion matrix, importance, metrics and the skipped note."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lesionatlas import pipeline
from lesionatlas.report.document import Facts, Figure, Note, Table, render_html
from lesionatlas.report.sections import prediction

FIGURES = {"figS11_roc_curves", "prediction_confusion_matrix", "prediction_feature_importance"}
TABLES = {"prediction_metrics", "prediction_by_group", "tableS4_hyperparameters", "prediction_cv_results",
          "prediction_features_by_group"}


@dataclass
class _Stage:
    name: str
    status: str
    reason: str = ""
    seconds: float | None = None
    warnings: tuple[str, ...] = ()


@dataclass
class _FakeRun:
    """A run view whose stage records can be changed; results are loaded from a real run when done."""

    real: Any
    status: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.real.out

    @property
    def config(self) -> Any:
        return self.real.config

    @property
    def stages(self) -> tuple[_Stage, ...]:
        return tuple(self[r.name] for r in self.real.stages)

    def __getitem__(self, name: str) -> _Stage:
        if name in self.status:
            status, reason = self.status[name]
            return _Stage(name, status, reason)
        record = self.real[name]
        return _Stage(name, record.status, record.reason)

    def load(self, name: str) -> Any:
        return self.real.load(name) if self[name].status == "done" else None


@pytest.fixture(scope="module")
def run(base_run):
    result = pipeline.open_run(base_run)
    assert result["predictor"].status == "done", result["predictor"].reason
    return result


@pytest.fixture(scope="module")
def predictor(run):
    return run.load("predictor")


@pytest.fixture(scope="module")
def section(run):
    sections = prediction.build(run)
    assert len(sections) == 1
    yield sections[0]
    for block in sections[0].blocks:
        if isinstance(block, Figure):
            block.figure.clear()


def _block(section, name):
    found = [b for b in section.blocks if isinstance(b, (Figure, Table)) and b.name == name]
    assert len(found) == 1, name
    return found[0]


def _percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def test_builder_on_base_run(section):
    assert section.id == "prediction"
    assert section.title == "Predicting the progression pattern from baseline data"
    names = {b.name for b in section.blocks if isinstance(b, Figure)}
    assert names == FIGURES
    assert {b.name for b in section.blocks if isinstance(b, Table)} == TABLES
    assert not [b for b in section.blocks if isinstance(b, Note) and b.kind == "skipped"]
    for block in section.blocks:
        if isinstance(block, Figure):
            ax = block.figure.axes[0]
            assert ax.get_title()
            assert ax.get_xlabel()
            assert ax.get_ylabel() or block.name == "prediction_feature_importance"  # feature names say it
            assert ax.lines or ax.patches or ax.images
            w, h = block.figure.get_size_inches()
            assert 6 <= w <= 11
        if isinstance(block, Table):
            assert not block.frame.empty
            assert block.source.startswith("predictor/")
    page = render_html([section], title="t")
    assert page.count("<img ") == len(FIGURES)


def test_roc_legend_auc_equals_tables(section, predictor):
    ax = _block(section, "figS11_roc_curves").figure.axes[0]
    legend = {m.group(1): float(m.group(2)) for t in ax.get_legend().get_texts()
              if (m := re.fullmatch(r"(.+) \(AUC (\d\.\d\d)\)", t.get_text()))}
    roc = predictor.roc.groupby("curve")["auc"].first()
    for group in predictor.classes:
        assert legend[group] == pytest.approx(round(float(roc[group]), 2), abs=1e-9)
    metrics = predictor.metrics.set_index("metric")["value"]
    assert legend["macro-average"] == pytest.approx(round(float(metrics["auc_macro"]), 2), abs=1e-9)
    assert legend["micro-average"] == pytest.approx(round(float(metrics["auc_micro"]), 2), abs=1e-9)
    # one curve per group, plus the two averages and the chance line
    assert len(ax.lines) == len(predictor.classes) + 3
    per = _block(section, "prediction_by_group").frame.set_index("group")
    np.testing.assert_allclose(per.loc[predictor.classes, "auc"], roc[predictor.classes])


def test_confusion_counts_equal_table(section, predictor):
    ax = _block(section, "prediction_confusion_matrix").figure.axes[0]
    shown = {}
    for text in ax.texts:
        x, y = text.get_position()
        count, percent = text.get_text().split("\n")
        shown[(predictor.classes[int(round(y))], predictor.classes[int(round(x))])] = (int(count), percent)
    k = len(predictor.classes)
    assert len(shown) == k * k
    table = predictor.confusion.set_index(["true_group", "predicted_group"])["n"]
    totals = predictor.confusion.groupby("true_group")["n"].sum()
    for (true, pred), (count, percent) in shown.items():
        assert count == table[(true, pred)]
        assert percent == f"{100 * table[(true, pred)] / totals[true]:.0f}%"
    assert [t.get_text() for t in ax.get_xticklabels()] == predictor.classes
    assert [t.get_text().split(" (n=")[0] for t in ax.get_yticklabels()] == predictor.classes
    per = _block(section, "prediction_by_group").frame.set_index("group")
    assert per["n_test"].sum() == int(predictor.metric("n_test"))


def test_importance_order_equals_table(section, predictor):
    ax = _block(section, "prediction_feature_importance").figure.axes[0]
    top = predictor.importance.head(prediction.TOP_FEATURES)
    # barh draws bottom-up: the first row of the table is the top bar
    labels = [t.get_text() for t in ax.get_yticklabels()][::-1]
    assert labels == [prediction.feature_label(f) for f in top["feature"]]
    widths = [p.get_width() for p in ax.patches][::-1]
    np.testing.assert_allclose(widths, top["importance_mean"])
    from matplotlib.container import BarContainer

    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 1 and bars[0].errorbar is not None  # SD error bars
    segments = bars[0].errorbar.lines[2][0].get_segments()[::-1]
    np.testing.assert_allclose([s[1][0] - s[0][0] for s in segments], 2 * top["importance_sd"], atol=1e-12)


def test_metrics_table_and_baseline_note(section, predictor):
    from sklearn.metrics import balanced_accuracy_score

    frame = _block(section, "prediction_metrics").frame.set_index("metric")
    labels = prediction._METRIC_LABELS
    metrics = predictor.metrics.set_index("metric")["value"]
    for key in ("accuracy", "precision_macro", "f1_macro", "auc_macro", "auc_micro", "n_train", "n_test"):
        assert frame.loc[labels[key], "predictor"] == pytest.approx(metrics[key])
    assert frame.loc[labels["accuracy"], "majority_class"] == pytest.approx(metrics["majority_accuracy"])
    assert frame.loc[labels["f1_macro"], "majority_class"] == pytest.approx(metrics["majority_f1_macro"])
    rows = predictor.confusion.loc[predictor.confusion.index.repeat(predictor.confusion["n"])]
    balanced = balanced_accuracy_score(rows["true_group"], rows["predicted_group"])
    assert frame.loc[labels["balanced_accuracy"], "predictor"] == pytest.approx(balanced)
    assert frame.loc[labels["balanced_accuracy"], "predictor"] == pytest.approx(metrics["recall_macro"])
    note = next(b for b in section.blocks if isinstance(b, Note))
    acc, base = metrics["accuracy"], metrics["majority_accuracy"]
    assert f"({100 * acc:.0f}%, 95% CI" in note.text
    assert f"right for {100 * base:.0f}%" in note.text
    if acc > base:
        assert f"{100 * (acc - base):.0f} percentage points better" in note.text
    else:
        assert "no better than" in note.text
    facts = dict(next(b for b in section.blocks if isinstance(b, Facts)).items)
    assert facts["ROC AUC, macro-average (test)"] == f"{metrics['auc_macro']:.2f}"
    assert _percent(facts["Majority-class accuracy"]) == pytest.approx(round(base, 2))


def test_hyperparameters_and_cv_tables(section, predictor):
    hyper = _block(section, "tableS4_hyperparameters").frame
    for name, value in predictor.best_params.items():
        row = hyper[hyper["setting"] == prediction._param_label(name)]
        assert row["value"].tolist() == [str(value)]
        assert row["how_chosen"].str.startswith("grid search").all()
    cv = _block(section, "prediction_cv_results")
    assert cv.frame["rank"].is_monotonic_increasing
    assert cv.max_rows == prediction.CV_ROWS
    assert len(cv.frame) == len(predictor.cv_results)
    best = cv.frame.iloc[0]
    for name, value in predictor.best_params.items():
        assert best[name] == value
    assert best["mean_f1_macro"] == pytest.approx(predictor.metric("cv_f1_macro"))


def test_features_by_group_counts(section, run, predictor):
    frame = _block(section, "prediction_features_by_group").frame
    features = pd.read_csv(Path(run.out) / "predictor" / "features.csv", dtype={"patient_id": str})
    groups = run.load("patterns").assignments.set_index("patient_id")["group"]
    groups = groups[groups.isin(predictor.classes) & groups.index.isin(features["patient_id"])]
    counts = frame.set_index("feature").loc["Patients (n)"]
    for group in predictor.classes:
        assert int(counts[group].replace(",", "")) == int((groups == group).sum())
    assert int(predictor.metric("n_train") + predictor.metric("n_test")) == len(groups)
    top = predictor.importance["feature"].head(prediction.FEATURES_BY_GROUP)
    assert frame["feature"].tolist()[1:] == [prediction.feature_label(f) for f in top]


def test_feature_labels():
    assert prediction.feature_label("n_lesions_lymph_node_distal") == "Lymph node (distal) lesions (n)"
    assert prediction.feature_label("has_liver") == "Liver metastasis (yes/no)"
    assert prediction.feature_label("baseline_volume_sum_mm3").endswith("(mm³)")
    assert prediction.feature_label("some_new_column") == "Some new column"


@pytest.mark.parametrize("status,reason", [
    ("skipped", "switched off (predictor.enabled = false)"),
    ("skipped", "31 patient(s) have a pattern group; the predictor needs at least 50 (predictor.min_patients)"),
    ("not run", ""),
])
def test_skipped_note(run, status, reason):
    fake = _FakeRun(run, {"predictor": (status, reason)})
    sections = prediction.build(fake)
    assert len(sections) == 1 and sections[0].id == "prediction"
    blocks = sections[0].blocks
    assert not [b for b in blocks if isinstance(b, (Figure, Table))]
    (note,) = blocks
    assert note.kind == "skipped" and "predictor" in note.text
    assert (reason or status) in note.text


def test_without_patterns_leaves_out_group_table(run):
    fake = _FakeRun(run, {"patterns": ("failed", "boom")})
    (section,) = prediction.build(fake)
    names = {b.name for b in section.blocks if isinstance(b, (Figure, Table))}
    assert names == FIGURES | TABLES - {"prediction_features_by_group"}
    assert any(isinstance(b, Note) and b.kind == "warning" and "patterns" in b.text for b in section.blocks)
    for block in section.blocks:
        if isinstance(block, Figure):
            block.figure.clear()
