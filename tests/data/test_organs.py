from __future__ import annotations

import pandas as pd
import pytest

from lesionatlas.data import ORGAN_GROUPS, load_organ_map, map_sites
from lesionatlas.errors import DataError, DataWarning


@pytest.mark.parametrize(
    "text, organ",
    [
        ("LIVER", "liver"),
        ("liver segment 7", "liver"),
        ("Right upper lobe of lung", "lung"),
        ("LYMPH NODE", "lymph_node_distal"),
        ("mesenteric lymph node", "lymph_node_regional"),
        ("Supraclavicular lymph node", "lymph_node_distal"),
        ("PERITONEUM", "peritoneum"),
        ("omentum", "peritoneum"),
        ("ABDOMINAL CAVITY", "abdominal"),
        ("anterior abdominal wall", "abdominal"),
        ("ADRENAL GLAND", "adrenal"),
        ("left kidney", "kidney"),
        ("BONE", "bone"),
        ("thoracic vertebra", "bone"),
        ("BRAIN", "brain_cns"),
        ("SKIN", "skin"),
        ("SPLEEN", "spleen"),
        ("COLON", "gi"),
        ("BLADDER", "gr"),
        ("PLEURA", "pleura"),
        ("PANCREAS", "pancreas"),
        ("psoas muscle", "muscle"),
        ("ANUS", "gi"),
        ("HEAD AND NECK", "head_neck"),
        ("oropharynx", "head_neck"),
    ],
)
def test_shipped_map(text, organ):
    assert load_organ_map().lookup(text) == organ


def test_renal_does_not_match_adrenal():
    assert load_organ_map().lookup("left adrenal") == "adrenal"


def test_every_shipped_organ_is_a_group():
    m = load_organ_map()
    organs = {o for _, o in m.exact} | {o for _, o in m.contains}
    assert organs <= set(ORGAN_GROUPS)


def test_unknown_maps_to_other_with_warning():
    with pytest.warns(DataWarning, match="'Xyzzy'"):
        out = map_sites(pd.Series(["LIVER", "Xyzzy", None]))
    assert out.tolist() == ["liver", "other", "other"]


def test_user_map_extends_and_wins(tmp_path):
    f = tmp_path / "map.csv"
    f.write_text("site,organ,match\nXYZZY,liver,exact\nLIVER,other,exact\n")
    m = load_organ_map(f)
    assert m.lookup("xyzzy") == "liver"
    assert m.lookup("liver") == "other"
    assert m.lookup("lung") == "lung"


def test_bad_user_map(tmp_path):
    f = tmp_path / "map.csv"
    f.write_text("where,what\nA,b\n")
    with pytest.raises(DataError, match="site,organ"):
        load_organ_map(f)
    with pytest.raises(DataError, match="not found"):
        load_organ_map(tmp_path / "nope.csv")


@pytest.mark.parametrize("organ", ORGAN_GROUPS)
def test_organ_ids_map_to_themselves(organ):
    # so that a table written with organ ids (e.g. a Monolix export's ORGAN column) reads back unchanged
    assert load_organ_map().lookup(organ) == organ
