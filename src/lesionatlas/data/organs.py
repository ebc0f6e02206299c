"""Raw site text -> organ group, through a table shipped as data (``organs.csv``) that users extend."""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from ..errors import DataError, DataWarning

#: The organ groups of Zhou et al. 2024 (Fig. 1b, Fig. 3) plus the head-and-neck region; the order is the
#: order reports use.
ORGAN_GROUPS: tuple[str, ...] = (
    "liver",
    "lung",
    "lymph_node_regional",
    "lymph_node_distal",
    "peritoneum",
    "abdominal",
    "gi",
    "gr",
    "bone",
    "brain_cns",
    "skin",
    "spleen",
    "kidney",
    "muscle",
    "pancreas",
    "adrenal",
    "pleura",
    "head_neck",
    "other",
)

#: Human-readable organ names for tables and figures.
ORGAN_LABELS: dict[str, str] = {
    "liver": "Liver",
    "lung": "Lung",
    "lymph_node_regional": "Lymph node (regional)",
    "lymph_node_distal": "Lymph node (distal)",
    "peritoneum": "Peritoneum",
    "abdominal": "Abdominal",
    "gi": "Gastrointestinal",
    "gr": "Genitourinary/reproductive",
    "bone": "Bone",
    "brain_cns": "Brain/CNS",
    "skin": "Skin",
    "spleen": "Spleen",
    "kidney": "Kidney",
    "muscle": "Muscle/soft tissue",
    "pancreas": "Pancreas",
    "adrenal": "Adrenal",
    "pleura": "Pleura",
    "head_neck": "Head and neck",
    "other": "Other",
}


def normalise_site(text: str) -> str:
    """Upper-case, ``_``/``-`` runs and whitespace collapsed: ``' left  Liver_lobe '`` -> ``'LEFT LIVER LOBE'``."""
    return re.sub(r"[\s_]+", " ", str(text)).strip().upper()


@dataclass(frozen=True)
class OrganMap:
    """A site -> organ mapping: exact matches first, then ``contains`` rules in order.

    A ``contains`` rule matches when the text has the rule's words starting at a word boundary, so
    ``ABDOMIN`` matches ``ANTERIOR ABDOMINAL WALL`` and ``RENAL`` does not match ``ADRENAL``.

    Build with :func:`load_organ_map`; apply with :meth:`map`.
    """

    exact: tuple[tuple[str, str], ...]
    contains: tuple[tuple[str, str], ...]

    def lookup(self, site: str) -> str | None:
        """The organ of one raw site text, or ``None`` when no rule matches."""
        key = normalise_site(site)
        exact = dict(self.exact)
        if key in exact:
            return exact[key]
        padded = f" {key}"
        for pattern, organ in self.contains:
            if f" {pattern}" in padded:
                return organ
        return None

    def map(self, sites: pd.Series, *, warn: bool = True) -> pd.Series:
        """Map a column of raw site texts to organ groups; unknown or missing text -> ``other``.

        Warns (:class:`~lesionatlas.errors.DataWarning`) listing the raw values that were not recognised.
        """
        text = sites.astype("string")
        uniques = text.dropna().unique()
        table = {s: self.lookup(s) for s in uniques}
        unknown = sorted(s for s, o in table.items() if o is None)
        if unknown and warn:
            shown = ", ".join(repr(s) for s in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            warnings.warn(
                f"{len(unknown)} site text(s) not in the organ map were mapped to 'other': {shown}{more}; "
                "add them to a CSV (site,organ,match) and pass it with --organ-map",
                DataWarning,
                stacklevel=2,
            )
        mapped = text.map(lambda s: table.get(s) or "other" if s is not pd.NA else "other")
        return mapped.astype("string")


def _read_rows(frame: pd.DataFrame, source: str) -> list[tuple[str, str, str]]:
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    missing = {"site", "organ"} - set(frame.columns)
    if missing:
        raise DataError(
            f"{source}: organ map needs columns site,organ (and optionally match = exact|contains); "
            f"missing {sorted(missing)}",
            code="organ-map",
        )
    if "match" not in frame.columns:
        frame["match"] = "exact"
    rows = []
    for i, (site, organ, match) in enumerate(zip(frame["site"], frame["organ"], frame["match"])):
        match = str(match).strip().lower() if pd.notna(match) else "exact"
        if pd.isna(site) or pd.isna(organ) or match not in ("exact", "contains"):
            raise DataError(
                f"{source}: row {i + 2} must have a site, an organ and match = exact or contains",
                code="organ-map",
            )
        rows.append((normalise_site(site), str(organ).strip(), match))
    return rows


@lru_cache(maxsize=1)
def _default_rows() -> tuple[tuple[str, str, str], ...]:
    with resources.files("lesionatlas.data").joinpath("organs.csv").open("r") as fh:
        frame = pd.read_csv(fh, comment="#", dtype=str)
    return tuple(_read_rows(frame, "organs.csv"))


def load_organ_map(extra: str | Path | pd.DataFrame | None = None) -> OrganMap:
    """The shipped organ map, extended by ``extra`` (a CSV path or table; its rows win).

    Parameters
    ----------
    extra : path or DataFrame, optional
        Columns ``site, organ`` and optionally ``match`` (``exact`` by default, or ``contains``).
    """
    rows = list(_default_rows())
    if extra is not None:
        if isinstance(extra, pd.DataFrame):
            user = _read_rows(extra.astype("string"), "organ map")
        else:
            path = Path(extra)
            if not path.is_file():
                raise DataError(f"organ map {path}: file not found", code="organ-map")
            user = _read_rows(pd.read_csv(path, comment="#", dtype=str), str(path))
        rows = user + rows
    exact: dict[str, str] = {}
    contains: list[tuple[str, str]] = []
    for site, organ, match in rows:
        if match == "exact":
            exact.setdefault(site, organ)
        else:
            contains.append((site, organ))
    return OrganMap(exact=tuple(exact.items()), contains=tuple(contains))


def map_sites(sites: pd.Series, organ_map: OrganMap | None = None, *, warn: bool = True) -> pd.Series:
    """Map raw site texts to organ groups with ``organ_map`` (default: the shipped map)."""
    return (organ_map or load_organ_map()).map(sites, warn=warn)
