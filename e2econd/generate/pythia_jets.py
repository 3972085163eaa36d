"""Pythia 8 events at √s = 13 TeV and anti-kt jets (fastjet) with truth labels.

Processes (``JetGenerator(kind, ...)``):
- ``"top"``: ``Top:gg2ttbar`` + ``Top:qqbar2ttbar``, W forced to hadronic decays (W → q q̄', q ∈ u,d,s,c,b).
  A jet is a top jet (y = 1) if the top and all three decay quarks (b, q, q̄' from the W)
  lie within ΔR < R of the jet axis.
- ``"quark"``: ``HardQCD:qg2qg, qq2qq, qqbar2qqbarNew, gg2qqbar``; ``"gluon"``: ``HardQCD:gg2gg,
  qqbar2gg, qg2qg``. A jet is labelled by the nearest outgoing hard-process parton within
  ΔR < R: y = 1 quark, y = 0 gluon (E2E producer convention); only jets of the generator's own
  flavour are kept, so the two generators give clean quark and gluon samples.
Jets: anti-kt with radius R on visible final-state particles (no neutrinos) with |η| < 3.0; the two
leading jets of an event are candidates; kept if pt_min ≤ pT < pt_max, |η| < eta_max and matched.
Jet pT and mass m0 are those of the clustered particle-level jet (GeV).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from e2econd.generate.detector import Particles, wrap_phi

CLUSTER_ETA = 3.0  # |η| acceptance of the clustering inputs (= calorimeter acceptance)
MAX_JETS_PER_EVENT = 2
_INVISIBLE = {12, 14, 16}

_PROCESS_SETTINGS = {
    "top": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5"],
    "quark": ["HardQCD:qg2qg = on", "HardQCD:qq2qq = on", "HardQCD:qqbar2qqbarNew = on", "HardQCD:gg2qqbar = on"],
    "gluon": ["HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on", "HardQCD:qg2qg = on"],
}

_fastjet_quiet = False


@contextlib.contextmanager
def _silence_stdout():
    """Redirect the C-level stdout (fd 1) to /dev/null, e.g. for the fastjet banner."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@dataclass
class Jet:
    """A selected particle-level jet (GeV, η, φ in rad) and its label."""

    pt: float
    eta: float
    phi: float
    m: float
    y: float


def delta_r(eta1, phi1, eta2, phi2):
    return np.hypot(np.asarray(eta1) - eta2, wrap_phi(np.asarray(phi1) - phi2))


BATCH_EVENTS = 10  # events per Pythia nextBatch call


class ChargeTable:
    """PDG id -> electric charge (units of e), cached from Pythia's particle data."""

    def __init__(self, pythia):
        self._pd = pythia.particleData
        self._cache: dict[int, float] = {}

    def __call__(self, pid: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(pid, return_inverse=True)
        vals = np.empty(len(uniq))
        for k, u in enumerate(uniq.tolist()):
            c = self._cache.get(u)
            if c is None:
                c = self._cache[u] = float(self._pd.charge(int(u)))
            vals[k] = c
        return vals[inv]


def event_batch(pythia, n: int) -> list[dict[str, np.ndarray]]:
    """Generate n events with ``pythia.nextBatch`` and split them into per-event numpy records
    (fields id, status, daughter1, daughter2, px, py, pz, e; indices as in Pythia's event record)."""
    import awkward as ak

    b = pythia.nextBatch(n)
    prt = b["prt"]
    counts = ak.to_numpy(ak.num(prt))
    flat = {k: ak.to_numpy(ak.flatten(prt[k])) for k in ("id", "status", "daughter1", "daughter2")}
    for k in ("px", "py", "pz", "e"):
        flat[k] = ak.to_numpy(ak.flatten(prt["p", k]))
    offs = np.concatenate([[0], np.cumsum(counts)])
    return [{k: v[offs[i] : offs[i + 1]] for k, v in flat.items()} for i in range(len(counts))]


def _eta_phi(rec):
    pt = np.hypot(rec["px"], rec["py"])
    return np.arcsinh(rec["pz"] / np.maximum(pt, 1e-12)), np.arctan2(rec["py"], rec["px"])


def bottom_copy(rec, i: int) -> int:
    """Follow carbon copies (single daughter with the same id) to the last copy of entry i."""
    ids, d1, d2 = rec["id"], rec["daughter1"], rec["daughter2"]
    while d1[i] > 0 and d1[i] == d2[i] and ids[d1[i]] == ids[i]:
        i = int(d1[i])
    return int(i)


def final_particles(rec, charge: ChargeTable) -> Particles:
    """Visible final-state particles (status > 0, no neutrinos) of an event record."""
    m = (rec["status"] > 0) & ~np.isin(np.abs(rec["id"]), list(_INVISIBLE))
    pid = rec["id"][m].astype(np.int64)
    return Particles(rec["px"][m], rec["py"][m], rec["pz"][m], rec["e"][m], pid, charge(pid))


class JetGenerator:
    """One Pythia instance for one process kind; ``next_event()`` yields (particles, jets)."""

    def __init__(
        self,
        kind: str,
        seed: int,
        R: float,
        pt_min: float,
        pt_max: float,
        eta_max: float,
        pthat_min: float | None = None,
        pthat_max: float | None = None,
    ):
        import fastjet
        import pythia8mc

        if kind not in _PROCESS_SETTINGS:
            raise ValueError(f"unknown process kind {kind!r}")
        self.kind, self.R, self.pt_min, self.pt_max, self.eta_max = kind, R, pt_min, pt_max, eta_max
        self.seed = int(seed)
        pthat_min = pt_min if pthat_min is None else pthat_min
        pthat_max = pt_max if pthat_max is None else pthat_max
        self.pythia = pythia8mc.Pythia("", False)
        for s in [
            "Beams:eCM = 13000.",
            "Print:quiet = on",
            "Next:numberCount = 0",
            "Next:numberShowEvent = 0",
            "Next:numberShowProcess = 0",
            "Next:numberShowInfo = 0",
            "Random:setSeed = on",
            f"Random:seed = {self.seed}",
            f"PhaseSpace:pTHatMin = {pthat_min:.6g}",
            f"PhaseSpace:pTHatMax = {pthat_max:.6g}",
            *_PROCESS_SETTINGS[kind],
        ]:
            if not self.pythia.readString(s):
                raise RuntimeError(f"Pythia rejected setting {s!r}")
        if not self.pythia.init():
            raise RuntimeError(f"Pythia initialisation failed for process {kind!r}")
        self._fj = fastjet
        self._jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, R)
        self.n_events = 0
        self._batch: list[dict[str, np.ndarray]] = []
        self._pos = 0
        self._charge = ChargeTable(self.pythia)

    def _next_raw(self) -> dict[str, np.ndarray]:
        """Next event's full record as numpy arrays (from ``nextBatch``: one C++ call per batch)."""
        if self._pos >= len(self._batch):
            self._batch, self._pos = event_batch(self.pythia, BATCH_EVENTS), 0
        rec = self._batch[self._pos]
        self._pos += 1
        return rec

    def _particles(self, rec: dict[str, np.ndarray]) -> Particles:
        return final_particles(rec, self._charge)

    def _cluster(self, p: Particles):
        global _fastjet_quiet
        fj = self._fj
        sel = np.flatnonzero(np.abs(p.eta) < CLUSTER_ETA)
        pj = [fj.PseudoJet(float(p.px[i]), float(p.py[i]), float(p.pz[i]), float(p.e[i])) for i in sel]
        if not _fastjet_quiet:
            with _silence_stdout():
                cs = fj.ClusterSequence(pj, self._jetdef)
            _fastjet_quiet = True
        else:
            cs = fj.ClusterSequence(pj, self._jetdef)
        jets = fj.sorted_by_pt(cs.inclusive_jets(0.5 * self.pt_min))[:MAX_JETS_PER_EVENT]
        return [(j.pt(), j.eta(), j.phi_std(), j.m()) for j in jets]

    def _truth(self, rec: dict[str, np.ndarray]):
        """Matching targets: list of (y, [(eta, phi), ...]) that must all be within ΔR < R."""
        ids, st, d1, d2 = rec["id"], rec["status"], rec["daughter1"], rec["daughter2"]
        eta, phi = _eta_phi(rec)
        out = []
        head = range(1, min(len(ids), 12))
        if self.kind == "top":
            for i in head:
                if abs(ids[i]) != 6 or abs(st[i]) != 22:
                    continue
                last = bottom_copy(rec, i)
                dirs = [(eta[last], phi[last])]
                for d in range(d1[last], d2[last] + 1):
                    if abs(ids[d]) == 24:
                        w = bottom_copy(rec, d)
                        dirs += [(eta[k], phi[k]) for k in range(d1[w], d2[w] + 1)]
                    else:
                        dirs.append((eta[d], phi[d]))
                if len(dirs) == 4:
                    out.append((1.0, dirs))
        else:
            for i in head:
                if abs(st[i]) == 23:
                    y = 0.0 if ids[i] == 21 else 1.0 if 1 <= abs(ids[i]) <= 5 else -1.0
                    out.append((y, [(eta[i], phi[i])]))
        return out

    def next_event(self) -> tuple[Particles, list[Jet]]:
        """Generate events until one has at least one selected jet; return its particles and jets."""
        while True:
            self.n_events += 1
            rec = self._next_raw()
            p = self._particles(rec)
            cands = [c for c in self._cluster(p) if self.pt_min <= c[0] < self.pt_max and abs(c[1]) < self.eta_max]
            if not cands:
                continue
            truth = self._truth(rec)
            jets = []
            for pt, eta, phi, m in cands:
                y = self._match(eta, phi, truth)
                if y is None:
                    continue
                if (self.kind == "quark" and y != 1.0) or (self.kind == "gluon" and y != 0.0):
                    continue
                jets.append(Jet(pt, eta, phi, m, y))
            if jets:
                return p, jets

    def _match(self, eta, phi, truth):
        if self.kind == "top":
            for y, dirs in truth:
                d = np.array(dirs)
                if np.all(delta_r(d[:, 0], d[:, 1], eta, phi) < self.R):
                    return y
            return None
        best, best_dr = None, self.R
        for y, dirs in truth:
            dr = float(delta_r(dirs[0][0], dirs[0][1], eta, phi))
            if dr < best_dr and y >= 0:
                best, best_dr = y, dr
        return best


class MinBiasPool:
    """Pileup: a pool of Pythia ``SoftQCD:nonDiffractive`` events overlaid Poisson(mu) per event.

    Pileup particles enter the detector simulation (images) only; jets are clustered on the hard
    event, so jet pT and m0 stay particle-level quantities of the signal jet.
    """

    def __init__(self, seed: int, size: int):
        import pythia8mc

        py = pythia8mc.Pythia("", False)
        for s in [
            "Beams:eCM = 13000.",
            "Print:quiet = on",
            "Next:numberCount = 0",
            "SoftQCD:nonDiffractive = on",
            "Random:setSeed = on",
            f"Random:seed = {int(seed)}",
        ]:
            py.readString(s)
        if not py.init():
            raise RuntimeError("Pythia initialisation failed for minimum bias")
        charge = ChargeTable(py)
        self.events: list[Particles] = [final_particles(rec, charge) for rec in event_batch(py, size)]

    def overlay(self, p: Particles, mu: float, rng: np.random.Generator) -> Particles:
        k = int(rng.poisson(mu))
        if k == 0:
            return p
        idx = rng.integers(0, len(self.events), size=k)
        return Particles.concat([p, *(self.events[i] for i in idx)])


def pythia_seed(entropy: int) -> int:
    """Map an integer to Pythia's allowed seed range 1..900000000."""
    return int(entropy % 900_000_000) + 1


__all__ = ["JetGenerator", "MinBiasPool", "Jet", "delta_r", "pythia_seed", "CLUSTER_ETA"]
