"""One training loop for every classifier two-sample test (CaloChallenge protocol).

Per seed the two samples (label 0 and 1) are split, per class, into train (50 %), validation
(20 %) and held-out test (30 %) with a seed-dependent permutation, so each seed sees a *different
data split*. A network is trained with Adam on the binary cross-entropy, the validation loss is
checked after every epoch, training stops after ``patience`` epochs without improvement and the
best state is restored; the AUC on the test part is that seed's value. ``over_seeds`` reports the
mean ± std over seeds. AUC 0.5 = indistinguishable, 1.0 = fully separable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

#: train / validation / test fractions of each sample
SPLIT = (0.5, 0.2, 0.3)


def auc_score(labels, scores) -> float:
    """ROC AUC = P(score of a positive > score of a negative) (+½ for ties), via the rank-sum statistic."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def split_indices(y, seed: int, max_train: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / validation / test indices (``SPLIT`` of each class; permutation from ``seed``).

    ``max_train`` caps the number of training jets (split evenly between the classes); the jets left
    out are not used, so the validation and test parts keep their size.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_tr, n_va = int(SPLIT[0] * len(idx)), int(SPLIT[1] * len(idx))
        tr = idx[:n_tr] if max_train is None else idx[: min(n_tr, max_train // 2)]
        parts[0].append(tr)
        parts[1].append(idx[n_tr : n_tr + n_va])
        parts[2].append(idx[n_tr + n_va :])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


def tensor_batches(*tensors) -> Callable:
    """Batch getter for :func:`fit_and_score` over tensors indexable by jet: ``get(idx) -> tuple``."""
    import torch

    def get(idx):
        i = torch.as_tensor(idx)
        return tuple(t[i] for t in tensors)

    return get


def _scores(net, get, idx: np.ndarray, eval_batch: int):
    """Logits of jets ``idx`` (eval mode, no grad), in batches of ``eval_batch``."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), eval_batch):
            out.append(net(*get(idx[s : s + eval_batch])).reshape(-1).float())
    return torch.cat(out) if out else torch.zeros(0)


def _precise_bn(net, get, tr: np.ndarray, max_jets: int = 1024, batch: int = 256) -> None:
    """Recompute BatchNorm running statistics as plain averages over (up to ``max_jets``) training jets
    with the current weights ("precise BN"), so evaluation-mode outputs match what was trained; the
    momentum-averaged statistics lag behind the weights and made validation losses erratic."""
    import torch

    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or not any(p.requires_grad for m in bns for p in m.parameters()):
        return  # no BatchNorm, or a frozen one (a stage that does not train it)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for s in range(0, min(len(tr), max_jets), batch):
            net(*get(tr[s : min(s + batch, max_jets)]))
    for m in bns:
        m.momentum = 0.1


def _train_stage(net, get, tr, va, ys, g, *, lr, weight_decay, batch_size, max_epochs, patience, eval_batch, on_epoch):
    """Adam on the parameters that require grad, early stopping on the validation loss, best state restored.
    Returns (epochs run, best validation loss)."""
    import torch

    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    lossf = torch.nn.BCEWithLogitsLoss()
    best, best_state, bad, epochs = float("inf"), None, 0, 0
    for _ in range(max_epochs):
        net.train()
        perm = tr[torch.randperm(len(tr), generator=g).numpy()]
        for s in range(0, len(perm), batch_size):
            b = perm[s : s + batch_size]
            opt.zero_grad()
            loss = lossf(net(*get(b)).reshape(-1), ys[torch.as_tensor(b)])
            loss.backward()
            opt.step()
        epochs += 1
        _precise_bn(net, get, tr)
        vl = float(lossf(_scores(net, get, va, eval_batch), ys[torch.as_tensor(va)]))
        if on_epoch is not None:
            on_epoch(epochs, vl)
        if vl < best - 1e-5:
            best, bad = vl, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return epochs, best


def fit_and_score(
    y: np.ndarray,
    seed: int,
    prepare: Callable,
    build_net: Callable,
    *,
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    min_steps: int = 400,
    min_patience_steps: int = 100,
    max_train: int | None = None,
    eval_batch: int = 8192,
    on_epoch: Callable | None = None,
) -> dict:
    """Train one classifier on seed ``seed``'s split and return its held-out AUC.

    ``prepare(train_idx)`` returns a batch getter ``get(idx) -> tuple of tensors`` (inputs standardised
    with statistics of the training jets only; see :func:`tensor_batches`); ``build_net()`` returns a
    module taking those tensors and returning one logit per jet. Small samples use smaller batches and
    at least ``min_steps`` optimiser steps (patience at least ``min_patience_steps`` steps), so a few
    hundred jets still train properly. A net with ``n_stages`` > 1 and ``set_stage(k)`` (which sets
    ``requires_grad`` of its parts) is trained stage after stage, each from the previous stage's best
    state, with its own early stopping. Returns {"auc", "epochs" (summed over stages), "n_train",
    "n_val", "n_test"}.
    """
    import torch

    y = np.asarray(y)
    tr, va, te = split_indices(y, seed, max_train)
    get = prepare(tr)
    ys = torch.as_tensor(y, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = build_net()
    batch_size = int(min(batch_size, max(32, len(tr) // 8)))
    steps = -(-len(tr) // batch_size)
    opts = {
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "max_epochs": max(max_epochs, -(-min_steps // steps)),
        "patience": max(patience, -(-min_patience_steps // steps)),
        "eval_batch": eval_batch,
        "on_epoch": on_epoch,
    }
    epochs = 0
    for stage in range(getattr(net, "n_stages", 1)):
        if hasattr(net, "set_stage"):
            net.set_stage(stage)
        epochs += _train_stage(net, get, tr, va, ys, g, **opts)[0]
    auc = auc_score(y[te], _scores(net, get, te, eval_batch).numpy())
    return {"auc": auc, "epochs": epochs, "n_train": len(tr), "n_val": len(va), "n_test": len(te)}


def over_seeds(fn: Callable[[int], dict], seeds: Sequence[int], threads: int = 1) -> dict:
    """Run ``fn(seed) -> fit_and_score result`` for each seed with ``threads`` torch threads.

    Returns {"value"/"auc": mean AUC, "std"/"auc_err": std over seeds (ddof 1; 0 for one seed),
    "values"/"per_seed": the AUCs, "epochs": per seed, "n_train", "n_test" (of the first seed),
    "time_s"}. (A tiny network is fastest single-threaded on a busy 2-core box.)
    """
    import torch

    n_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    t0 = time.perf_counter()
    try:
        res = [fn(int(s)) for s in seeds]
    finally:
        torch.set_num_threads(n_threads)
    vals = [float(r["auc"]) for r in res]
    mean = float(np.mean(vals))
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {
        "value": mean,
        "std": std,
        "values": vals,
        "auc": mean,
        "auc_err": std,
        "per_seed": vals,
        "epochs": [int(r["epochs"]) for r in res],
        "n_train": int(res[0]["n_train"]),
        "n_test": int(res[0]["n_test"]),
        "time_s": time.perf_counter() - t0,
    }
