"""``lesionatlas fit-tgi`` on a Monolix-format file in the authors' layout (run in tmp_path)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from tgi_simulate import simulate

from lesionatlas.cli import main
from lesionatlas.tgi import TGIFit


def _authors_layout(path, n_lesions=400, seed=8):
    """lesionID,time,DV,CENSORING,LIMIT,V0,T0 with the baseline row; censored rows DV = 200, LIMIT = 0."""
    sim = simulate(n_lesions, seed=seed)
    rows = []
    for i in range(n_lesions):
        lesion = f"{i + 1}"
        rows.append((lesion, sim.t0[i], sim.v0[i], 0, np.nan, sim.v0[i], sim.t0[i]))
        for j in np.flatnonzero(sim.obs_mask[i]):
            cens = bool(sim.censored[i, j])
            rows.append((lesion, sim.t[i, j], 200.0 if cens else sim.y[i, j], int(cens), 0.0 if cens else np.nan,
                         sim.v0[i], sim.t0[i]))
    frame = pd.DataFrame(rows, columns=["lesionID", "time", "DV", "CENSORING", "LIMIT", "V0", "T0"])
    frame.to_csv(path, index=False, na_rep=".")
    return sim


def test_fit_tgi_writes_tables_and_plots(tmp_path, capsys):
    data = tmp_path / "data.csv"
    _authors_layout(data)
    out = tmp_path / "out"
    code = main(["fit-tgi", str(data), "--out", str(out), "--format", "monolix", "--seed", "1",
                 "--iterations", "95,50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    population = pd.read_csv(out / "population.csv")
    assert list(population["parameter"]) == ["kg_pop", "kd_pop", "f_pop", "omega_kg", "omega_kd", "omega_f", "b"]
    assert {"estimate", "se", "rse_percent"} <= set(population.columns)
    kd = population.set_index("parameter").loc["kd_pop", "estimate"]
    assert 0.02 < kd < 0.045  # truth 0.03
    individual = pd.read_csv(out / "individual.csv")
    assert len(individual) == 400 and {"lesion_id", "kg", "kd", "f", "kg_mean"} <= set(individual.columns)
    pngs = sorted(p.name for p in (out / "diagnostics").glob("*.png"))
    assert "vpc.png" in pngs and "vpc_conditional.png" in pngs and "cnpde_vs_time.png" in pngs
    assert "saem_trajectories.png" in pngs and len(pngs) == 12
    assert "kg_pop" in captured.out  # the population table is printed


def test_fit_tgi_bad_iterations(tmp_path, capsys):
    data = tmp_path / "data.csv"
    _authors_layout(data, n_lesions=5)
    code = main(["fit-tgi", str(data), "--out", str(tmp_path / "out"), "--iterations", "many"])
    assert code == 2
    assert "--iterations" in capsys.readouterr().err


def test_fit_tgi_covariance_option(tmp_path, capsys):
    data = tmp_path / "data.csv"
    _authors_layout(data, n_lesions=60)
    code = main(["fit-tgi", str(data), "--out", str(tmp_path / "bad"), "--covariance", "unstructured"])
    assert code == 2 and "--covariance must be diagonal or full" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    code = main(["fit-tgi", str(data), "--out", str(tmp_path / "bad"), "--is-draws", "-5"])
    assert code == 2 and "--is-draws must be 0" in capsys.readouterr().err
    out = tmp_path / "out"
    code = main(["fit-tgi", str(data), "--out", str(out), "--format", "monolix", "--covariance", "full",
                 "--iterations", "40,20", "--is-draws", "300"])
    assert code == 0, capsys.readouterr().err
    population = pd.read_csv(out / "population.csv")
    assert {"corr_kg_kd", "corr_kg_f", "corr_kd_f"} <= set(population["parameter"])
    fit = TGIFit.from_dir(out / "fit")
    assert fit.spec.n_is_draws == 300 and np.isfinite(fit.loglik)
