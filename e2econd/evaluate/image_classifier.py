"""Image-level classifier two-sample test (CaloChallenge's low-level test) on full E2E jet images.

A small CNN sees the whole three-channel 125×125 image, log-scaled pixel by pixel
(``sign(E)·log1p(|E| / 0.05 GeV)``, so the small ECAL readout values and the 60 GeV core are both
resolved), together with the jet's conditions (log pt, log(m0 + 1 GeV), y) as extra inputs, so that a
generator that ignores its conditions is caught too. Network: a 5×5 stride-5 "tower patchify"
convolution (the detector's own 25×25 trigger-tower grid; a learned linear map of each tower's 75
pixel values, so sub-tower structure is kept), two 3×3 convolutions at 25×25 and two at 13×13, mean
and max pooling, and an MLP with the conditions. Protocol and seeds: :mod:`e2econd.evaluate.training`.

Images are stored sparsely (``SparseImages``: the non-zero log-scaled pixels as uint16 index +
float16 value, ~7 kB per jet instead of 188 kB) and densified batch by batch, so 10,000 vs 10,000
jets fit in ~150 MB; inputs may be arrays or iterators of chunks (e.g. ``iter_e2e``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from e2econd.evaluate.training import fit_and_score, over_seeds

#: energy scale of the pixel log transform, GeV
E0_GEV = 0.05
#: the log-scaled values are multiplied by this to be O(1) (log1p(60 GeV / E0) ≈ 7)
LOG_SCALE = 0.25
NPIX = 125
PER_JET = 3 * NPIX * NPIX
#: ring edges (ΔR from the jet axis) of the per-channel radial energy profile given to the head
RING_EDGES = (0.05, 0.1, 0.2, 0.4)
#: bin edges (GeV) of the per-channel pixel-energy spectrum (counts of non-zero pixels per bin) given to
#: the head: it resolves the readout's small and negative values, where an energy scale shows first
SPECTRUM_EDGES = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: default cap on training jets per seed (both samples together), to keep to the time budget
MAX_TRAIN = 4000


def log_scale(images) -> np.ndarray:
    """Pixel transform fed to the CNN: ``LOG_SCALE · sign(E) · log1p(|E| / E0_GEV)`` (float32; 0 stays 0)."""
    x = np.asarray(images, dtype=np.float32)
    return (np.sign(x) * np.log1p(np.abs(x) / np.float32(E0_GEV)) * np.float32(LOG_SCALE)).astype(np.float32)


def _ring_matrix() -> np.ndarray:
    """(125², n_rings) one-hot: which ring of ``RING_EDGES`` each pixel centre lies in."""
    d = (np.arange(NPIX) - 62) * 0.0174
    r = np.hypot(d[:, None], d[None, :]).ravel()
    ring = np.searchsorted(np.asarray(RING_EDGES), r, side="right")
    return np.eye(len(RING_EDGES) + 1)[ring]


N_SUMMARY = 3 * (1 + len(RING_EDGES) + 1 + len(SPECTRUM_EDGES) + 1)


def _slog(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def image_summary(images: np.ndarray) -> np.ndarray:
    """Per-jet summary of images (n,3,125,125) (GeV) fed to the head beside the CNN, (n, 3·(1 + 5 + 12))
    float32: per channel the signed log sign(S)·log1p(|S| / 1 GeV) of its total energy, then of its
    energy in each ring of ``RING_EDGES`` (radial profile); then per channel log1p of the number of
    non-zero pixels in each bin of ``SPECTRUM_EDGES`` (pixel-energy spectrum)."""
    n = len(images)
    flat = images.reshape(n, 3, NPIX * NPIX)
    rings = flat.astype(np.float64) @ _ring_matrix()  # (n, 3, 5)
    jet, ch, pix = np.nonzero(flat)
    nb = len(SPECTRUM_EDGES) + 1
    b = np.searchsorted(np.asarray(SPECTRUM_EDGES, np.float32), flat[jet, ch, pix], side="right")
    spec = np.bincount((jet * 3 + ch) * nb + b, minlength=n * 3 * nb).reshape(n, 3 * nb)
    return np.column_stack([_slog(rings.sum(2)), _slog(rings.reshape(n, -1)), np.log1p(spec)]).astype(np.float32)


def iter_image_chunks(images, size: int = 256) -> Iterable[np.ndarray]:
    """(k,3,125,125) arrays from an array (cut into ``size``-jet chunks), an iterable of arrays, or of chunks
    with an ``.images`` field (e.g. ``E2EChunk``)."""
    if isinstance(images, np.ndarray):
        for s in range(0, len(images), size):
            yield images[s : s + size]
        return
    for ch in images:
        yield np.asarray(getattr(ch, "images", ch))


class SparseImages:
    """Log-scaled jet images (:func:`log_scale`) kept sparse: per jet its non-zero pixels.

    ``index`` uint16 (flat channel-last position (ieta·125 + iphi)·3 + c), ``values`` float16, ``offsets``
    int64 (n+1,), and ``summary`` (n, k) float32, the per-jet inputs computed from the full-precision
    image (:func:`image_summary`). ``dense(idx)`` rebuilds a float32 batch (B,3,125,125) in channels_last
    memory format.
    """

    def __init__(self, index: np.ndarray, values: np.ndarray, offsets: np.ndarray, summary: np.ndarray):
        self.index, self.values, self.offsets, self.summary = index, values, offsets, summary

    @classmethod
    def from_images(cls, images, max_jets: int | None = None) -> SparseImages:
        """From an array (n,3,125,125), or an iterable of such arrays / of ``E2EChunk``s (streamed)."""
        if isinstance(images, SparseImages):
            return images if max_jets is None else images.take(np.arange(min(len(images), max_jets)))
        idx_parts, val_parts, counts, sums, n = [], [], [], [], 0
        for chunk in iter_image_chunks(images):
            if chunk.ndim != 4 or chunk.shape[1:] != (3, NPIX, NPIX):
                raise ValueError(f"image classifier: images must be (n, 3, 125, 125), got {chunk.shape}")
            if max_jets is not None:
                chunk = chunk[: max(0, max_jets - n)]
            if not np.isfinite(chunk).all():
                raise ValueError(f"image classifier: non-finite pixel values in jets {n}..{n + len(chunk) - 1}")
            flat = log_scale(chunk).transpose(0, 2, 3, 1).reshape(len(chunk), PER_JET)
            jet, pos = np.nonzero(flat)
            idx_parts.append(pos.astype(np.uint16))
            val_parts.append(flat[jet, pos].astype(np.float16))
            counts.append(np.bincount(jet, minlength=len(chunk)))
            sums.append(image_summary(chunk))
            n += len(chunk)
            if max_jets is not None and n >= max_jets:
                break
        offsets = np.zeros(n + 1, dtype=np.int64)
        if counts:
            np.cumsum(np.concatenate(counts), out=offsets[1:])
        cat = np.concatenate
        return cls(
            cat(idx_parts) if idx_parts else np.zeros(0, np.uint16),
            cat(val_parts) if val_parts else np.zeros(0, np.float16),
            offsets,
            cat(sums) if sums else np.zeros((0, N_SUMMARY), np.float32),
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return int(self.index.nbytes + self.values.nbytes + self.offsets.nbytes)

    def _gather(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``index``/``values`` of jets ``idx`` (in order) and the batch row of each."""
        idx = np.asarray(idx, dtype=np.int64)
        starts, lens = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        row = np.repeat(np.arange(len(idx)), lens)
        first = np.cumsum(lens) - lens
        return np.repeat(starts - first, lens) + np.arange(int(lens.sum())), row

    def take(self, idx) -> SparseImages:
        pos, row = self._gather(idx)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=len(idx)), out=offsets[1:])
        return SparseImages(self.index[pos], self.values[pos], offsets, self.summary[np.asarray(idx, dtype=np.int64)])

    def dense(self, idx):
        """float32 torch tensor (len(idx), 3, 125, 125), channels_last."""
        import torch

        pos, row = self._gather(idx)
        out = torch.zeros(len(idx) * PER_JET, dtype=torch.float32)
        flat = torch.from_numpy(row * PER_JET + self.index[pos].astype(np.int64))
        out[flat] = torch.from_numpy(self.values[pos].astype(np.float32))
        return out.view(len(idx), NPIX, NPIX, 3).permute(0, 3, 1, 2)  # channels_last without a copy

    @staticmethod
    def concat(parts: list[SparseImages]) -> SparseImages:
        counts = np.concatenate([np.diff(p.offsets) for p in parts])
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        cat = np.concatenate
        return SparseImages(
            cat([p.index for p in parts]), cat([p.values for p in parts]), offsets, cat([p.summary for p in parts])
        )


def condition_features(cond, n: int) -> np.ndarray:
    """(n, 3) [log pt, log(m0 + 1 GeV), y] from a dict {"pt", "m0", "y"} or an (n, 3) array [pt, m0, y] (GeV);
    None gives (n, 0) (no condition inputs)."""
    if cond is None:
        return np.zeros((n, 0))
    if isinstance(cond, dict):
        cols = [np.asarray(cond[k], dtype=np.float64) for k in ("pt", "m0", "y")]
    else:
        arr = np.asarray(cond, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"image classifier: conditions must be (n, 3) [pt, m0, y], got shape {arr.shape}")
        cols = list(arr.T)
    if any(len(c) != n for c in cols):
        raise ValueError(f"image classifier: {n} images but {len(cols[0])} condition rows")
    pt, m0, y = cols
    if (pt <= 0).any() or (m0 <= -1).any() or not all(np.isfinite(c).all() for c in cols):
        raise ValueError("image classifier: conditions need finite pt > 0 and m0 > -1 GeV")
    return np.column_stack([np.log(pt), np.log(m0 + 1.0), y])


def _map_rings(m: int):
    """(m², 3) averaging weights of an m×m feature map over its centre cell, the 8 cells around it and
    the rest: position-aware pooling (the core stays distinguishable from the periphery) with few weights."""
    import torch

    c = m // 2
    i = torch.arange(m)
    cheb = torch.maximum((i[:, None] - c).abs(), (i[None, :] - c).abs()).flatten()
    ring = torch.clamp(cheb, max=2)
    w = torch.nn.functional.one_hot(ring, 3).float()
    return w / w.sum(0, keepdim=True)


def build_cnn(n_jet: int, width: int = 8):
    """The classifier network: ``net(images (B,3,125,125), jet (B, n_jet)) -> logits (B, 1)``.

    Tower patchify 125² -> 25² (2w channels), 3×3 conv, stride-2 3×3 conv -> 13² (4w), 3×3 conv,
    stride-2 3×3 conv -> 7² (BatchNorm + ReLU after each); the 7×7 map is averaged over its centre cell,
    the ring around it and the rest (:func:`_map_rings`), max-pooled, and joined with the per-jet inputs
    in an MLP (dropout 0.2).
    """
    import torch
    from torch import nn

    class ImageCNN(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.features = nn.Sequential(
                nn.Conv2d(3, 2 * w, 5, stride=5),  # tower patchify: 125x125 -> 25x25
                nn.BatchNorm2d(2 * w),
                nn.ReLU(),
                nn.Conv2d(2 * w, 2 * w, 3, padding=1),
                nn.BatchNorm2d(2 * w),
                nn.ReLU(),
                nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),  # -> 13x13
                nn.BatchNorm2d(4 * w),
                nn.ReLU(),
                nn.Conv2d(4 * w, 4 * w, 3, padding=1),
                nn.BatchNorm2d(4 * w),
                nn.ReLU(),
                nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1),  # -> 7x7
                nn.BatchNorm2d(4 * w),
                nn.ReLU(),
            )
            self.register_buffer("rings", _map_rings(7))
            n_pool = 4 * w * (self.rings.shape[1] + 1)
            self.jet_head = nn.Sequential(
                nn.Linear(n_jet, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
            )
            self.image_head = nn.Sequential(
                nn.Dropout(0.2), nn.Linear(n_pool + n_jet, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 1)
            )
            nn.init.zeros_(self.image_head[-1].weight)  # starts as the per-jet MLP; the image adds what it can

        n_stages = 2
        stage = 1

        def set_stage(self, k: int) -> None:
            """Stage 0: only the per-jet MLP trains (the image is not used); stage 1: the CNN and its head
            train on top of the frozen per-jet MLP."""
            self.stage = k
            for p in self.jet_head.parameters():
                p.requires_grad_(k == 0)
            for mod in (self.features, self.image_head):
                for p in mod.parameters():
                    p.requires_grad_(k == 1)

        def forward(self, x, jet):
            """``x``: image batch, or a callable returning it (not called in stage 0: no image needed)."""
            out = self.jet_head(jet)
            if self.stage == 0:
                return out
            h = self.features(x() if callable(x) else x).flatten(2)  # (B, 4w, 49)
            pooled = torch.cat([(h @ self.rings).flatten(1), h.amax(2)], dim=1)
            return out + self.image_head(torch.cat([pooled, jet], dim=1))

    return ImageCNN().to(memory_format=torch.channels_last)


def jet_inputs(sparse: SparseImages, cond, n: int) -> np.ndarray:
    """Per-jet inputs beside the image: the conditions (:func:`condition_features`) and the image summary
    (:func:`image_summary`: channel energies, radial profile, pixel-energy spectrum; CaloChallenge's
    classifiers likewise see the layer energies next to the voxels). The CNN alone does not find a
    5 % energy scale or a 10 % core-energy move at 2,000 jets per side; with the summary it does."""
    return np.column_stack([condition_features(cond, n), sparse.summary.astype(np.float64)])


def image_classifier_auc(
    images_a,
    cond_a,
    images_b,
    cond_b,
    *,
    seeds=(0, 1, 2),
    max_epochs: int = 12,
    patience: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 8,
    max_train: int | None = MAX_TRAIN,
    threads: int = 2,
    progress: bool | None = None,
) -> dict:
    """Held-out AUC of the image CNN separating sample a (label 0) from sample b (label 1), over ``seeds``.

    ``images_*``: arrays (n,3,125,125) in GeV, iterables of such arrays or ``E2EChunk``s, or
    ``SparseImages`` (build once with ``SparseImages.from_images`` to reuse a sample for value and
    floor); ``cond_*``: dict {"pt","m0","y"} or (n,3) array [pt, m0, y] (GeV), or None for no
    conditions (both or neither). ``max_train`` caps the training jets per seed (both samples
    together; None = no cap). Returns {"auc", "auc_err" (std over seeds), "per_seed", "epochs",
    "n_train", "n_test", "time_s", "max_train"} plus the aliases "value", "std", "values".
    """
    import torch
    from tqdm.auto import tqdm

    from e2econd.utils import bar_disabled

    sa, sb = SparseImages.from_images(images_a), SparseImages.from_images(images_b)
    if (cond_a is None) != (cond_b is None):
        raise ValueError("image classifier: give conditions for both samples or for neither")
    data = SparseImages.concat([sa, sb])
    C = np.concatenate([jet_inputs(sa, cond_a, len(sa)), jet_inputs(sb, cond_b, len(sb))])
    y = np.concatenate([np.zeros(len(sa)), np.ones(len(sb))])

    def prepare(tr):
        mu, sd = C[tr].mean(0), C[tr].std(0)
        cs = torch.as_tensor((C - mu) / np.where(sd > 0, sd, 1.0), dtype=torch.float32)
        return lambda idx: ((lambda: data.dense(idx)), cs[torch.as_tensor(idx)])

    bar = tqdm(total=len(seeds), desc="image classifier", unit="seed", disable=bar_disabled(progress), leave=False)

    def one(seed):
        res = fit_and_score(
            y,
            seed,
            prepare,
            lambda: build_cnn(C.shape[1], width),
            max_epochs=max_epochs,
            patience=patience,
            batch_size=batch_size,
            lr=lr,
            min_steps=300,
            min_patience_steps=60,
            max_train=max_train,
            eval_batch=512,
            on_epoch=lambda e, vl: bar.set_postfix(epoch=e, val_loss=f"{vl:.4f}"),
        )
        bar.update(1)
        return res

    try:
        out = over_seeds(one, seeds, threads=threads)
    finally:
        bar.close()
    out["max_train"] = max_train
    return out
