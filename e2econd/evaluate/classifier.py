"""Classifier two-sample tests (CaloChallenge style): can a small network tell generated from real?

Two classifiers separate sample 0 (real) from sample 1 (generated): an MLP on standardised
high-level features (``classifier_auc``) and a Deep Sets network on the jets' hits
(``hit_classifier_auc``: position, energy and channel of each hit), which also sees spatial
structure that summary features average away. The CNN on the full image is in
:mod:`e2econd.evaluate.image_classifier`. All share one training loop (:mod:`e2econd.evaluate.training`):
per seed a stratified split into train (50 %), validation (20 %, early stopping on its loss) and held-out
test (30 %); the test AUC is reported as mean ± std over several seeds. AUC 0.5 = indistinguishable
(perfect generator); 1.0 = fully separable.
"""

from __future__ import annotations

import numpy as np

from e2econd.evaluate.training import auc_score, fit_and_score, over_seeds, tensor_batches

__all__ = ["auc_score", "classifier_auc", "hit_classifier_auc", "hit_set_arrays"]


def classifier_auc(
    X_real,
    X_gen,
    *,
    seeds=(0, 1, 2),
    hidden: int = 64,
    max_epochs: int = 30,
    patience: int = 4,
    batch_size: int = 512,
    lr: float = 3e-3,
) -> dict:
    """Held-out AUC of an MLP separating X_real (label 0) from X_gen (label 1), over ``seeds``.

    Returns :func:`e2econd.evaluate.training.over_seeds`'s dict ({"value": mean AUC, "std": std over
    seeds, "values": [...], also "auc", "auc_err", "per_seed", "epochs", "n_train", "n_test", "time_s"}).
    Use equal sample sizes.
    """
    import torch

    X_real, X_gen = np.asarray(X_real, np.float64), np.asarray(X_gen, np.float64)
    X = np.concatenate([X_real, X_gen])
    y = np.concatenate([np.zeros(len(X_real)), np.ones(len(X_gen))])

    def prepare(tr):
        mu, sd = X[tr].mean(0), X[tr].std(0)
        sd = np.where(sd > 0, sd, 1.0)
        return tensor_batches(torch.as_tensor((X - mu) / sd, dtype=torch.float32))

    def build_net():
        d = X.shape[1]
        return torch.nn.Sequential(
            torch.nn.Linear(d, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )

    opts = {"max_epochs": max_epochs, "patience": patience, "batch_size": batch_size, "lr": lr}
    return over_seeds(lambda s: fit_and_score(y, s, prepare, build_net, **opts), seeds)


# ----------------------------------------------------------------------------- hit sets
HIT_CHANNELS = ("tracks", "ecal", "hcal")


def hit_set_arrays(deposits: list[dict], k: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed-size hit sets for the hit-level classifier.

    ``deposits``: per jet ``{channel: (points (n, 2) [Δη, Δφ], energies (n,))}`` as returned by
    ``features.jet_deposits(image, pool=1)`` (tracks and ECAL per pixel, HCAL per tower). Per jet and
    channel the ``k`` most energetic deposits are kept. Returns ``hits`` (n_jets, 3k, 7) =
    [Δη, Δφ, ΔR from the jet axis, log E (GeV), one-hot channel], ``mask`` (n_jets, 3k) bool (False = padding) and
    ``jet`` (n_jets, 6) = [log(1 + number of deposits), log(1 + energy sum / GeV)] per channel, over
    all positive deposits (not only the kept ones).
    """
    hits = np.zeros((len(deposits), 3 * k, 7), dtype=np.float32)
    mask = np.zeros((len(deposits), 3 * k), dtype=bool)
    jet = np.zeros((len(deposits), 2 * len(HIT_CHANNELS)), dtype=np.float64)
    for j, dep in enumerate(deposits):
        for c, name in enumerate(HIT_CHANNELS):
            pts, e = dep[name]
            e = np.asarray(e, dtype=np.float64)
            keep = e > 0
            pts, e = np.asarray(pts)[keep], e[keep]
            jet[j, c], jet[j, len(HIT_CHANNELS) + c] = np.log1p(len(e)), np.log1p(e.sum())
            order = np.argsort(-e, kind="stable")[:k]
            m = len(order)
            sl = slice(c * k, c * k + m)
            hits[j, sl, 0:2] = pts[order]
            hits[j, sl, 2] = np.hypot(pts[order, 0], pts[order, 1])
            hits[j, sl, 3] = np.log(e[order])
            hits[j, sl, 4 + c] = 1.0
            mask[j, sl] = True
    return hits, mask, jet


def hit_classifier_auc(
    real: tuple[np.ndarray, np.ndarray, np.ndarray],
    gen: tuple[np.ndarray, np.ndarray, np.ndarray],
    cond_real: np.ndarray | None = None,
    cond_gen: np.ndarray | None = None,
    *,
    seeds=(0, 1, 2),
    hidden: int = 32,
    max_epochs: int = 30,
    patience: int = 4,
    batch_size: int = 256,
    lr: float = 2e-3,
) -> dict:
    """Held-out AUC of a Deep Sets / particle-flow network separating real (0) from generated (1) jets
    on their hits (``hit_set_arrays`` output), over ``seeds``.

    Per hit φ(Δη, Δφ, ΔR, log E, channel) → masked sum over the jet's hits (normalised by the maximum
    number of hits) together with the per-channel hit counts and energy sums and the optional per-jet
    conditions (e.g. log pt, log m0) → F → logit. Unlike the high-level classifier it sees where each hit is and
    what it carries, so it also catches wrong spatial structure (a missing core, wrong hit clustering)
    that summary features average away. Returns the same dict as :func:`classifier_auc`.
    """
    import torch

    H = np.concatenate([real[0], gen[0]]).astype(np.float32)
    Mk = np.concatenate([real[1], gen[1]])
    y = np.concatenate([np.zeros(len(real[0])), np.ones(len(gen[0]))])
    jet = np.concatenate([real[2], gen[2]]).astype(np.float64)
    if cond_real is not None and cond_gen is not None:
        jet = np.column_stack([jet, np.concatenate([cond_real, cond_gen]).astype(np.float64)])
    n_feat = 4  # Δη, Δφ, ΔR, log E are standardised; the channel one-hot is not

    def prepare(tr):
        sel = Mk[tr]
        vals = H[tr][sel][:, :n_feat].astype(np.float64)
        mu, sd = vals.mean(0), vals.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        Hs = H.copy()
        Hs[..., :n_feat] = np.where(Mk[..., None], (H[..., :n_feat] - mu) / sd, 0.0)
        jmu, jsd = jet[tr].mean(0), jet[tr].std(0)
        jsd = np.where(jsd > 0, jsd, 1.0)
        return tensor_batches(
            torch.as_tensor(Hs, dtype=torch.float32),
            torch.as_tensor(Mk, dtype=torch.float32),
            torch.as_tensor((jet - jmu) / jsd, dtype=torch.float32),
        )

    class DeepSets(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.phi = torch.nn.Sequential(
                torch.nn.Linear(H.shape[2], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU()
            )
            self.F = torch.nn.Sequential(
                torch.nn.Linear(hidden + jet.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
            )

        def forward(self, hits, mask, jet_feats):
            pooled = (self.phi(hits) * mask[..., None]).sum(1) / float(H.shape[1])
            return self.F(torch.cat([pooled, jet_feats], dim=1))

    opts = {"max_epochs": max_epochs, "patience": patience, "batch_size": batch_size, "lr": lr}
    return over_seeds(lambda s: fit_and_score(y, s, prepare, DeepSets, **opts), seeds)
