"""Classifier two-sample test (CaloChallenge style): can a small network tell generated from real?

A small MLP is trained on standardised high-level features to separate sample 0 (real) from
sample 1 (generated). The data are split per seed into train (50 %), validation (20 %, early
stopping on its loss) and held-out test (30 %); the test AUC is reported as mean ± std over
several seeds. AUC 0.5 = indistinguishable (perfect generator); 1.0 = fully separable.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc_score(labels, scores) -> float:
    """ROC AUC = P(score of a positive > score of a negative) (+½ for ties), via the rank-sum statistic."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _train_one(
    X: np.ndarray, y: np.ndarray, seed: int, hidden: int, max_epochs: int, patience: int, batch_size: int, lr: float
) -> float:
    import torch

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X))
    n_tr, n_va = int(0.5 * len(X)), int(0.2 * len(X))
    tr, va, te = idx[:n_tr], idx[n_tr : n_tr + n_va], idx[n_tr + n_va :]
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Xs = torch.as_tensor((X - mu) / sd, dtype=torch.float32)
    ys = torch.as_tensor(y, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d = X.shape[1]
    net = torch.nn.Sequential(
        torch.nn.Linear(d, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    lossf = torch.nn.BCEWithLogitsLoss()
    tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
    # small samples: smaller batches and at least ~400 optimiser steps (patience ~100 steps) so that
    # a few hundred jets still train properly; large samples: max_epochs / patience in epochs
    batch_size = int(min(batch_size, max(32, len(tr) // 8)))
    steps = -(-len(tr) // batch_size)
    max_epochs = max(max_epochs, -(-400 // steps))
    patience = max(patience, -(-100 // steps))
    best, best_state, bad = float("inf"), None, 0
    for _ in range(max_epochs):
        net.train()
        perm = tr_t[torch.randperm(len(tr_t), generator=g)]
        for s in range(0, len(perm), batch_size):
            b = perm[s : s + batch_size]
            opt.zero_grad()
            loss = lossf(net(Xs[b]).squeeze(1), ys[b])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vl = float(lossf(net(Xs[va_t]).squeeze(1), ys[va_t]))
        if vl < best - 1e-5:
            best, bad = vl, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        scores = net(Xs[torch.as_tensor(te)]).squeeze(1).numpy()
    return auc_score(y[te], scores)


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

    Returns {"value": mean AUC, "std": std over seeds, "values": [...]}. Use equal sample sizes.
    """
    import torch

    X_real, X_gen = np.asarray(X_real, np.float64), np.asarray(X_gen, np.float64)
    X = np.concatenate([X_real, X_gen])
    y = np.concatenate([np.zeros(len(X_real)), np.ones(len(X_gen))])
    # a tiny MLP is fastest single-threaded; several threads on a busy 2-core box are ~20x slower
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vals = [_train_one(X, y, int(s), hidden, max_epochs, patience, batch_size, lr) for s in seeds]
    finally:
        torch.set_num_threads(n_threads)
    return {
        "value": float(np.mean(vals)),
        "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
        "values": [float(v) for v in vals],
    }
