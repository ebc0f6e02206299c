"""Configuration: frozen dataclasses, one per stage, with the defaults of ``defaults.toml``.

:func:`load_config` reads the shipped ``defaults.toml``, then a user TOML file (only the settings it
changes), then ``overrides`` (a dict of sections, e.g. from command-line options) into a frozen
:class:`Config`; unknown sections and keys, wrong types and values not allowed raise
:class:`~lesionatlas.errors.ConfigError` naming the key and what is allowed. :meth:`Config.to_toml`
writes the effective configuration back (``load_config`` reads it to an equal ``Config``).

This module is the bottom layer: it imports no stage. The pipeline maps each section onto its stage's
spec (``TGIModel`` fields, ``EventRules`` fields, ``fit_organ_hazards`` arguments, ...).
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

#: Short axis = long axis / AXIS_RATIO (Zhou et al. 2024, ref. 56).
DEFAULT_AXIS_RATIO = 1.31
#: Volumes below this (mm3) are below the quantification limit (Zhou et al. 2024, ref. 59).
DEFAULT_LIMIT_MM3 = 200.0


@dataclass(frozen=True)
class CohortConfig:
    """How diameters become volumes.

    Parameters
    ----------
    axis_ratio : float
        Ratio of the longest diameter to the short axis, ``S = L / axis_ratio``.
    limit_mm3 : float
        Quantification limit; measured volumes below it are flagged ``below_limit``.
    format, organ_map, evaluator, sdtm_suffix, monolix_id, monolix_time, monolix_dv, monolix_cens, monolix_limit : str
        How the pipeline reads its input (``""``: not set; see ``defaults.toml``).
    """

    axis_ratio: float = DEFAULT_AXIS_RATIO
    limit_mm3: float = DEFAULT_LIMIT_MM3
    format: str = ""
    organ_map: str = ""
    evaluator: str = ""
    sdtm_suffix: str = ""
    monolix_id: str = ""
    monolix_time: str = ""
    monolix_dv: str = ""
    monolix_cens: str = ""
    monolix_limit: str = ""

    def reader_options(self) -> dict[str, str]:
        """Reader keyword arguments of ``read_cohort`` that are set (Monolix columns, SDTM options)."""
        opts = {"id": self.monolix_id, "time": self.monolix_time, "dv": self.monolix_dv, "cens": self.monolix_cens,
                "limit": self.monolix_limit, "evaluator": self.evaluator, "suffix": self.sdtm_suffix}
        return {k: v for k, v in opts.items() if v}

    def __post_init__(self) -> None:
        if not self.axis_ratio > 0:
            raise ConfigError(f"axis_ratio must be > 0, got {self.axis_ratio!r}")
        if not self.limit_mm3 >= 0:
            raise ConfigError(f"limit_mm3 must be >= 0, got {self.limit_mm3!r}")


@dataclass(frozen=True)
class SelectionConfig:
    """The paper's inclusion criteria.

    Parameters
    ----------
    require_target_measurements : bool
        Exclude patients without a target-lesion longitudinal measurement (at least ``min_target_scans``
        scans of one target lesion).
    min_target_scans : int
        Scans a target lesion needs to count as longitudinal.
    max_baseline_days_before : float
        Exclude patients whose baseline scan is more than this many days before day 0 (12 weeks).
    """

    require_target_measurements: bool = True
    min_target_scans: int = 2
    max_baseline_days_before: float = 84.0

    def __post_init__(self) -> None:
        if self.min_target_scans < 1:
            raise ConfigError(f"min_target_scans must be >= 1, got {self.min_target_scans!r}")
        if not self.max_baseline_days_before >= 0:
            raise ConfigError(
                f"max_baseline_days_before must be >= 0, got {self.max_baseline_days_before!r}"
            )


# ============================================================================================ the run
DISEASES: tuple[str, ...] = ("mcrc", "hnscc", "custom")
#: Reference organ of the organ hazard models per disease (``hazards.reference_organ = "auto"``).
DISEASE_REFERENCE_ORGAN: dict[str, str] = {"mcrc": "abdominal", "hnscc": "head_neck", "custom": "abdominal"}
#: Candidate covariates of the organ hazard models per disease (``hazards.candidates = "auto"``): the
#: paper's for mCRC, its external validation's for head and neck (treatment, age, radiation, body surface
#: area); ``custom`` offers every baseline column the canonical patients table may have.
DISEASE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "mcrc": ("treatment", "age", "bmi", "sex", "race", "prior_surgery", "line"),
    "hnscc": ("treatment", "age", "prior_radiation", "bsa"),
    "custom": ("treatment", "age", "bmi", "bsa", "sex", "race", "prior_surgery", "prior_radiation", "line"),
}
#: Organ named in the pattern groups (``<Organ>-First``) per disease (``patterns.naming_organ = "auto"``).
DISEASE_NAMING_ORGAN: dict[str, str] = {"mcrc": "liver", "hnscc": "lung", "custom": "liver"}


@dataclass(frozen=True)
class RunConfig:
    """The run seed (each stage derives its own stream from it) and the disease preset."""

    seed: int = 0
    disease: str = "mcrc"

    @property
    def preset(self) -> dict[str, Any]:
        """What the disease preset sets: reference organ, candidate covariates, naming organ."""
        return {"reference_organ": DISEASE_REFERENCE_ORGAN[self.disease],
                "candidates": DISEASE_CANDIDATES[self.disease], "naming_organ": DISEASE_NAMING_ORGAN[self.disease]}


@dataclass(frozen=True)
class TGIConfig:
    """Settings of the tumor growth model fit: the fields of ``TGIModel`` (see its docstring)."""

    error_model: str = "proportional"
    censoring: str = "m3"
    baseline_observation: str = "keep"
    covariates: tuple[str, ...] = ()
    covariance: str = "diagonal"
    kg: float = 0.01
    kd: float = 0.01
    f: float = 0.1
    omega_kg: float = 1.0
    omega_kd: float = 1.0
    omega_f: float = 1.0
    a: float = 1.0
    b: float = 0.3
    n_explore: int = 300
    n_smooth: int = 200
    auto_stop: bool = False
    min_explore: int = 150
    stop_tolerance: float = 0.02
    n_burn_in: int = 5
    n_chains: int | str = "auto"
    n_prior_kernel: int = 2
    n_component_kernel: int = 2
    n_joint_kernel: int = 2
    n_independent_kernel: int = 0
    annealing_factor: float = 0.95
    max_relative_residual: float = 3.0
    n_posterior_iter: int = 200
    standard_errors: bool = True
    n_is_draws: int = 1000
    is_defensive: float = 0.2
    is_inflate: float = 1.5
    n_mode_steps: int = 50
    chunk_size: int = 50
    precision: str = "float64"


@dataclass(frozen=True)
class EventsConfig:
    """The event rules (the fields of ``EventRules``) and which individual estimate to use."""

    response_fraction: float = 0.2
    progression_fraction: float = 0.3
    progression_mm3: float | bool = 200.0
    reference: str = "day0"
    response_statuses: tuple[str, ...] = ("CR", "PR", "absent")
    progression_statuses: tuple[str, ...] = ("PD",)
    new_statuses: tuple[str, ...] = ("new",)
    name: str = "paper"
    estimate: str = "mode"


@dataclass(frozen=True)
class HazardsConfig:
    """Arguments of ``fit_organ_hazards`` (and of its ``MixedCox`` spec); ``min_patients`` gates the stage."""

    reference_organ: str = "auto"
    candidates: tuple[str, ...] | str = "auto"
    selection: str = "forward"
    alpha: float = 0.05
    stratify_by: str = "treatment_group"
    organ_p_value: str = "wald"
    ties: str = "efron"
    profile_ci: bool = True
    min_patients: int = 20


@dataclass(frozen=True)
class PhenotypesConfig:
    """Argument of ``classify_organs``."""

    threshold: str = "reference"


@dataclass(frozen=True)
class PatternsConfig:
    """Arguments of ``cluster_sequences`` (``k = 0``: picked by ``rule``); ``min_patients`` gates the stage."""

    encoding: str = "rank"
    k: int = 5
    k_max: int = 15
    rule: str = "elbow_survival"
    n_init: int = 10
    silhouette_sample: int = 2000
    naming: str = "content"
    naming_organ: str = "auto"
    min_patients: int = 20


@dataclass(frozen=True)
class SurvivalConfig:
    """Which outcomes are compared (by pattern group, phenotype group and treatment within group)."""

    outcomes: tuple[str, ...] = ("os", "pfs")
    adjust: str = "holm"
    by_treatment: bool = True
    at_risk_days: tuple[float, ...] = ()


@dataclass(frozen=True)
class PredictorConfig:
    """Arguments of ``train_group_predictor``; ``min_patients`` gates the stage."""

    enabled: bool = True
    test_size: float = 0.2
    cv: int = 5
    max_iter: int = 200
    n_repeats: int = 5
    min_patients: int = 50


@dataclass(frozen=True)
class ReportConfig:
    """The HTML report written at the end of a run (``report.html`` and ``figures/``)."""

    enabled: bool = True
    dpi: int = 110


#: Values allowed for the settings that take one of a few words.
CHOICES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("run", "disease"): DISEASES,
    ("cohort", "format"): ("", "tidy", "monolix", "sdtm"),
    ("tgi", "error_model"): ("proportional", "constant", "combined"),
    ("tgi", "censoring"): ("m3", "drop"),
    ("tgi", "baseline_observation"): ("keep", "drop"),
    ("tgi", "covariance"): ("diagonal", "full"),
    ("tgi", "precision"): ("float64", "float32"),
    ("events", "reference"): ("day0", "first_measurement"),
    ("events", "estimate"): ("mode", "mean"),
    ("hazards", "selection"): ("forward", "backward"),
    ("hazards", "organ_p_value"): ("wald", "lrt"),
    ("hazards", "ties"): ("efron", "breslow"),
    ("phenotypes", "threshold"): ("reference", "median"),
    ("patterns", "encoding"): ("rank", "position_onehot"),
    ("patterns", "rule"): ("elbow_survival", "knee", "silhouette", "bic", "aic", "logrank"),
    ("patterns", "naming"): ("content", "organ_rank"),
}
_LIST_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {("survival", "outcomes"): ("os", "pfs")}
_NONNEGATIVE_INTS = {("patterns", "k"), ("tgi", "n_is_draws"), ("tgi", "n_burn_in"), ("hazards", "min_patients"),
                     ("patterns", "min_patients"), ("predictor", "min_patients"), ("run", "seed")}


@dataclass(frozen=True)
class Config:
    """The whole configuration of a run: one frozen section per stage (defaults: ``defaults.toml``).

    Build it with :func:`load_config`; change it with :meth:`replace`
    (``config.replace(tgi={"n_explore": 40})``).
    """

    run: RunConfig = field(default_factory=RunConfig)
    cohort: CohortConfig = field(default_factory=CohortConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    tgi: TGIConfig = field(default_factory=TGIConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    hazards: HazardsConfig = field(default_factory=HazardsConfig)
    phenotypes: PhenotypesConfig = field(default_factory=PhenotypesConfig)
    patterns: PatternsConfig = field(default_factory=PatternsConfig)
    survival: SurvivalConfig = field(default_factory=SurvivalConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def section(self, name: str) -> Any:
        """One section by name."""
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section [{name}]; sections are {', '.join(SECTIONS)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain values (tuples as lists), section by section."""
        return {name: section_dict(getattr(self, name)) for name in SECTIONS}

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A new Config with some settings changed, checked as :func:`load_config` checks a file."""
        return _build(_merge(self.to_dict(), dict(sections), "replace"))

    def to_toml(self) -> str:
        """The configuration as TOML text (every setting); :func:`load_config` reads it back equal."""
        lines = ["# lesionatlas configuration (every setting; see defaults.toml for what each does)"]
        for name, values in self.to_dict().items():
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"


SECTION_CLASSES: dict[str, type] = {
    "run": RunConfig, "cohort": CohortConfig, "selection": SelectionConfig, "tgi": TGIConfig,
    "events": EventsConfig, "hazards": HazardsConfig, "phenotypes": PhenotypesConfig, "patterns": PatternsConfig,
    "survival": SurvivalConfig, "predictor": PredictorConfig, "report": ReportConfig,
}
SECTIONS: tuple[str, ...] = tuple(SECTION_CLASSES)


def section_dict(section: Any) -> dict[str, Any]:
    """A section's settings as JSON/TOML-ready values (tuples as lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(section, f.name), tuple) else v) for f in fields(section)}


def defaults_path() -> Path:
    """The shipped ``defaults.toml``."""
    return Path(__file__).with_name("defaults.toml")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """The effective configuration: ``defaults.toml``, then the TOML file ``path``, then ``overrides``.

    Parameters
    ----------
    path : path, optional
        A TOML file holding only the settings it changes, under ``[section]`` headers.
    overrides : dict, optional
        ``{section: {key: value}}`` applied last (command-line options).

    Raises
    ------
    ConfigError
        The file is missing or not TOML; a section or key is unknown (the message lists the allowed ones);
        a value has the wrong type or is not allowed.
    """
    with open(defaults_path(), "rb") as fh:
        values = tomllib.load(fh)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file", code="config-not-found")
        try:
            user = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a valid TOML file: {exc}", code="config-syntax") from None
        values = _merge(values, user, str(path))
    if overrides:
        values = _merge(values, {k: dict(v) for k, v in overrides.items()}, "overrides")
    return _build(values)


def _merge(base: dict[str, Any], new: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for name, section in new.items():
        if name not in SECTION_CLASSES:
            raise ConfigError(f"{where}: unknown section [{name}]; allowed sections are {', '.join(SECTIONS)}",
                              code="config-key")
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: [{name}] must be a table of settings, got {section!r}", code="config-key")
        allowed = [f.name for f in fields(SECTION_CLASSES[name])]
        for key, value in section.items():
            if key not in allowed:
                raise ConfigError(f"{where}: unknown key {name}.{key}; allowed keys of [{name}] are "
                                  f"{', '.join(allowed)}", code="config-key")
            out.setdefault(name, {})[key] = value
    return out


def _build(values: Mapping[str, Mapping[str, Any]]) -> Config:
    sections = {}
    for name, cls in SECTION_CLASSES.items():
        given = values.get(name, {})
        defaults = cls()
        kwargs = {f.name: _check(name, f.name, given.get(f.name, getattr(defaults, f.name)), getattr(defaults, f.name))
                  for f in fields(cls)}
        try:
            sections[name] = cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"[{name}] {exc.message}", code="config-value") from None
    return Config(**sections)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _check(section: str, key: str, value: Any, default: Any) -> Any:
    name = f"{section}.{key}"

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{name} must be {expected}, got {value!r} ({_kind(value)})", code="config-value")

    if (section, key) == ("tgi", "n_chains"):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise bad('"auto" or an integer >= 1')
    if (section, key) == ("hazards", "candidates"):
        if value == "auto":
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise bad('"auto" (the disease preset\'s) or a list of column names')
    if (section, key) == ("tgi", "covariates"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad('a list of "param:name" texts, e.g. ["kg:organ", "kg:log_v0"]')
        try:
            return canonical_covariates(value)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc.message.split(': ', 1)[1]}", code="config-value") from None
    if (section, key) == ("report", "dpi"):
        if isinstance(value, int) and not isinstance(value, bool) and 30 <= value <= 600:
            return value
        raise bad("an integer from 30 to 600")
    if (section, key) == ("events", "progression_mm3"):
        if value is False:
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        raise bad("a number > 0, or false to switch the absolute rule off")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if (section, key) in _NONNEGATIVE_INTS and value < 0:
            raise bad("an integer >= 0")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a text (in quotes)")
    elif isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        numeric = key == "at_risk_days"
        for item in value:
            ok = (isinstance(item, (int, float)) and not isinstance(item, bool)) if numeric else isinstance(item, str)
            if not ok:
                raise bad("a list of numbers" if numeric else "a list of texts (in quotes)")
        value = tuple(float(v) for v in value) if numeric else tuple(value)
        allowed = _LIST_CHOICES.get((section, key))
        if allowed is not None:
            odd = [v for v in value if v not in allowed]
            if odd:
                raise ConfigError(f"{name}: {odd} not allowed; allowed values are {', '.join(allowed)}",
                                  code="config-value")
    allowed = CHOICES.get((section, key))
    if allowed is not None and value not in allowed:
        shown = ", ".join(json.dumps(a) for a in allowed)
        raise ConfigError(f"{name} = {value!r} is not allowed; allowed values are {shown}", code="config-value")
    return value


_COVARIATE_PARAMETERS = ("kg", "kd", "f")


def canonical_covariates(value: Any) -> tuple[str, ...]:
    """``{"kg": ["organ"]}`` or ``["kg:organ"]`` as sorted ``"param:name"`` texts (parameters in model
    order, names in the order first given). Raises ``ConfigError`` on an unknown parameter."""
    if isinstance(value, str):
        value = [value]
    pairs: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for param, names in value.items():
            names = [names] if isinstance(names, str) else list(names)
            pairs += [(str(param), str(name)) for name in names]
    else:
        for item in value:
            param, sep, name = str(item).partition(":")
            if not sep or not param.strip() or not name.strip():
                raise ConfigError(
                    f"TGIModel.covariates: {item!r} is not 'param:name' (e.g. 'kg:organ')", code="config-value"
                )
            pairs.append((param.strip(), name.strip()))
    out: list[str] = []
    for param in _COVARIATE_PARAMETERS:
        for p, n in pairs:
            if p == param and f"{p}:{n}" not in out:
                out.append(f"{p}:{n}")
    odd = sorted({p for p, _ in pairs if p not in _COVARIATE_PARAMETERS})
    if odd:
        raise ConfigError(
            f"TGIModel.covariates: unknown parameter(s) {', '.join(odd)}; covariates go on kg, kd or f",
            code="config-value",
        )
    return tuple(out)



def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover - sections hold only the types above


__all__ = [
    "CHOICES", "Config", "CohortConfig", "DEFAULT_AXIS_RATIO", "DEFAULT_LIMIT_MM3", "DISEASES",
    "DISEASE_CANDIDATES", "DISEASE_NAMING_ORGAN", "DISEASE_REFERENCE_ORGAN", "EventsConfig", "ReportConfig", "HazardsConfig", "PatternsConfig", "PhenotypesConfig",
    "PredictorConfig", "RunConfig", "canonical_covariates", "SECTIONS", "SelectionConfig", "SurvivalConfig", "TGIConfig",
    "defaults_path", "load_config", "section_dict",
]
