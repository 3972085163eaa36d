"""Physics sanity of generated jets on a modest sample (the tools/ report runs more jets)."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.generate.detector import DetectorConfig
from e2econd.generate.imaging import image_observables
from e2econd.generate.make_data import PROCESSES, generate_unit


def _unit(process, n, seed):
    spec = PROCESSES[process]
    task = {
        "process": process,
        "unit": 0,
        "unit_size": n,
        "n": n,
        "seed": seed,
        "R": spec["R"],
        "pt_min": spec["pt_min"],
        "pt_max": spec["pt_max"],
        "eta_max": 1.5,
        "detector": DetectorConfig().to_dict(),
        "pileup": 0.0,
    }
    return generate_unit(task)


@pytest.mark.slow
def test_top_and_qg_physics():
    top = _unit("top", 120, 21)
    obs = image_observables(top["images"], 0.8)
    for c in ("tracks", "ecal", "hcal"):
        assert obs[f"occupancy_{c}"].mean() < 0.10
    assert 150 < np.median(top["m0"]) < 200  # top mass peak
    # calorimeter pixels hold energies: compare with the jet energy scale pT·cosh(η)
    ratio = obs["calo_cone"] / (top["pt"] * np.cosh(top["eta"]))
    assert 0.75 < np.median(ratio) < 1.05  # hadron response 0.85, EM 1.0, plus UE in the cone
    assert np.median(obs["sum_tracks"] / top["pt"]) > 0.4  # charged fraction ~ 2/3 of the jet

    qg = _unit("qg", 160, 22)
    o = image_observables(qg["images"], 0.4)
    q, g = qg["y"] == 1, qg["y"] == 0
    assert q.sum() == g.sum() == 80
    # gluon jets are wider and have more tracks than quark jets (Casimir ratio C_A/C_F = 9/4)
    assert o["girth"][g].mean() > 1.15 * o["girth"][q].mean()
    assert o["n_track_pix"][g].mean() > 1.15 * o["n_track_pix"][q].mean()
    for c in ("tracks", "ecal", "hcal"):
        assert o[f"occupancy_{c}"].mean() < 0.10
    assert 0.7 < np.median(o["calo_cone"] / (qg["pt"] * np.cosh(qg["eta"]))) < 1.05
