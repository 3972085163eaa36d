"""``e2econd preprocess`` (E2E files -> hit-set directory) and ``e2econd export`` (the inverse)."""

from __future__ import annotations

import json

import click

from e2econd.cli._options import progress_option


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output hit-set directory (written atomically; must not exist unless --overwrite).",
)
@click.option(
    "--threshold",
    default=0.0,
    show_default=True,
    type=float,
    metavar="GEV",
    help="Zero suppression: keep pixels with |E| > GEV. The default 0 keeps every non-zero pixel "
    "(lossless round trip).",
)
@click.option(
    "--negatives",
    type=click.Choice(["keep", "drop"]),
    default="keep",
    show_default=True,
    help="Negative ECAL/HCAL pixels (noise): 'keep' those with |E| > threshold (default, lossless), "
    "'drop' removes every E < 0.",
)
@click.option(
    "--max-hits",
    type=int,
    default=None,
    metavar="N",
    help="Keep only the N most energetic hits per jet and channel; the energy removed is recorded "
    "(dropped_<channel>). Default: no truncation.",
)
@click.option(
    "--split",
    "split",
    default="0.8,0.1,0.1",
    show_default=True,
    metavar="FRACTIONS",
    help="train,val,test fractions. Deterministic: hash of (the file's jet kinematics, row, --seed).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the train/val/test split.")
@click.option(
    "--workers",
    "-j",
    default=1,
    show_default=True,
    type=int,
    help="Worker processes (1 = inline). The output does not depend on it.",
)
@click.option("--chunk-size", default=256, show_default=True, type=int, help="Jets per task (decoded 64 at a time).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory (only after success).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@progress_option
def preprocess(
    inputs, out, threshold, negatives, max_hits, split, seed, workers, chunk_size, overwrite, quiet, progress
):
    """E2E files (Parquet or HDF5, detected by content) -> hit-set directory.

    Every channel becomes a variable-size set of hits (pixel indices, Δη/Δφ from the image centre in
    units of 0.0174 per pixel, energy in GeV); HCAL 5x5 towers become one hit each with the tower energy.
    Writes OUT/{train,val,test}.parquet, OUT/transforms.json (fitted on train) and OUT/manifest.json.
    """
    from e2econd.data.preprocess import preprocess as run

    manifest = run(
        list(inputs),
        out,
        threshold=threshold,
        negatives=negatives,
        max_hits=max_hits,
        split=split,
        seed=seed,
        workers=workers,
        chunk_size=chunk_size,
        overwrite=overwrite,
        progress=False if quiet else progress,
    )
    if not quiet:
        c = manifest["counts"]
        hits = ", ".join(f"{k} {v['hits'] / max(c['n_jets'], 1):.1f}" for k, v in c["channels"].items())
        click.echo(
            f"{out}: {c['n_jets']} jets (splits {json.dumps(c['splits'])}); hits/jet: {hits}; "
            f"non-uniform HCAL blocks: {c['hcal_nonuniform_blocks']}"
        )


@click.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output E2E file: .parquet/.pq or .h5/.hdf5 (written atomically).",
)
@click.option(
    "--split",
    "split",
    type=click.Choice(["train", "val", "test"]),
    default=None,
    help="Export only this split (default: all, in train, val, test order).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@progress_option
def export(data_dir, out, split, quiet, progress):
    """Hit-set directory -> E2E images (the inverse of preprocess; HCAL towers re-expanded to 5x5 blocks)."""
    from e2econd.data.export import export as run

    n = run(data_dir, out, split, progress=False if quiet else progress)
    if not quiet:
        click.echo(f"{out}: {n} jets")
