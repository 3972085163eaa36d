"""A parameterised CMS-like detector: tracker, ECAL crystals and HCAL towers.

Input: the visible final-state particles of one event (``Particles``: momenta in GeV, PDG id,
charge). Output: ``Deposits`` — tracks and calorimeter energy deposits at their impact points
(η, φ) on the ECAL / HCAL front faces. Rendering deposits into a 125×125 crystal image (lateral
shower spread, noise, zero suppression) is done by ``e2econd.generate.imaging``.

Model (all parameters in ``DetectorConfig``, units there):
- Charged particles move on helices in a uniform solenoid field ``B`` along +z: radius
  R = pT / (0.3·B) [m, GeV, T]. Reaching the barrel cylinder r = r_ecal, the azimuth of the
  impact point is φ = φ0 − q·asin(0.3·B·r / (2·pT)) (positive charges bend clockwise seen from
  +z, i.e. towards smaller φ); particles with pT < 0.3·B·r/2 (0.735 GeV at the ECAL) curl up in
  the barrel and only reach the calorimeter if they hit an endcap face |z| = z_face first.
- Tracks: charged, |η| < trk_eta, pT > trk_ptmin, kept with efficiency trk_eff (mu_eff for muons),
  pT smeared by σ/pT = trk_res ⊕ trk_res_pt·pT; drawn at the ECAL impact point.
- Photons and electrons shower in the ECAL: E smeared with σ/E = ecal_a/√E ⊕ ecal_c (the
  per-crystal noise term ecal_noise is added at rendering).
- Hadrons: calorimeter response had_resp·E smeared with σ/E = hcal_a/√E ⊕ hcal_c. With
  probability had_pint_ecal the shower starts in the ECAL and a fraction f ~ Beta(had_beta) of it
  is deposited there (wide lateral spread had_ecal_sigma); the rest goes to the HCAL. Charged
  hadrons not interacting in the ECAL leave a MIP deposit mip_ecal there.
- Muons: MIP deposits mip_ecal (ECAL) and mip_hcal (HCAL), capped at their energy.
- Neutrinos are invisible (removed before this module).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

# ECAL crystal and HCAL tower pitch: crystals 0.0174 in η and 2π/360 in φ; towers are 5×5 crystals.
CRYSTAL_ETA = 0.0174
CRYSTAL_PHI = 2.0 * math.pi / 360.0
TOWER_ETA = 5 * CRYSTAL_ETA  # 0.087
TOWER_PHI = 5 * CRYSTAL_PHI  # 2π/72
N_CRYSTAL_PHI = 360
N_TOWER_PHI = 72


@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of the CMS-like detector (lengths in m, energies in GeV, B in T)."""

    B: float = 3.8  # solenoid field along +z [T]
    r_ecal: float = 1.29  # ECAL barrel front-face radius [m]
    z_ecal: float = 3.15  # ECAL endcap front-face |z| [m]
    r_hcal: float = 1.90  # HCAL barrel front-face radius [m] (inside the solenoid)
    z_hcal: float = 4.00  # HCAL endcap front-face |z| [m]
    trk_eta: float = 2.5  # tracker acceptance |η|
    trk_ptmin: float = 0.5  # minimum track pT [GeV]
    trk_res: float = 0.01  # constant term of σ(pT)/pT
    trk_res_pt: float = 1.5e-5  # linear term of σ(pT)/pT [1/GeV] (≈1.8% at 1 TeV)
    trk_eff: float = 0.95  # track efficiency (non-muons)
    mu_eff: float = 0.99  # muon track efficiency
    calo_eta: float = 3.0  # calorimeter acceptance |η| of the impact point
    ecal_a: float = 0.03  # ECAL stochastic term [√GeV]: σ/E ∋ a/√E
    ecal_c: float = 0.003  # ECAL constant term: σ/E ∋ c
    ecal_noise: float = 0.04  # ECAL noise per crystal [GeV] (σ/E ∋ noise/E for a one-crystal deposit)
    ecal_zs: float = 0.12  # ECAL zero suppression: crystals with |E| < ecal_zs are set to 0 [GeV]
    ecal_sr_et: float = 1.0  # selective readout: 5×5-crystal trigger towers with E_T > this are read
    #                          out without zero suppression (noise kept) [GeV]; inf = plain ZS everywhere
    em_core: float = 0.3  # EM shower core Gaussian σ [crystals]
    em_halo: float = 1.0  # EM shower halo Gaussian σ [crystals]
    em_halo_frac: float = 0.15  # energy fraction in the halo
    had_resp: float = 0.85  # hadron calorimeter response (e/h): visible fraction of the hadron energy
    hcal_a: float = 1.0  # hadronic stochastic term [√GeV]
    hcal_c: float = 0.05  # hadronic constant term
    had_pint_ecal: float = 0.6  # probability that a hadron shower starts in the ECAL
    had_beta: tuple[float, float] = (1.5, 3.0)  # Beta(α, β) of the energy fraction left in the ECAL
    had_ecal_sigma: float = 1.2  # lateral σ of hadron energy in the ECAL [crystals]
    hcal_sigma: float = 0.35  # lateral σ of HCAL deposits [towers]
    hcal_noise: float = 0.2  # HCAL noise per tower [GeV]
    hcal_thr: float = 0.8  # HCAL towers with E < hcal_thr are set to 0 [GeV]
    mip_ecal: float = 0.3  # MIP deposit in the ECAL (muons, non-interacting charged hadrons) [GeV]
    mip_hcal: float = 2.0  # muon MIP deposit in the HCAL [GeV]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["had_beta"] = list(self.had_beta)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: object = None) -> DetectorConfig:
        """Parameters from a dict (e.g. ``make-data --detector FILE``), checked one by one: a one-line
        :class:`~e2econd.errors.E2EInputError` naming ``source`` and the parameter for an unknown name,
        a non-number, a NaN/inf (only ``ecal_sr_et`` may be inf), a negative value, or a probability
        outside [0, 1]."""
        from e2econd.errors import E2EInputError

        if not isinstance(d, dict):
            raise E2EInputError(
                f"expected a JSON object of detector parameters, got {type(d).__name__}", path=source, key="detector"
            )
        d = dict(d)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(d) - set(names)
        if unknown:
            raise E2EInputError(
                f"unknown detector parameter(s) {sorted(unknown)} (known: {', '.join(names)})",
                path=source,
                key="detector",
            )
        for name, value in d.items():
            d[name] = _checked(name, value, source)
        return cls(**d)


_PROBABILITIES = {"trk_eff", "mu_eff", "em_halo_frac", "had_pint_ecal"}
_POSITIVE = {"r_ecal", "z_ecal", "r_hcal", "z_hcal", "em_core", "em_halo", "had_ecal_sigma", "hcal_sigma", "had_resp"}


def _checked(name: str, value, source):
    """One detector parameter, validated (see :meth:`DetectorConfig.from_dict`)."""
    from e2econd.errors import E2EInputError

    def bad(why: str):
        return E2EInputError(f"{name} = {value!r}: {why}", path=source, key=name)

    if name == "had_beta":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise bad("expected two numbers [alpha, beta] of a Beta distribution")
        return tuple(_checked("had_beta[]", v, source) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad("expected a number")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and name != "ecal_sr_et"):
        raise bad("expected a finite number")
    if name in _PROBABILITIES and not 0.0 <= v <= 1.0:
        raise bad("a probability must lie in [0, 1]")
    if (name in _POSITIVE or name == "had_beta[]") and v <= 0:
        raise bad("must be > 0")
    if name != "B" and v < 0:
        raise bad("must be >= 0")
    return v


@dataclass
class Particles:
    """Visible final-state particles of one event (GeV; charge in units of e)."""

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    pid: np.ndarray  # PDG id (int)
    charge: np.ndarray  # float

    @property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        return np.arcsinh(self.pz / np.maximum(self.pt, 1e-12))

    @property
    def phi(self) -> np.ndarray:
        return np.arctan2(self.py, self.px)

    def __len__(self) -> int:
        return len(self.e)

    def select(self, mask: np.ndarray) -> Particles:
        return Particles(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: list[Particles]) -> Particles:
        return Particles(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Particles)))


@dataclass
class Deposits:
    """Detector response of one event, at impact points on the calorimeter faces.

    Tracks: (trk_eta, trk_phi, trk_pt) at the ECAL face. ECAL: (ecal_eta, ecal_phi, ecal_e,
    ecal_kind) with kind 0 = EM shower (core+halo), 1 = hadron shower part, 2 = MIP (point-like).
    HCAL: (hcal_eta, hcal_phi, hcal_e) at the HCAL face. Energies in GeV.
    """

    trk_eta: np.ndarray
    trk_phi: np.ndarray
    trk_pt: np.ndarray
    ecal_eta: np.ndarray
    ecal_phi: np.ndarray
    ecal_e: np.ndarray
    ecal_kind: np.ndarray
    hcal_eta: np.ndarray
    hcal_phi: np.ndarray
    hcal_e: np.ndarray


EM_SHOWER, HAD_SHOWER, MIP = 0, 1, 2


def wrap_phi(phi):
    """Wrap angles to [−π, π)."""
    return (np.asarray(phi) + math.pi) % (2.0 * math.pi) - math.pi


def curvature_dphi(pt, charge, r: float, B: float):
    """Azimuth change of a helix from the origin to radius r: −q·asin(0.3·B·r/(2·pT)) [rad].

    NaN where the particle never reaches r (pT < 0.3·B·r/2). Neutral particles: 0.
    """
    pt = np.asarray(pt, dtype=np.float64)
    q = np.sign(np.asarray(charge, dtype=np.float64))
    x = 0.3 * B * r / (2.0 * np.maximum(pt, 1e-12))
    with np.errstate(invalid="ignore"):
        d = -q * np.arcsin(np.where(x <= 1.0, x, np.nan))
    return np.where(q == 0, 0.0, d)


def propagate(pt, eta, phi, charge, r: float, z: float, B: float):
    """Impact point (η, φ, reached) of particles from the origin on the cylinder (r, |z| ≤ z) + end faces.

    Helix in a uniform field B along +z. Barrel hit at transverse arc length s = 2R·asin(r/2R),
    R = pT/(0.3B); if |s·sinh η| > z (or the particle curls up) the endcap face is hit instead at
    s = z/|sinh η|, with transverse radius 2R·|sin(s/2R)| and φ = φ0 − q·s/(2R), provided s ≤ πR
    (within half a turn; ``reached`` is False otherwise and for particles that curl up at |η| ≈ 0).
    """
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    q = np.sign(np.asarray(charge, dtype=np.float64))
    charged = q != 0
    R = np.where(charged, np.maximum(pt, 1e-12) / (0.3 * B), np.inf)
    sh = np.sinh(eta)
    x = r / (2.0 * R)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_barrel = np.where(charged, np.where(x <= 1.0, 2.0 * R * np.arcsin(np.minimum(x, 1.0)), np.inf), r)
        z_barrel = s_barrel * sh
        barrel = np.isfinite(s_barrel) & (np.abs(z_barrel) <= z)
        # endcap
        s_end = z / np.maximum(np.abs(sh), 1e-12)
        r_end = np.where(charged, 2.0 * R * np.abs(np.sin(s_end / (2.0 * R))), s_end)
        dphi_end = np.where(charged, -q * s_end / (2.0 * R), 0.0)
        dphi_barrel = np.where(charged, -q * np.arcsin(np.minimum(x, 1.0)), 0.0)
        eta_b = np.arcsinh(z_barrel / r)
        eta_e = np.arcsinh(np.sign(sh) * z / np.maximum(r_end, 1e-9))
    eta_hit = np.where(barrel, eta_b, eta_e)
    phi_hit = wrap_phi(phi + np.where(barrel, dphi_barrel, dphi_end))
    # endcap only within the first half turn (s ≤ πR): longer loopers range out in the tracker material
    reached = barrel | ((s_end <= math.pi * R) & (r_end > 1e-3))
    return eta_hit, phi_hit, reached


def resolution(e, a: float, c: float, noise: float = 0.0):
    """Relative resolution σ/E = a/√E ⊕ c ⊕ noise/E (quadrature sum), E in GeV."""
    e = np.maximum(np.asarray(e, dtype=np.float64), 1e-12)
    return np.sqrt(a * a / e + c * c + (noise / e) ** 2)


def smear(e, a: float, c: float, rng: np.random.Generator):
    """E → E·(1 + σ/E·N(0,1)) with σ/E = a/√E ⊕ c, clipped at 0 (a shower cannot be negative)."""
    e = np.asarray(e, dtype=np.float64)
    if e.size == 0:
        return e.copy()
    return np.maximum(e * (1.0 + resolution(e, a, c) * rng.standard_normal(e.shape)), 0.0)


_EM = (11, 22)
_MU = 13


def simulate(p: Particles, cfg: DetectorConfig, rng: np.random.Generator) -> Deposits:
    """Detector response of one event's visible final-state particles (see module docstring)."""
    apid = np.abs(p.pid)
    pt, eta, phi = p.pt, p.eta, p.phi
    charged = p.charge != 0
    # --- tracks
    is_mu = apid == _MU
    eff = np.where(is_mu, cfg.mu_eff, cfg.trk_eff)
    sel = charged & (np.abs(eta) < cfg.trk_eta) & (pt > cfg.trk_ptmin)
    keep = sel & (rng.random(len(p)) < eff)
    t_eta, t_phi, t_ok = propagate(pt[keep], eta[keep], phi[keep], p.charge[keep], cfg.r_ecal, cfg.z_ecal, cfg.B)
    rel = np.hypot(cfg.trk_res, cfg.trk_res_pt * pt[keep])
    t_pt = pt[keep] * (1.0 + rel * rng.standard_normal(keep.sum()))
    t_ok &= t_pt > 0
    # --- calorimeter impact points
    e_eta, e_phi, e_ok = propagate(pt, eta, phi, p.charge, cfg.r_ecal, cfg.z_ecal, cfg.B)
    h_eta, h_phi, h_ok = propagate(pt, eta, phi, p.charge, cfg.r_hcal, cfg.z_hcal, cfg.B)
    e_ok &= np.abs(e_eta) < cfg.calo_eta
    h_ok &= np.abs(h_eta) < cfg.calo_eta
    n = len(p)
    is_em = np.isin(apid, _EM)
    is_had = ~is_em & ~is_mu
    ecal_e = np.zeros(n)
    ecal_kind = np.full(n, MIP, dtype=np.int8)
    hcal_e = np.zeros(n)
    # EM
    ecal_e[is_em] = smear(p.e[is_em], cfg.ecal_a, cfg.ecal_c, rng)
    ecal_kind[is_em] = EM_SHOWER
    # muons
    ecal_e[is_mu] = np.minimum(cfg.mip_ecal, p.e[is_mu])
    hcal_e[is_mu] = np.minimum(cfg.mip_hcal, np.maximum(p.e[is_mu] - cfg.mip_ecal, 0.0))
    # hadrons
    ih = np.flatnonzero(is_had)
    e_vis = smear(cfg.had_resp * p.e[ih], cfg.hcal_a, cfg.hcal_c, rng)
    starts_in_ecal = rng.random(len(ih)) < cfg.had_pint_ecal
    frac = np.where(starts_in_ecal, rng.beta(cfg.had_beta[0], cfg.had_beta[1], len(ih)), 0.0)
    e_in_ecal = frac * e_vis
    mip = np.where(charged[ih] & ~starts_in_ecal, np.minimum(cfg.mip_ecal, e_vis), 0.0)
    ecal_e[ih] = e_in_ecal + mip
    ecal_kind[ih] = np.where(starts_in_ecal, HAD_SHOWER, MIP)
    hcal_e[ih] = e_vis - ecal_e[ih]
    # a charged particle that never reaches the ECAL face deposits nothing
    ecal_m = e_ok & (ecal_e > 0)
    hcal_m = h_ok & e_ok & (hcal_e > 0)
    return Deposits(
        trk_eta=t_eta[t_ok],
        trk_phi=t_phi[t_ok],
        trk_pt=t_pt[t_ok],
        ecal_eta=e_eta[ecal_m],
        ecal_phi=e_phi[ecal_m],
        ecal_e=ecal_e[ecal_m],
        ecal_kind=ecal_kind[ecal_m],
        hcal_eta=h_eta[hcal_m],
        hcal_phi=h_phi[hcal_m],
        hcal_e=hcal_e[hcal_m],
    )
