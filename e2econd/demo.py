"""The main job in one call: make data -> preprocess -> train -> sample -> evaluate.

Each stage writes into ``workdir`` and is skipped when its output is already complete, so a
second run reuses what is done (an interrupted training resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import click


@dataclass
class DemoOptions:
    workdir: str = "demo"
    jets: int = 4000  # boosted top jets generated (train/val/test 80/10/10)
    preset: str = "auto"  # cpu | gpu | auto (gpu when CUDA is available)
    channels: str = "all"
    model: str = "hits"  # model family: hits | towers (its files get a "towers" infix)
    device: str | None = None
    seed: int = 1
    workers: int = 2
    sample_pt: float = 400.0
    sample_n: int = 300
    sampler: str = "dpmpp2m"
    steps: int | None = None
    max_steps: int | None = None  # override the preset's training steps
    progress: bool | None = None  # progress bars: None = only when stderr is a terminal


def _stage(name: str) -> float:
    click.secho(f"==> {name}", bold=True, err=True)
    return time.perf_counter()


def _done(t0: float, what: str) -> None:
    click.echo(f"    {what} ({time.perf_counter() - t0:.0f} s)", err=True)


def _train_stage(opts: DemoOptions, preset_name: str, data: Path, run: Path, t0: float) -> None:
    """Stage 3: train ``run`` on ``data``, resume an unfinished run, or reuse a finished one."""
    from e2econd.config import resolve_config
    from e2econd.rundir import last_checkpoint, load_checkpoint
    from e2econd.train import train

    cfg = resolve_config(
        preset_name,
        channels=opts.channels,
        overrides={"train.seed": opts.seed, "train.max_steps": opts.max_steps},
        family=opts.model,
    )
    last = last_checkpoint(run)
    if last.exists():
        ck = load_checkpoint(last)  # a damaged checkpoint: one-line error naming it
        target = opts.max_steps or ck["config"]["train"]["max_steps"]
        if ck.get("finished") or int(ck["step"]) >= target:
            _done(t0, f"reusing {run} (step {ck['step']})")
        else:
            train(data, run, resume=True, device=opts.device, max_steps=target, progress=opts.progress)
            _done(t0, f"resumed and finished {run}")
        del ck
    else:
        train(data, run, cfg, device=opts.device, progress=opts.progress)
        _done(t0, f"trained {run}")


def run_demo(opts: DemoOptions) -> dict:
    """Run (or resume) the whole pipeline; returns the evaluation metrics and the paths written."""
    from e2econd.config import SampleOptions, default_preset
    from e2econd.data.preprocess import preprocess
    from e2econd.evaluate.report import evaluate
    from e2econd.generate.make_data import make_data
    from e2econd.sample import sample_to_file, summary_line

    common = dict(sampler=opts.sampler, steps=opts.steps, seed=opts.seed, device=opts.device)
    SampleOptions(n=opts.sample_n, pt=opts.sample_pt, **common).validate()  # before the work, not at stage 4
    from e2econd.diffusion.formulations import VPred

    VPred().check_sampler(opts.sampler)  # the demo trains the default objective: one of its samplers
    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    preset_name = default_preset(opts.device) if opts.preset == "auto" else opts.preset
    timings = {}

    raw = work / "top.parquet"
    t0 = _stage(f"1/5 make-data: {opts.jets} boosted top jets (Pythia 8 + anti-kt R=0.8 + CMS-like detector)")
    if raw.exists():
        _done(t0, f"reusing {raw}")
    else:
        make_data("top", opts.jets, opts.seed, raw, workers=opts.workers, progress=opts.progress)
        _done(t0, f"wrote {raw}")
    timings["make_data_s"] = time.perf_counter() - t0

    data = work / "data"
    t0 = _stage("2/5 preprocess: images -> hit sets, splits, transforms")
    if (data / "manifest.json").exists():
        _done(t0, f"reusing {data}")
    else:
        preprocess([raw], data, workers=opts.workers, progress=opts.progress)
        _done(t0, f"wrote {data}")
    timings["preprocess_s"] = time.perf_counter() - t0

    tag = "" if opts.model == "hits" else f"{opts.model}_"
    run = work / f"run_{tag}{preset_name}"
    t0 = _stage(f"3/5 train: model {opts.model}, preset '{preset_name}', channels {opts.channels}")
    _train_stage(opts, preset_name, data, run, t0)
    timings["train_s"] = time.perf_counter() - t0

    t0 = _stage(f"4/5 sample: --pt {opts.sample_pt:g} and --conditions-from the test split")
    gen_pt = work / f"gen_{tag}pt{opts.sample_pt:g}.parquet"
    gen_test = work / f"gen_{tag}test.parquet"
    if not gen_pt.exists():
        s = sample_to_file(
            run, gen_pt, SampleOptions(n=opts.sample_n, pt=opts.sample_pt, **common), progress=opts.progress
        )
        click.echo("    " + summary_line(s), err=True)
    if not gen_test.exists():
        s = sample_to_file(run, gen_test, SampleOptions(conditions_from=str(data), **common), progress=opts.progress)
        click.echo("    " + summary_line(s), err=True)
    _done(t0, "samples ready")
    timings["sample_s"] = time.perf_counter() - t0

    report = work / f"report{'_' + opts.model if tag else ''}"
    t0 = _stage("5/5 evaluate: generated vs real test jets, floors from real-vs-real halves")
    metrics = evaluate(data, gen_test, report, overwrite=True, progress=opts.progress)
    _done(t0, f"report in {report}")
    timings["evaluate_s"] = time.perf_counter() - t0
    summary = dict(workdir=str(work), report=str(report / "report.md"), run=str(run))
    summary.update(generated=[str(gen_pt), str(gen_test)], timings=timings, metrics=metrics)
    (work / f"demo_{tag}summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def ratio_table(metrics: dict) -> list[tuple[str, float, float, float]]:
    """(name, value, floor, ratio) rows of every metric that has a floor."""
    rows = []
    for name, m in sorted((metrics.get("metrics") or {}).items()):
        if isinstance(m, dict) and "ratio" in m:
            rows.append((name, m.get("value"), m.get("floor"), m.get("ratio")))
    return rows
