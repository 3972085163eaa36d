"""``e2econd info``: versions, which kernels are built and loaded, devices seen."""

from __future__ import annotations

import json
import platform

import click


def collect_info() -> dict:
    import torch

    from e2econd._version import __version__
    from e2econd.ops import backend

    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return {
        "e2econd": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "devices": devices,
        "backend": backend(),
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(as_json: bool) -> None:
    """Versions (e2econd, torch, CUDA, Python), kernels built and loaded, devices seen."""
    data = collect_info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    b = data["backend"]
    click.echo(
        f"e2econd {data['e2econd']}  (Python {data['python']}, torch {data['torch']}, "
        f"CUDA build {data['torch_cuda'] or 'none'})"
    )
    if b["extension_loaded"]:
        click.echo(f"extension: loaded, built as '{b['build']}'")
    else:
        click.echo(f"extension: NOT loaded ({b.get('load_error')}); using the pure-PyTorch reference ops")
    click.echo(f"kernels from:     {b['source']}")
    if b["extension_loaded"] and b.get("load_error"):  # e.g. a prebuilt _C that failed, JIT used instead
        click.echo(f"note:             {b['load_error']}")
    click.echo(f"C++ CPU kernels:  {', '.join(b['cpu_kernels']) or 'none'}")
    cuda_state = "runnable" if b["cuda_available"] else "compiled, not runnable (no GPU visible)"
    click.echo(
        f"CUDA kernels:     {', '.join(b['cuda_kernels']) or 'none'}"
        + (f"  [{cuda_state}]" if b["cuda_kernels"] else "")
    )
    click.echo(f"active backend:   {b['active']}")
    click.echo(f"devices:          {', '.join(data['devices'])}  ({data['cpu_threads']} CPU threads)")
