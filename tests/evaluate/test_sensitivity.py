"""Sensitivity of the headline metrics at 2,000 jets per side (issue 13): known distortions of toy jets
must move value − floor beyond 3 combined standard errors; the undistorted control must not.

Real: 4,000 toy jets split into the halves A, B (2,000 each); generated: 2,000 independent toy jets,
distorted. value = metric(G, B), floor = metric(A, B), exactly as in ``evaluate``.
"""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.evaluate import families as FAM
from e2econd.evaluate import nearest as NN
from e2econd.evaluate import scheme
from e2econd.evaluate.emd import emd_pairs
from e2econd.evaluate.features import jet_deposits
from e2econd.evaluate.store import sample_from_arrays

pytestmark = pytest.mark.slow
N = 2000


@pytest.fixture(scope="module")
def setup(toyjets):
    real = toyjets.toy_jets(2 * N, seed=100)
    gen = toyjets.toy_jets(N, seed=200)
    h = scheme.draw(2 * N, [N], seed=0)
    rs = sample_from_arrays(real["images"], real["pt"], real["m0"], real["y"])
    return {"toy": toyjets, "real": real, "gen": gen, "h": h, "rs": rs, "A": FAM.Side(rs, h.A), "B": FAM.Side(rs, h.B)}


def _ctx(seed=1):
    return FAM.Context(rng=np.random.default_rng(seed), n_boot=30)


def _gen_side(setup, images, jets=None) -> FAM.Side:
    g = setup["gen"] if jets is None else jets
    s = sample_from_arrays(images, g["pt"], g["m0"], g["y"])
    return FAM.Side(s, setup["h"].G[0])


def _significance(values, floors, name) -> float:
    v, f = values[name], floors[name]
    return (v["value"] - f["value"]) / np.hypot(v["err"], f["err"])


@pytest.fixture(scope="module")
def w1_floor_and_control(setup):
    ctx = _ctx()
    floors = {**FAM.w1_features(setup["A"], setup["B"], ctx), **FAM.hit_positions(setup["A"], setup["B"], ctx)}
    g = _gen_side(setup, setup["gen"]["images"])
    control = {**FAM.w1_features(g, setup["B"], ctx), **FAM.hit_positions(g, setup["B"], ctx)}
    return floors, control


def _w1(setup, images, names):
    ctx = _ctx(2)
    g = _gen_side(setup, images)
    out = FAM.w1_features(g, setup["B"], ctx)
    if any(n.startswith("w1_hit_") for n in names):
        out.update(FAM.hit_positions(g, setup["B"], ctx))
    return out


@pytest.mark.parametrize("c, name", [(0, "tracks"), (1, "ecal"), (2, "hcal")])
def test_five_percent_channel_scale(setup, w1_floor_and_control, c, name):
    floors, control = w1_floor_and_control
    key = f"w1_E_{name}"  # headline w1_energy_<c>
    vals = _w1(setup, setup["toy"].scale_channel(setup["gen"]["images"], c, 1.05), [key])
    assert _significance(vals, floors, key) > 3.0
    assert _significance(control, floors, key) < 3.0


def test_tracks_minus_twenty_percent(setup, w1_floor_and_control):
    floors, control = w1_floor_and_control
    vals = _w1(setup, setup["toy"].tracks_scale(setup["gen"]["images"], 0.8), ["w1_E_tracks"])
    assert _significance(vals, floors, "w1_E_tracks") > 3.0
    assert vals["w1_E_tracks"]["value"] > 5 * floors["w1_E_tracks"]["value"]


def test_core_energy_moved_outwards(setup, w1_floor_and_control):
    """10 % of the ECAL energy moved from R < 0.05 to R > 0.2: the core energy and the radial profile see it."""
    floors, control = w1_floor_and_control
    moved = setup["toy"].move_core_energy(setup["gen"]["images"], 0.10, 1, of="total")
    names = ["w1_core005_ecal", "w1_hit_dR_ecal"]  # headline w1_core_energy_ecal; the radial energy profile
    vals = _w1(setup, moved, names)
    for key in names:
        assert _significance(vals, floors, key) > 3.0, key
        assert _significance(control, floors, key) < 3.0, key
    # the channel total is conserved: the energy W1 stays at the floor
    assert _significance(vals, floors, "w1_E_ecal") < 3.0


@pytest.fixture(scope="module")
def collapsed(setup):
    """Every generated jet a copy of one of 10 real jets (of the generated seed's population)."""
    return setup["toy"].mode_collapse(setup["gen"], k=10, seed=3)


def _cov(x: FAM.Side, ref: FAM.Side, seed: int) -> dict:
    dep = [s.sample.top_deposits(s.idx, "calo", NN.NN_DEPOSITS) for s in (ref, x)]
    return NN.cov_mmd(dep[0], dep[1], n_eval=100, n_batches=10, rng=np.random.default_rng(seed), threads=2)


def test_mode_collapse_is_flagged_by_coverage(setup, collapsed):
    floor = _cov(setup["A"], setup["B"], 5)
    value = _cov(_gen_side(setup, collapsed["images"], collapsed), setup["B"], 6)
    control = _cov(_gen_side(setup, setup["gen"]["images"]), setup["B"], 7)
    comb = np.hypot(value["cov_err"], floor["cov_err"])
    assert floor["cov"] - value["cov"] > 3 * comb  # headline cov_calo: at most 10 of 100 real jets covered
    assert value["cov"] <= 0.1
    assert abs(control["cov"] - floor["cov"]) < 3 * np.hypot(control["cov_err"], floor["cov_err"])


def test_mean_pair_emd_does_not_flag_mode_collapse(setup, collapsed):
    """Documents why the thesis EMD is no headline: copies of real jets are as close to real jets, pair by
    pair, as other real jets are, so the collapsed sample scores at the floor."""
    h, k = setup["h"], 400

    def deps(images, idx):
        return [jet_deposits(images[i], pool=5)["calo"] for i in idx[:k]]

    ref = deps(setup["real"]["images"], h.B)
    fv = emd_pairs(deps(setup["real"]["images"], h.A), ref, 0.8, 2)
    gv = emd_pairs(deps(collapsed["images"], h.G[0]), ref, 0.8, 2)
    comb = np.hypot(gv.std(ddof=1), fv.std(ddof=1)) / np.sqrt(k)
    assert gv.mean() - fv.mean() < 3 * comb
