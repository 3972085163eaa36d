"""Memorisation check: are generated jets closer to the training jets than new real jets are?

Each jet is embedded as its tower image: per channel the energy in each 5×5-pixel tower (the
detector's 25×25 trigger-tower grid), log-scaled, ``log1p(max(E, 0) / 1 GeV)`` → 3·625 = 1875
numbers. Distance = Euclidean distance between embeddings; nearest neighbours are exact (brute force,
``torch.cdist`` in chunks, the winner's distance recomputed in float64 so that a copy gives exactly 0).

For a sample of generated jets, the distance to the nearest training jet is compared with the same for
real jets the model never saw (the test split). Without copying the two distributions agree: the
ratio of medians ≈ 1 and about ``quantile`` (1 %) of the generated jets fall below the real jets'
``quantile``-quantile. Copies of training jets sit at distance ≈ 0: the ratio drops below 1 and the
copy fraction rises above ``quantile`` (``flag`` when it exceeds it by more than 3 standard errors
— binomial, for the generated count and for the estimated quantile — or the median ratio is below
0.5). The copy fraction is the sensitive number: 30 % copies move the median ratio only to ~0.94.
"""

from __future__ import annotations

import numpy as np

from e2econd.evaluate.image_classifier import iter_image_chunks

NPIX, NTOW = 125, 25


def embed(images) -> np.ndarray:
    """(n, 1875) float32 tower embedding of an image array (n,3,125,125) (GeV), or of an iterable of such
    arrays / ``E2EChunk``s (streamed). A 2-D array is taken as already embedded and returned as is."""
    if isinstance(images, np.ndarray) and images.ndim == 2:
        return images.astype(np.float32, copy=False)
    parts = []
    for chunk in iter_image_chunks(images, 512):
        if chunk.ndim != 4 or chunk.shape[1:] != (3, NPIX, NPIX):
            raise ValueError(f"memorisation: images must be (n, 3, 125, 125), got {chunk.shape}")
        tow = chunk.reshape(len(chunk), 3, NTOW, 5, NTOW, 5).sum((3, 5), dtype=np.float64)
        parts.append(np.log1p(np.maximum(tow, 0.0)).reshape(len(chunk), -1).astype(np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, 3 * NTOW * NTOW), np.float32)


def nearest_distances(query: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``query`` (n, d) the distance to its nearest row of ``reference`` (m, d) and that
    row's index. Exact brute force; the distance of the winner is recomputed in float64."""
    import torch

    if len(reference) == 0:
        raise ValueError("memorisation: no reference (training) jets")
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    best_i = np.zeros(len(query), dtype=np.int64)
    for s in range(0, len(query), chunk):
        q = torch.from_numpy(np.ascontiguousarray(query[s : s + chunk], dtype=np.float32))
        best_d = torch.full((len(q),), float("inf"))
        best = torch.zeros(len(q), dtype=torch.int64)
        for r in range(0, len(ref), 4 * chunk):
            d = torch.cdist(q, ref[r : r + 4 * chunk])
            v, i = d.min(1)
            better = v < best_d
            best_d = torch.where(better, v, best_d)
            best = torch.where(better, i + r, best)
        best_i[s : s + chunk] = best.numpy()
    diff = query.astype(np.float64) - reference[best_i].astype(np.float64)
    return np.sqrt((diff * diff).sum(1)), best_i


def _subsample(x: np.ndarray, k: int | None, rng) -> np.ndarray:
    if k is None or len(x) <= k:
        return x
    return x[np.sort(rng.choice(len(x), size=k, replace=False))]


def memorisation(
    generated,
    train,
    real,
    *,
    max_gen: int | None = 2000,
    max_real: int | None = 2000,
    max_train: int | None = None,
    quantile: float = 0.01,
    seed: int = 0,
) -> dict:
    """Nearest-training-jet distances of generated jets against those of real (unseen) jets.

    ``generated``, ``train``, ``real``: image arrays (n,3,125,125), iterables of chunks, or embeddings
    from :func:`embed`. Random subsets of ``max_gen`` generated / ``max_real`` real / ``max_train``
    training jets are used (None = all). Returns {"median_gen", "median_real", "ratio" (median_gen /
    median_real; ≈ 1 without copying, ≪ 1 flags memorisation), "threshold" (the real distances'
    ``quantile``-quantile), "n_copies" (generated jets closer to a training jet than that),
    "copy_fraction", "expected_fraction" (= quantile: the fraction expected without copying), "flag",
    "n_gen", "n_real", "n_train", "distance"}.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"memorisation: quantile must be in (0, 1), got {quantile}")
    rng = np.random.default_rng(seed)
    eg = _subsample(embed(generated), max_gen, rng)
    er = _subsample(embed(real), max_real, rng)
    et = _subsample(embed(train), max_train, rng)
    if len(eg) == 0 or len(er) == 0:
        raise ValueError("memorisation: need at least one generated and one real jet")
    d_gen, _ = nearest_distances(eg, et)
    d_real, _ = nearest_distances(er, et)
    med_g, med_r = float(np.median(d_gen)), float(np.median(d_real))
    thr = float(np.quantile(d_real, quantile))
    n_copies = int((d_gen < thr).sum()) if thr > 0 else int((d_gen <= 0).sum())
    frac = n_copies / len(d_gen)
    ratio = med_g / med_r if med_r > 0 else float("nan")
    # binomial error of the generated count plus that of the estimated quantile (from n_real jets)
    excess = frac - quantile > 3.0 * np.sqrt(quantile * (1 - quantile) * (1 / len(d_gen) + 1 / len(d_real)))
    return {
        "median_gen": med_g,
        "median_real": med_r,
        "ratio": ratio,
        "threshold": thr,
        "n_copies": n_copies,
        "copy_fraction": frac,
        "expected_fraction": quantile,
        "flag": bool(excess or (ratio == ratio and ratio < 0.5)),
        "n_gen": len(eg),
        "n_real": len(er),
        "n_train": len(et),
        "distance": "L2 between log1p(tower energy / GeV) images, 3x25x25 towers",
    }
