"""Configuration: the training ``Config`` (dataclasses, the ``cpu`` / ``gpu`` presets, validation, JSON
load/save, :func:`resolve_config`) and the sampling options :class:`SampleOptions`.

A config has five sections (``model``, ``multiplicity``, ``train``, ``data``, ``objective``). A JSON file may
give any subset of keys, optionally ``"preset": "cpu" | "gpu"`` as the starting point; the
resolved config is validated before any work starts (bad values -> one-line ``E2EInputError``
naming the file and key) and written back into the run directory as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2econd.config_values import _coerce, parse_channels  # noqa: F401 - parse_channels re-exported
from e2econd.data.geometry import CHANNELS
from e2econd.errors import E2EInputError
from e2econd.sample_options import SampleOptions  # noqa: F401 - re-exported: e2econd.config is where callers find it

CONFIG_FORMAT = 1
FAMILIES = ("hits", "towers")  # --model: hit sets (one token per hit) or tower tokens (one per occupied 5x5 tower)


@dataclass
class ModelConfig:
    """Denoiser shape (thesis: width 64, 8 blocks) and the model family it belongs to."""

    family: str = "hits"  # "hits" | "towers" (FAMILIES); old runs without it are hit models
    width: int = 64  # token width d
    blocks: int = 8  # number of (attention + MLP) blocks
    heads: int = 4  # attention heads; width % heads == 0
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * width
    cond_width: int = 128  # width of the (time + kinematics) conditioning vector fed to adaLN
    fourier_features: int = 16  # Fourier frequencies for t, log pt, log m0
    n_classes: int = 2  # label values y in {0..n_classes-1}; one extra null token
    dropout: float = 0.0


@dataclass
class MultiplicityConfig:
    """Conditional multiplicity model: MLP -> mixture of Gaussians on log(1 + n + u) per channel."""

    components: int = 8
    hidden: int = 64
    steps: int = 1500  # full-batch Adam steps (seconds on CPU)
    lr: float = 3e-3


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpoint cadence."""

    max_steps: int = 2000
    batch_size: int = 32  # global batch in jets (split over DDP ranks)
    max_tokens: int = 0  # >0: cap hits per batch (batches of very large jets get fewer jets)
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay_k = min(ema_decay, (1 + k) / (10 + k))
    cond_drop: float = 0.1  # probability to replace all conditions of a jet by null tokens
    schedule_s: float = 0.008  # cosine schedule offset (thesis)
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    bucket_pool: int = 64  # sort by multiplicity inside pools of bucket_pool * batch_size jets
    seed: int = 0
    log_every: int = 10
    val_every: int = 250
    val_jets: int = 256  # jets of the val split used for the validation loss (0 = all)
    ckpt_every: int = 500
    keep_step_ckpts: bool = True
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    time_limit_min: float = 0.0  # >0: stop (and checkpoint) after this many minutes of training loop


OBJECTIVES = ("vpred", "edm", "flow")  # --objective (e2econd.diffusion.formulations)
BALANCES = ("none", "channel")  # --loss-balance: as the family weighs it, or each channel an equal share
DENSITY_NAMES = ("", "uniform_t", "lognormal_sigma", "logit_normal_t")  # "" = the objective's default


@dataclass
class ObjectiveConfig:
    """Diffusion formulation and its loss (docs/STUDY.md, "Which formulation"): ``name`` vpred | edm | flow,
    the per-jet noise-level density ("" = the objective's own: uniform t, log-normal σ, logit-normal t) with
    its parameters, and the loss balance between channels."""

    name: str = "vpred"
    density: str = ""
    p_mean: float = -1.2  # lognormal_sigma: ln σ ~ N(p_mean, p_std²) (σ = noise-to-signal ratio)
    p_std: float = 1.2
    logit_m: float = 0.0  # logit_normal_t: logit t ~ N(logit_m, logit_s²)
    logit_s: float = 1.0
    balance: str = "none"  # "channel": every channel of a jet carries an equal share of its loss
    student: str = ""  # "consistency": a student distilled by `e2econd distill` (its one sampler: consistency)
    student_steps: int = 0  # the student's default number of network evaluations K
    student_levels: int = 0  # N: intervals of the student's training grid (the levels it may be sampled at)


@dataclass
class DataConfig:
    channels: list[str] = field(default_factory=lambda: ["ecal"])
    dequantize: bool = True  # uniform noise within the pixel / tower each step


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    multiplicity: MultiplicityConfig = field(default_factory=MultiplicityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["format"] = CONFIG_FORMAT
        d["train"]["betas"] = list(d["train"]["betas"])
        return d

    @property
    def channel_ids(self) -> list[int]:
        return [CHANNELS.index(c) for c in self.data.channels]


SECTIONS = {
    "model": ModelConfig,
    "multiplicity": MultiplicityConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "objective": ObjectiveConfig,
}


def _cpu() -> Config:
    """2 CPU cores, ECAL of top jets, <= 10 minutes (timing in docs/BENCHMARKS.md)."""
    return Config(
        model=ModelConfig(width=64, blocks=4, heads=4, cond_width=64),
        multiplicity=MultiplicityConfig(steps=1000),
        train=TrainConfig(
            max_steps=800,  # ~8.5 min on an idle 2-core box (docs/BENCHMARKS.md)
            time_limit_min=9.0,  # hard stop (checkpointed) so the preset fits 10 minutes on any 2-core box
            batch_size=16,
            lr=2e-3,
            warmup_steps=50,
            ema_decay=0.995,
            val_every=200,
            val_jets=64,
            ckpt_every=200,
            bf16=False,
            threads=2,
        ),
        preset="cpu",
    )


def _gpu() -> Config:
    """One A100/H100, ~20 minutes: width 192, 8 blocks, batch 256, bf16 autocast."""
    return Config(
        model=ModelConfig(width=192, blocks=8, heads=6, cond_width=256),
        train=TrainConfig(
            max_steps=20000,
            batch_size=256,
            max_tokens=400_000,
            lr=5e-4,
            warmup_steps=1000,
            ema_decay=0.9995,
            val_every=1000,
            val_jets=1024,
            ckpt_every=2000,
            bf16=True,
        ),
        preset="gpu",
    )


PRESETS = {"cpu": _cpu, "gpu": _gpu}


def _towers(cfg: Config) -> Config:
    """The tower family's version of a preset: all three channels, ~100 tokens per jet instead of ~730,
    so wider batches at the same cost (cpu: >= 10x the hit model's training jets/s, docs/BENCHMARKS.md)."""
    cfg.model.family = "towers"
    cfg.data.channels = list(CHANNELS)
    cfg.multiplicity.steps = 2000
    # the formulation study (docs/STUDY.md, issue 17): at equal steps the channel balance of the cell groups
    # gives the tower model's best jet cores, tau21 and hit classifier; the hit family keeps "none" (unmeasured)
    cfg.objective.balance = "channel"
    tr = cfg.train
    if cfg.preset == "cpu":
        cfg.model.width, cfg.model.blocks, cfg.model.heads, cfg.model.cond_width = 64, 4, 4, 64
        tr.batch_size, tr.lr, tr.max_steps, tr.warmup_steps, tr.ema_decay = 64, 1e-3, 4000, 100, 0.998
        tr.val_every, tr.ckpt_every, tr.val_jets = 500, 500, 256
    else:
        tr.batch_size, tr.max_tokens = 1024, 200_000
    return cfg


def preset(name: str, family: str = "hits") -> Config:
    if name not in PRESETS:
        raise E2EInputError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})", key="preset")
    if family not in FAMILIES:
        raise E2EInputError(f"unknown model family '{family}' (choose from {', '.join(FAMILIES)})", key="model")
    cfg = PRESETS[name]()
    return _towers(cfg) if family == "towers" else cfg


def default_preset(device: str | None = None, cuda_available: bool | None = None) -> str:
    """The preset when none is named ("gpu preset when CUDA"): ``gpu`` when training runs on CUDA
    (``device`` is cuda / cuda:N, or no device is given and CUDA is available), else ``cpu``."""
    if str(device or "").startswith("cuda"):
        return "gpu"
    if device is not None and device != "auto":
        return "cpu"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "gpu" if cuda_available else "cpu"


def resolve_config(
    preset_name: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    channels: str | list[str] | None = None,
    device: str | None = None,
    cuda_available: bool | None = None,
    source: object = "options",
    family: str | None = None,
) -> Config:
    """The one config resolution of ``train`` and ``demo``: preset -> file -> options, validated.

    ``preset_name`` None or "auto": :func:`default_preset` of ``device``; ``config_file`` (JSON) is
    applied on top (or from its own ``"preset"``); then ``channels`` (parsed) and ``overrides``
    ``{"section.key": value}`` (None values skipped). ``family`` (``--model``) picks that family's
    version of the preset. Bad values: one-line ``E2EInputError``.
    """
    if preset_name in (None, "auto"):
        preset_name = default_preset(device, cuda_available)
    cfg = preset(preset_name, family or "hits")
    if config_file:
        cfg = load(config_file, base=cfg)
    if channels is not None:
        cfg.data.channels = parse_channels(channels, source="--channels")
    for dotted, val in (overrides or {}).items():
        if val is None:
            continue
        sec, key = dotted.split(".")
        section = getattr(cfg, sec, None)
        if section is None or not hasattr(section, key):
            raise E2EInputError("unknown option", path=source, key=dotted)
        setattr(section, key, val)
    return validate(cfg, source=source)


def from_dict(d: dict[str, Any], *, source: object = None, base: Config | None = None) -> Config:
    """Config from a (possibly partial) dict; unknown keys and wrong types -> E2EInputError."""
    if not isinstance(d, dict):
        raise E2EInputError("config must be a JSON object", path=source)
    d = dict(d)
    d.pop("provenance", None)  # config.json written into a run directory carries its provenance
    fmt = d.pop("format", CONFIG_FORMAT)
    if fmt != CONFIG_FORMAT:
        raise E2EInputError(
            f"config format {fmt} is not supported (expected {CONFIG_FORMAT})", path=source, key="format"
        )
    name = d.pop("preset", None)
    cfg = base if base is not None else (preset(name) if name else Config())
    if name:
        cfg.preset = name
    for sec, values in d.items():
        if sec not in SECTIONS:
            raise E2EInputError(
                f"unknown section (expected one of {', '.join(SECTIONS)}, preset)", path=source, key=sec
            )
        if not isinstance(values, dict):
            raise E2EInputError("section must be a JSON object", path=source, key=sec)
        obj = getattr(cfg, sec)
        types = {f.name: f.type for f in dataclasses.fields(obj)}
        for k, v in values.items():
            if k not in types:
                raise E2EInputError(f"unknown option (known: {', '.join(types)})", path=source, key=f"{sec}.{k}")
            setattr(obj, k, _coerce(v, types[k], source=source, key=f"{sec}.{k}"))
    return cfg


def load(path: str | Path, base: Config | None = None) -> Config:
    """Read a JSON config file (partial configs are applied on top of ``base`` or their preset)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise E2EInputError("config file not found", path=path) from None
    except json.JSONDecodeError as exc:
        raise E2EInputError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path=path) from None
    if base is not None and "preset" in d:
        base = None
    return validate(from_dict(d, source=path, base=base), source=path)


def validate(cfg: Config, *, source: object = None) -> Config:
    """Check every value; the first problem -> E2EInputError naming the key (before any work starts)."""

    def err(key: str, msg: str):
        raise E2EInputError(msg, path=source, key=key)

    m, mu, tr, da = cfg.model, cfg.multiplicity, cfg.train, cfg.data
    for key, val in (
        ("model.width", m.width),
        ("model.blocks", m.blocks),
        ("model.heads", m.heads),
        ("model.cond_width", m.cond_width),
        ("model.fourier_features", m.fourier_features),
        ("multiplicity.components", mu.components),
        ("multiplicity.hidden", mu.hidden),
        ("train.max_steps", tr.max_steps),
        ("train.batch_size", tr.batch_size),
        ("train.log_every", tr.log_every),
        ("train.val_every", tr.val_every),
        ("train.ckpt_every", tr.ckpt_every),
        ("train.bucket_pool", tr.bucket_pool),
    ):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            err(key, f"must be a positive integer, got {val!r}")
    for key, val in (
        ("train.warmup_steps", tr.warmup_steps),
        ("train.val_jets", tr.val_jets),
        ("train.max_tokens", tr.max_tokens),
        ("train.threads", tr.threads),
        ("multiplicity.steps", mu.steps),
        ("train.seed", tr.seed),
    ):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            err(key, f"must be a non-negative integer, got {val!r}")
    if m.width % m.heads:
        err("model.width", f"width {m.width} is not divisible by heads {m.heads}")
    if (m.width // m.heads) % 2:
        err("model.heads", f"head dimension {m.width // m.heads} must be even")
    if m.family not in FAMILIES:
        err("model.family", f"unknown model family {m.family!r} (choose from {', '.join(FAMILIES)})")
    if m.n_classes < 1:
        err("model.n_classes", f"must be >= 1, got {m.n_classes}")
    if not (m.mlp_ratio > 0 and math.isfinite(m.mlp_ratio)):
        err("model.mlp_ratio", f"must be > 0, got {m.mlp_ratio}")
    if not 0.0 <= m.dropout < 1.0:
        err("model.dropout", f"must be in [0, 1), got {m.dropout}")
    for key, val in (("train.lr", tr.lr), ("multiplicity.lr", mu.lr)):
        if not (val > 0 and math.isfinite(val)):
            err(key, f"learning rate must be a positive finite number, got {val}")
    if not (tr.weight_decay >= 0):
        err("train.weight_decay", f"must be >= 0, got {tr.weight_decay}")
    if not all(0.0 <= b < 1.0 for b in tr.betas):
        err("train.betas", f"must be in [0, 1), got {list(tr.betas)}")
    if not 0.0 <= tr.min_lr_ratio <= 1.0:
        err("train.min_lr_ratio", f"must be in [0, 1], got {tr.min_lr_ratio}")
    if not (tr.time_limit_min >= 0 and math.isfinite(tr.time_limit_min)):
        err("train.time_limit_min", f"must be >= 0 minutes (0 = no limit), got {tr.time_limit_min}")
    if not tr.grad_clip >= 0:
        err("train.grad_clip", f"must be >= 0 (0 disables clipping), got {tr.grad_clip}")
    if not 0.0 <= tr.ema_decay < 1.0:
        err("train.ema_decay", f"must be in [0, 1), got {tr.ema_decay}")
    if not 0.0 <= tr.cond_drop < 1.0:
        err("train.cond_drop", f"must be in [0, 1), got {tr.cond_drop}")
    if not 0.0 < tr.schedule_s < 1.0:
        err("train.schedule_s", f"must be in (0, 1), got {tr.schedule_s}")
    if tr.max_tokens and tr.max_tokens < 1:
        err("train.max_tokens", "must be 0 (no cap) or positive")
    _validate_objective(cfg.objective, err)
    da.channels = parse_channels(da.channels, source=source)
    if cfg.preset is not None and cfg.preset not in PRESETS:
        err("preset", f"unknown preset '{cfg.preset}'")
    return cfg


def _validate_objective(ob: ObjectiveConfig, err) -> None:
    for key, val, names in (
        ("objective.name", ob.name, OBJECTIVES),
        ("objective.density", ob.density, DENSITY_NAMES),
        ("objective.balance", ob.balance, BALANCES),
    ):
        if val not in names:
            err(key, f"unknown value {val!r} (choose from {', '.join(n for n in names if n)})")
    for key, val, positive in (("p_std", ob.p_std, 1), ("logit_s", ob.logit_s, 1), ("p_mean", ob.p_mean, 0)):
        if not math.isfinite(val) or (positive and val <= 0):
            err(f"objective.{key}", f"must be a{' positive' if positive else ''} finite number, got {val}")
    if not math.isfinite(ob.logit_m):
        err("objective.logit_m", f"must be a finite number, got {ob.logit_m}")
    from e2econd.diffusion.formulations.consistency import STUDENT_METHODS  # torch-light; kept local

    if ob.student not in ("", *STUDENT_METHODS):
        err("objective.student", f"unknown student method {ob.student!r} (choose from {', '.join(STUDENT_METHODS)})")
    if ob.student and not 1 <= ob.student_steps <= ob.student_levels:
        err("objective.student_steps", f"need 1 <= steps {ob.student_steps} <= levels {ob.student_levels}")


def save(cfg: Config, path: str | Path) -> None:
    from e2econd.utils import write_json_atomic

    write_json_atomic(path, cfg.to_dict())
