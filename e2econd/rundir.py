"""The run directory of ``e2econd train``: its layout, atomic checkpoint writes and validated loads.

Layout (the only place it is spelled out)::

    RUN/config.json                 resolved config + provenance
    RUN/log.jsonl                   one JSON row per log / validation / event
    RUN/checkpoints/last.pt         newest checkpoint (what --resume and `e2econd sample` read)
    RUN/checkpoints/step_NNNNNN.pt  kept every ckpt_every steps (train.keep_step_ckpts)

A checkpoint is a ``torch.save``'d dict (format :data:`CHECKPOINT_FORMAT`) written under a temporary
name and renamed, so a crash never leaves a partial ``last.pt``. :func:`load_checkpoint` turns every
way a file can be bad (missing, truncated, not a checkpoint, another format or major version, a
key missing, non-finite weights) into a one-line :class:`~e2econd.errors.E2EInputError` naming the
file and key.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2econd._version import __version__
from e2econd.config import Config, from_dict
from e2econd.diffusion.schedule import CosineSchedule
from e2econd.errors import E2EInputError
from e2econd.families import get_family
from e2econd.utils import atomic_path

CHECKPOINT_FORMAT = 1
#: keys every checkpoint holds (resume needs all of them; sampling needs the model part)
CHECKPOINT_KEYS = (
    "format",
    "version",
    "step",
    "model",
    "ema",
    "optimizer",
    "scheduler",
    "rng",
    "config",
    "transforms",
    "multiplicity",
    "channels",
    "cond_table",
)
SAMPLING_KEYS = (
    "format",
    "version",
    "step",
    "model",
    "ema",
    "config",
    "transforms",
    "multiplicity",
    "channels",
    "cond_table",
)


# ------------------------------------------------------------------------------------- layout
def config_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "config.json"


def log_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "log.jsonl"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def last_checkpoint(run_dir: str | os.PathLike) -> Path:
    return checkpoint_dir(run_dir) / "last.pt"


def step_checkpoint(run_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{int(step):06d}.pt"


def checkpoint_path(run: str | os.PathLike) -> Path:
    """RUN itself when it is a ``.pt`` file, else RUN/checkpoints/last.pt."""
    p = Path(run)
    return p if p.suffix == ".pt" else last_checkpoint(p)


# ---------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save to a temporary sibling, then rename (never a partial checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise E2EInputError("no checkpoint found (expected checkpoints/last.pt; train first)", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        why = str(exc).split(". ")[0][:120]
        raise E2EInputError(
            f"cannot read checkpoint, truncated or not a torch file ({type(exc).__name__}: {why})", path=path
        ) from None


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict:
    """The checkpoint dict at ``path``, validated (format, major version, ``required`` keys, finite weights)."""
    path = Path(path)
    ck = _read(path)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise E2EInputError(
            f"checkpoint format {fmt!r} is not supported by e2econd {__version__} (expected {CHECKPOINT_FORMAT})",
            path=path,
            key="format",
        )
    ver = str(ck.get("version", "?"))
    if ver.split(".")[:1] != __version__.split(".")[:1]:
        raise E2EInputError(
            f"checkpoint written by e2econd {ver}, incompatible with {__version__}", path=path, key="version"
        )
    for key in required:
        if key not in ck:
            raise E2EInputError("checkpoint lacks this entry (not written by `e2econd train`?)", path=path, key=key)
    for key in ("model", "ema"):
        for name, t in (ck.get(key) or {}).items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise E2EInputError(f"checkpoint holds non-finite weights ({name})", path=path, key=key)
    return ck


def rng_state() -> dict:
    """Global torch / numpy / python (and CUDA) RNG states, saved so that --resume is exact."""
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])  # noqa: NPY002 (global state saved for exact resume)
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# --------------------------------------------------------------------------------------- device
def dist_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) of this process under torchrun; (0, 1, 0) when run alone.
    LOCAL_RANK defaults to RANK (one node)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return rank, world, int(os.environ.get("LOCAL_RANK", str(rank)))


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """'auto'/None -> cuda:LOCAL_RANK if a GPU is visible, else cpu; refuses CUDA without a GPU."""
    if device in (None, "auto"):
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise E2EInputError(f"unknown device '{device}' (cpu, cuda, cuda:N)", key="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise E2EInputError("CUDA device requested but torch sees no GPU", key="device")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


# ----------------------------------------------------------------------------------------- load
@dataclass
class _Shapes:
    """What ``family.build_network`` reads of the training data, rebuilt from a checkpoint's extras."""

    extra: dict


@dataclass
class LoadedRun:
    """A trained run ready for sampling: EMA (or raw) denoiser in eval mode and everything around it."""

    model: torch.nn.Module  # SetTransformer (hits) or TowerTransformer (towers)
    multiplicity: torch.nn.Module  # stage 1: MultiplicityModel (hits) or SummaryModel (towers)
    transforms: Any  # e2econd.data.transforms.Transforms
    config: Config
    cond_table: dict[str, np.ndarray]  # raw pt, m0 (GeV) and y of the training jets
    channels: list[str]
    step: int
    schedule: CosineSchedule
    extras: dict = field(default_factory=dict)  # family-specific fitted objects (tower transform, summary norm)

    @property
    def formulation(self):
        """The run's diffusion formulation (``config.objective``: vpred, edm or flow) on its schedule."""
        from e2econd.diffusion.formulations import from_config

        return from_config(self.config.objective, self.schedule)


def load_run(run_dir: str | os.PathLike, device: str | torch.device | None = "cpu", which: str = "ema") -> LoadedRun:
    """Load RUN_DIR/checkpoints/last.pt (or RUN_DIR itself if it is a .pt file); ``which`` = "ema" | "model"."""
    from e2econd.data.transforms import Transforms

    if which not in ("ema", "model"):
        raise E2EInputError(f"which must be 'ema' or 'model', got {which!r}", key="which")
    path = checkpoint_path(run_dir)
    ck = load_checkpoint(path, SAMPLING_KEYS)
    cfg = from_dict(ck["config"], source=path)
    dev = resolve_device(str(device) if device is not None else None)
    try:
        family = get_family(cfg.model.family)
        extras = family.load_extras(ck)
        model = family.build_network(cfg, _Shapes(extras))
        model.load_state_dict(ck[which])
        mult = family.stage1_from_dict(ck["multiplicity"]).to(dev)
        transforms = Transforms.from_dict(ck["transforms"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, E2EInputError):
            raise
        raise E2EInputError(
            f"checkpoint does not match its config ({type(exc).__name__}: {str(exc)[:160]})", path=path, key=which
        ) from None
    return LoadedRun(
        model.to(dev).eval().requires_grad_(False),
        mult,
        transforms,
        cfg,
        {k: np.asarray(v) for k, v in ck["cond_table"].items()},
        list(ck["channels"]),
        int(ck["step"]),
        CosineSchedule(cfg.train.schedule_s),
        extras,
    )
