"""Covariates of the growth model's individual parameters: from the cohort's tables to a design matrix.

Monolix-style: a covariate shifts the normal-scale mean of a parameter,
:math:`\\phi_{ik} = \\mu_k + \\sum_j \\beta_{jk} x_{ij} + \\eta_{ik}`. The SAEM core takes the design
matrix :math:`X` (first column 1) and a mask of the free coefficients :math:`B_{jk}`; this module builds
both from ``TGIModel.covariates``:

- a categorical covariate (text, category or true/false) gets one 0/1 column per level but the
  reference, its most frequent level among the fitted lesions (ties: the first in sorted order);
- a continuous covariate (numbers) is centred at its mean over the fitted lesions;
- ``log_v0`` is the log baseline volume the model uses (the V0 regressor).

A name is looked up in the lesions table, then in the patients table (joined on ``patient_id``); for a
measurements table alone, in its columns (the value must be constant within a lesion).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .model import PARAMETERS

LOG_V0 = "log_v0"


@dataclass(frozen=True)
class CovariateDesign:
    """Design of the normal-scale means: ``x`` (n, P) with column 0 the intercept, ``mask`` (P, 3) the
    free coefficients, ``columns`` the P column labels (``"intercept"``, ``"organ_lung"``, ``"log_v0"``),
    ``info`` one dict per covariate (name, kind, reference level or centre, levels, parameters)."""

    x: np.ndarray
    mask: np.ndarray
    columns: tuple[str, ...]
    info: tuple[dict[str, Any], ...]

    @property
    def coefficient_names(self) -> list[tuple[int, int, str]]:
        """``(column, parameter, "beta_<param>_<label>")`` of every free covariate coefficient."""
        return [
            (j, k, f"beta_{PARAMETERS[k]}_{self.columns[j]}")
            for j in range(1, len(self.columns))
            for k in range(len(PARAMETERS))
            if self.mask[j, k]
        ]


def parse(covariates: tuple[str, ...]) -> dict[str, list[str]]:
    """Canonical ``"param:name"`` texts as ``{name: [params]}`` in first-seen order of the names."""
    out: dict[str, list[str]] = {}
    for item in covariates:
        param, _, name = item.partition(":")
        out.setdefault(name, []).append(param)
    return out


def _fail(message: str) -> DataError:
    return DataError(message, code="tgi-covariate")


def _lookup(name: str, lesion_ids: pd.Index, source: Any) -> pd.Series:
    """The value of covariate ``name`` for each lesion of ``lesion_ids`` (index ``lesion_ids``)."""
    if isinstance(source, pd.DataFrame):
        if name not in source.columns:
            raise _fail(
                f"covariate {name!r}: no such column in the measurements table; give a column constant "
                f"within each lesion, or {LOG_V0!r}"
            )
        m = source.assign(_lid=source["lesion_id"].astype("string"))
        varying = m.groupby("_lid")[name].nunique(dropna=False)
        varying = varying[varying > 1]
        if len(varying):
            raise _fail(
                f"covariate {name!r} varies within lesion(s) {', '.join(map(str, varying.index[:5]))}; a "
                "covariate of the individual parameters must be constant within each lesion"
            )
        return m.groupby("_lid")[name].first().reindex(lesion_ids)
    lesions = source.lesions.assign(_lid=source.lesions["lesion_id"].astype("string")).set_index("_lid")
    if name in lesions.columns:
        return lesions[name].reindex(lesion_ids)
    patients = source.patients
    if name in patients.columns:
        by_patient = patients.set_index(patients["patient_id"].astype("string"))[name]
        pid = lesions["patient_id"].astype("string").reindex(lesion_ids)
        return pd.Series(by_patient.reindex(pid).to_numpy(), index=lesion_ids, name=name)
    raise _fail(
        f"covariate {name!r}: no such column in the lesions or patients table; choose one of "
        f"{', '.join(sorted(set(lesions.columns) | set(patients.columns) - {'_lid'}))} or {LOG_V0!r}"
    )


def _is_categorical(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def build_design(covariates: tuple[str, ...], source: Any, lesion_ids: np.ndarray, v0: np.ndarray) -> CovariateDesign:
    """The design of ``TGIModel.covariates`` for the fitted lesions ``lesion_ids`` (baseline volumes ``v0``).

    Raises ``DataError`` (one line) for an unknown column, a missing value, a column that varies within
    a lesion or a covariate with a single value among the fitted lesions.
    """
    n = len(lesion_ids)
    index = pd.Index(pd.Series(lesion_ids, dtype="string"))
    columns: list[np.ndarray] = [np.ones(n)]
    labels: list[str] = ["intercept"]
    owners: list[list[str]] = [list(PARAMETERS)]
    info: list[dict[str, Any]] = []
    for name, params in parse(covariates).items():
        if name == LOG_V0:
            values = pd.Series(np.log(np.asarray(v0, float)), index=index)
        else:
            values = _lookup(name, index, source)
        missing = values.isna().to_numpy()
        if missing.any():
            ids = list(index[missing][:5])
            raise _fail(
                f"covariate {name!r} is missing for {int(missing.sum())} fitted lesion(s) "
                f"({', '.join(map(str, ids))}{', ...' if missing.sum() > 5 else ''}); fill it in or drop the covariate"
            )
        if _is_categorical(values):
            text = values.astype(str)
            counts = text.value_counts()
            if len(counts) < 2:
                raise _fail(f"covariate {name!r} takes a single value ({counts.index[0]}) among the fitted "
                            "lesions; it has no effect to estimate, drop it")
            top = counts.max()
            reference = sorted(level for level, c in counts.items() if c == top)[0]
            levels = [reference] + sorted(level for level in counts.index if level != reference)
            for level in levels[1:]:
                columns.append((text == level).to_numpy(float))
                labels.append(f"{name}_{level}")
                owners.append(params)
            info.append({"name": name, "kind": "categorical", "reference": reference, "levels": levels,
                         "counts": {lv: int(counts[lv]) for lv in levels}, "parameters": params})
        else:
            x = values.to_numpy(float)
            if not np.all(np.isfinite(x)):
                raise _fail(f"covariate {name!r} has non-finite values; fill them in or drop the covariate")
            centre = float(x.mean())
            if np.ptp(x) == 0:
                raise _fail(f"covariate {name!r} takes a single value ({centre:g}) among the fitted lesions; "
                            "it has no effect to estimate, drop it")
            columns.append(x - centre)
            labels.append(name)
            owners.append(params)
            info.append({"name": name, "kind": "continuous", "centre": centre, "parameters": params})
    x = np.stack(columns, axis=1)
    mask = np.array([[p in own for p in PARAMETERS] for own in owners], bool)
    return CovariateDesign(x=x, mask=mask, columns=tuple(labels), info=tuple(info))


__all__ = ["LOG_V0", "CovariateDesign", "build_design", "parse"]
