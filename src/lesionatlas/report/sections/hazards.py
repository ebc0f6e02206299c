"""Report section: Figure 3 — organ-specific lesion response and progression (Zhou et al. 2024, Fig. 3).

From the hazards stage (:class:`lesionatlas.hazards.OrganHazards`: random-intercept Cox models of lesion
response and of lesion progression, covariates chosen by likelihood-ratio tests) and the phenotypes
stage (:class:`lesionatlas.phenotypes.OrganPhenotypes`):

- ``fig3a_response_hazard_ratios``, ``fig3b_progression_hazard_ratios``: forest plots of the organ hazard
  ratios (95% CI, log scale, reference organ marked, lesion counts and p-values printed);
- ``fig3c_phenotype_quadrant``: each organ at (response HR, progression HR), the phenotype thresholds as
  lines, organs coloured by phenotype;
- ``fig3d_anatomical_chart``: the organs on a stylised body, coloured by phenotype, sized by lesions
  (positions: :data:`lesionatlas.phenotypes.ORGAN_POSITIONS`);
- ``fig3e_response_by_treatment``, ``fig3f_progression_by_treatment``: the hazard ratios within each
  treatment group (when the stage fitted stratified models);
- tables: the hazard ratios of each model, the covariates kept and every step of their selection, the
  organ likelihood-ratio tests, the model facts, the phenotypes and the stratified hazard ratios.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...data.organs import ORGAN_LABELS
from ...phenotypes import PHENOTYPE_COLORS
from ..document import PALETTE, Section, format_value, new_figure

SECTION_ID = "hazards"
TITLE = "Figure 3 — Organ-specific response and progression"
MODELS = ("response", "progression")
#: figure letter and colour of each model's forest plot and stratified plot
_LETTER = {"response": ("a", "e"), "progression": ("b", "f")}
_COLOUR = {"response": PALETTE[0], "progression": PALETTE[3]}
_WHAT = {"response": "lesion response (target and non-target lesions)",
         "progression": "lesion progression (all lesions, new ones included)"}


def organ_name(organ: Any) -> str:
    """The organ as words (``lymph_node_distal`` -> ``Lymph node (distal)``); unknown codes as they are."""
    return ORGAN_LABELS.get(str(organ), str(organ))


def _in_sentence(organ: Any) -> str:
    """The organ's name inside a sentence: first letter in lower case unless an acronym starts it."""
    name = organ_name(organ)
    return name if name[1:2].isupper() else name[:1].lower() + name[1:]


def build(run: Any) -> list[Section]:
    """The Figure 3 section of ``run``: organ hazard ratios, phenotypes and treatment-stratified hazards.

    Parameters
    ----------
    run : RunView
        A finished run; uses its ``hazards`` and ``phenotypes`` stages.

    Returns
    -------
    list of Section
        One section, id ``hazards``; a ``skipped`` note instead of the figures of a stage that did not run.
    """
    section = Section(SECTION_ID, TITLE, intro=(
        "Which organs' lesions respond, and which progress, sooner than others. Two random-intercept Cox "
        "models, Surv(time, event) ~ organ + covariates + (1 | patient): one for lesion response (volume "
        "down 20% from baseline, or PR/CR of a non-target lesion), one for lesion progression (volume up 30% "
        "or 200 mm³ from nadir, PD of a non-target lesion, or a new lesion). Covariates were chosen among "
        "the candidates by likelihood-ratio tests. Organs are then placed in four phenotypes by their two "
        "hazard ratios (high or low response × high or low progression)."))
    hazards_stage = run["hazards"]
    if hazards_stage.status != "done":
        section.skipped("hazards", _why(hazards_stage))
        phen = run["phenotypes"]
        if phen.status != "done":
            section.skipped("phenotypes", _why(phen))
        return [section]
    oh = run.load("hazards")
    models = [m for m in MODELS if (oh.hazard_ratios["model"] == m).any()]
    reference = _in_sentence(oh.reference_organ)
    section.facts(_facts(oh, models))
    asked = oh.parameters.get("reference_organ")
    if asked and asked != oh.reference_organ:
        section.note(f"The reference organ asked for ({organ_name(asked)}) could not be used; hazard ratios "
                     f"are against {reference} lesions (see the notes below).", "warning")

    # ---- Fig. 3a, 3b: forest plots and their tables
    for m in models:
        section.figure(f"fig3{_LETTER[m][0]}_{m}_hazard_ratios",
                       f"Figure 3{_LETTER[m][0]} — Lesion {m}: hazard ratio by organ",
                       forest_figure(oh, m), _forest_caption(oh, m))
    for m in models:
        section.table(f"table3_{m}_hazard_ratios", f"Hazard ratios of lesion {m} by organ (vs {reference})",
                      hazard_ratio_table(oh, m), _p_kind(oh) + " Counts are those of the final model's rows.",
                      max_rows=60, source="hazards/hazard_ratios.csv")
    if len(oh.covariates):
        section.table("table3_covariates", "Covariates kept by the selection, in the final models",
                      covariate_table(oh), "Hazard ratio per unit of a numeric covariate, or of each level "
                      "against the reference level of a categorical one; Wald p-values.",
                      source="hazards/covariates.csv")
    else:
        section.note("No candidate covariate was kept by the selection: the final models have the organ only.")
    if len(oh.organ_tests):
        section.table("table3_organ_tests", "Organ effect and organ × treatment-group interaction "
                      "(likelihood-ratio tests)", organ_test_table(oh),
                      "organ: the organ block against a model without it; organ:<group>: the organ × group "
                      "interaction against the model with organ, covariates and group.",
                      source="hazards/organ_tests.csv")

    # ---- Fig. 3c, 3d: phenotypes
    phen_stage = run["phenotypes"]
    if phen_stage.status != "done":
        section.skipped("phenotypes", _why(phen_stage))
    else:
        ph = run.load("phenotypes")
        sizes = lesion_counts(oh)
        section.figure("fig3c_phenotype_quadrant", "Figure 3c — Organ phenotypes: response × progression "
                       "hazard ratios", quadrant_figure(ph, sizes), _quadrant_caption(ph))
        section.figure("fig3d_anatomical_chart", "Figure 3d — Anatomical chart of the organ phenotypes",
                       anatomy_figure(ph, sizes),
                       "Each organ at a schematic place on the body, coloured by its phenotype (faded: a 95% CI "
                       "crosses a threshold), dot area proportional to its number of lesions (progression "
                       "model: every lesion). Organs without a place on the body are listed beside it.")
        section.table("table3_phenotypes", "Organ phenotypes", phenotype_table(ph, sizes),
                      "high/low: hazard ratio above/not above the threshold; uncertain: a 95% CI contains "
                      "the threshold.", max_rows=60, source="phenotypes/phenotypes.csv")

    # ---- Fig. 3e, 3f: stratified by treatment group
    strat_models = [m for m in models if (oh.stratified["model"] == m).any()]
    if strat_models:
        group = str(oh.parameters.get("stratify_by") or "group").replace("_", " ")
        for m in strat_models:
            section.figure(f"fig3{_LETTER[m][1]}_{m}_by_treatment",
                           f"Figure 3{_LETTER[m][1]} — Lesion {m}: hazard ratio by organ within each {group}",
                           stratified_figure(oh, m), _stratified_caption(oh, m))
        section.table("table3_stratified_hazard_ratios", f"Hazard ratios by organ within each {group}",
                      stratified_table(oh), _p_kind(oh), max_rows=80, source="hazards/stratified.csv")
    else:
        why = ("no stratifying column was set (hazards.stratify_by)" if not oh.parameters.get("stratify_by")
               else "no stratum could be fitted")
        section.note(f"No treatment-stratified hazard ratios (Fig. 3e,f): {why}; the pipeline also leaves them "
                     "out when the data have fewer than two treatment groups.")

    # ---- the selection and the models
    if len(oh.selection_steps):
        section.table("table3_selection_steps", "Covariate selection, step by step (likelihood-ratio tests)",
                      selection_table(oh), f"{str(oh.parameters.get('selection', 'forward')).capitalize()} "
                      f"selection, a covariate kept when p < {oh.parameters.get('alpha', 0.05)}; n_lesions: "
                      "rows compared (complete for both models).", max_rows=80,
                      source="hazards/selection_steps.csv")
    section.table("table3_models", "Model facts", model_table(oh),
                  "Random-effect variance: variance of the patient random intercept (95% profile-likelihood "
                  "interval for the pooled models); log-likelihood: Laplace-integrated partial likelihood.",
                  source="hazards/models.csv")
    if len(oh.dropped_organs):
        dropped = oh.dropped_organs.assign(organ=[organ_name(o) for o in oh.dropped_organs["organ"]])
        section.table("table3_dropped_organs", "Organs left out of a model (no events)", dropped,
                      source="hazards/dropped_organs.csv")
    if oh.notes:
        section.note("Notes of the hazards stage: " + "; ".join(oh.notes), "warning")
    return [section]


# ------------------------------------------------------------------------------------------ figures
def forest_figure(oh: Any, model: str) -> Any:
    """Fig. 3a/3b: the organ hazard ratios of one model as a forest plot (HR, CI and p printed)."""
    n = int((oh.hazard_ratios["model"] == model).sum())
    fig, ax = new_figure(9.0, 0.3 * n + 1.7)
    oh.plot_forest(model, ax=ax, labels=ORGAN_LABELS, color=_COLOUR[model])
    _readable(ax)
    return fig


def stratified_figure(oh: Any, model: str) -> Any:
    """Fig. 3e/3f: the organ hazard ratios of one model within each treatment group."""
    n = int(oh.stratified.loc[oh.stratified["model"] == model, "organ"].nunique())
    fig, ax = new_figure(8.0, 0.34 * n + 1.9)
    oh.plot_stratified(model, ax=ax, labels=ORGAN_LABELS, colors=PALETTE)
    _readable(ax)
    return fig


def quadrant_figure(ph: Any, sizes: dict[str, float] | None = None) -> Any:
    """Fig. 3c: response HR against progression HR, thresholds as lines, organs coloured by phenotype."""
    fig, ax = new_figure(8.6, 6.6)
    ph.plot_quadrant(ax, sizes=sizes, labels=ORGAN_LABELS)
    _readable(ax)
    return fig


def anatomy_figure(ph: Any, sizes: dict[str, float] | None = None) -> Any:
    """Fig. 3d: the organs on a stylised body, coloured by phenotype and sized by their lesion counts."""
    fig, ax = new_figure(10.5, 6.4)
    ph.plot_anatomy(ax, sizes=sizes, labels=ORGAN_LABELS)
    ax.set_title("Organ phenotypes on the body", fontsize=11)
    return fig


def _readable(ax: Any) -> None:
    """Font sizes of at least 8 pt on the axes (ticks 9, labels 10, title 11)."""
    ax.tick_params(labelsize=9)
    ax.xaxis.label.set_fontsize(10)
    ax.yaxis.label.set_fontsize(10)
    ax.title.set_fontsize(11)


# ------------------------------------------------------------------------------------------ tables
def hazard_ratio_table(oh: Any, model: str) -> pd.DataFrame:
    """One model's organ rows, highest hazard ratio first: organ (words), HR, CI, p, lesions, events."""
    t = oh.hazard_ratios[oh.hazard_ratios["model"] == model]
    t = t.sort_values("hazard_ratio", ascending=False, kind="stable")
    out = t[["organ", "hazard_ratio", "ci_lower", "ci_upper", "p_value", "n_lesions", "n_events", "reference"]]
    return out.assign(organ=[organ_name(o) for o in out["organ"]]).reset_index(drop=True)


def covariate_table(oh: Any) -> pd.DataFrame:
    """The kept covariates: model, covariate, term, HR, CI, p."""
    return oh.covariates[["model", "covariate", "term", "hazard_ratio", "ci_lower", "ci_upper",
                          "p_value"]].reset_index(drop=True)


def selection_table(oh: Any) -> pd.DataFrame:
    """Every likelihood-ratio test of the selection."""
    return oh.selection_steps[["model", "step", "term", "lrt_statistic", "df", "p_value", "decision",
                               "n_lesions", "reason"]].reset_index(drop=True)


def organ_test_table(oh: Any) -> pd.DataFrame:
    """The organ block and organ x group interaction LRTs."""
    return oh.organ_tests[["model", "test", "lrt_statistic", "df", "p_value", "n_lesions",
                           "n_events"]].reset_index(drop=True)


def model_table(oh: Any) -> pd.DataFrame:
    """Per fitted model and stratum: patients, lesions, events, random-effect variance, log-likelihood."""
    return oh.models[["model", "stratum", "n_patients", "n_lesions", "n_events", "random_effect_variance",
                      "random_effect_ci_lower", "random_effect_ci_upper", "loglik_integrated",
                      "covariates"]].reset_index(drop=True)


def stratified_table(oh: Any) -> pd.DataFrame:
    """The hazard ratios of the stratified models, organ as words."""
    t = oh.stratified[["model", "group", "organ", "hazard_ratio", "ci_lower", "ci_upper", "p_value",
                       "n_lesions", "n_events", "reference"]]
    return t.assign(organ=[organ_name(o) for o in t["organ"]]).reset_index(drop=True)


def phenotype_table(ph: Any, sizes: dict[str, float] | None = None) -> pd.DataFrame:
    """Organ (words), the two HRs with CIs, levels, phenotype, uncertain, lesions; by phenotype then HR."""
    t = ph.table.copy()
    t["n_lesions"] = [sizes.get(o) if sizes else None for o in t["organ"]]
    t["organ"] = [organ_name(o) for o in t["organ"]]
    order = {p: k for k, p in enumerate(PHENOTYPE_COLORS)}
    t = t.assign(_o=t["phenotype"].map(order)).sort_values(["_o", "response_hr"], ascending=[True, False],
                                                           kind="stable")
    return t[["organ", "phenotype", "response_hr", "response_ci_lower", "response_ci_upper", "progression_hr",
              "progression_ci_lower", "progression_ci_upper", "uncertain", "n_lesions"]].reset_index(drop=True)


def lesion_counts(oh: Any) -> dict[str, int]:
    """Lesions per organ in the progression model (every lesion), or in the response model without it."""
    t = oh.hazard_ratios
    for m in ("progression", "response"):
        part = t[t["model"] == m]
        if len(part):
            return {str(o): int(n) for o, n in zip(part["organ"], part["n_lesions"], strict=True)}
    return {}


# ------------------------------------------------------------------------------------------ words
def _why(stage: Any) -> str:
    reason = str(getattr(stage, "reason", "") or "").strip()
    return reason or f"its status is '{stage.status}'"


def _p(value: Any) -> str:
    v = float(value)
    if not np.isfinite(v):
        return "not available"
    if v < 1e-300:
        return "< 1e-300"
    return f"{v:.2g}" if v >= 1e-3 else f"{v:.1e}"


def _p_phrase(value: Any) -> str:
    text = _p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _p_kind(oh: Any) -> str:
    if oh.parameters.get("organ_p_value") == "lrt":
        return "p: one likelihood-ratio test per organ (the organ merged into the reference)."
    return "p: Wald test of the organ's coefficient (coxme's printout)."


def _organ_test(oh: Any, model: str, test: str = "organ") -> Any:
    t = oh.organ_tests
    row = t[(t["model"] == model) & (t["test"] == test)]
    return None if row.empty else row.iloc[0]


def _facts(oh: Any, models: list[str]) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = [("reference organ", organ_name(oh.reference_organ))]
    pooled = oh.models[oh.models["stratum"] == "all"].set_index("model")
    for m in models:
        if m in pooled.index:
            r = pooled.loc[m]
            items.append((f"{m}: lesions / events", f"{format_value(r['n_lesions'])} / "
                                                     f"{format_value(r['n_events'])}"))
            covs = r["covariates"] if isinstance(r["covariates"], str) and r["covariates"] else "none"
            items.append((f"{m}: covariates kept", covs.replace(";", ", ")))
        test = _organ_test(oh, m)
        if test is not None:
            items.append((f"{m}: organ effect, LRT p", _p(test["p_value"])))
    if len(pooled):
        items.append(("patients", format_value(pooled["n_patients"].max())))
    return items


def _forest_caption(oh: Any, model: str) -> str:
    pooled = oh.models[(oh.models["model"] == model) & (oh.models["stratum"] == "all")]
    covs = "no covariate"
    extra = ""
    if len(pooled):
        r = pooled.iloc[0]
        c = r["covariates"] if isinstance(r["covariates"], str) else ""
        covs = "covariates " + c.replace(";", ", ") if c else "no covariate"
        extra = (f" {format_value(r['n_lesions'])} lesions of {format_value(r['n_patients'])} patients, "
                 f"{format_value(r['n_events'])} events; random-intercept variance "
                 f"{format_value(r['random_effect_variance'])}.")
    test = _organ_test(oh, model)
    lrt = (f" Organ effect: likelihood-ratio χ² = {float(test['lrt_statistic']):.1f} on {int(test['df'])} df, "
           f"{_p_phrase(test['p_value'])}." if test is not None else "")
    return (f"Hazard ratio (95% CI, log scale) of {_WHAT[model]} in each organ against "
            f"{_in_sentence(oh.reference_organ)} lesions (grey diamond at 1), from the random-intercept Cox "
            f"model with {covs}; n = lesions in the model. {_p_kind(oh)} Bold: p < 0.05.{extra}{lrt}")


def _quadrant_caption(ph: Any) -> str:
    if ph.threshold == "median":
        where = (f"the median hazard ratio across organs (response {ph.response_threshold:.3g}, progression "
                 f"{ph.progression_threshold:.3g})")
    else:
        where = "hazard ratio 1 (the reference organ)"
    counts = ph.table["phenotype"].value_counts()
    parts = ", ".join(f"{p}: {int(counts.get(p, 0))}" for p in PHENOTYPE_COLORS)
    return (f"Each organ at its response and progression hazard ratios (log scales, thin bars: 95% CIs); the "
            f"dashed lines are the phenotype thresholds at {where}. Colour: phenotype ({parts} organs); faded "
            "dots with a white edge: a 95% CI crosses a threshold. Dot area: number of lesions.")


def _stratified_caption(oh: Any, model: str) -> str:
    test = oh.organ_tests[(oh.organ_tests["model"] == model)
                          & oh.organ_tests["test"].astype(str).str.contains(":")]
    lrt = ""
    if len(test):
        r = test.iloc[0]
        lrt = (f" Organ × group interaction: likelihood-ratio χ² = {float(r['lrt_statistic']):.1f} on "
               f"{int(r['df'])} df, {_p_phrase(r['p_value'])}.")
    group = str(oh.parameters.get("stratify_by") or "group").replace("_", " ")
    groups = sorted(map(str, oh.stratified.loc[oh.stratified["model"] == model, "group"].unique()))
    fitted = (f" Only the {group} '{groups[0]}' could be fitted (see the notes of the hazards stage below)."
              if len(groups) == 1 else "")
    if "covariates_left_out" in oh.stratified:
        sub = oh.stratified[(oh.stratified["model"] == model)
                            & oh.stratified["covariates_left_out"].fillna("").astype(str).ne("")]
        for g, names in sub.groupby("group")["covariates_left_out"].first().items():
            fitted += (f" In '{g}', {', '.join(str(names).split(';'))} could not be estimated (constant or "
                       "collinear within the group) and was left out of its model.")
    return (f"The final {model} model refitted within each {group}: hazard "
            f"ratio (95% CI, log scale) of each organ against {_in_sentence(oh.reference_organ)} lesions of the "
            f"same group; organs in the order of the pooled hazard ratio; n = lesions over the groups.{lrt}"
            f"{fitted}")


__all__ = ["anatomy_figure", "build", "forest_figure", "hazard_ratio_table", "lesion_counts", "organ_name",
           "phenotype_table", "quadrant_figure", "stratified_figure"]
