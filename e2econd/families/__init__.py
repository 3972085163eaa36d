"""Model families: where a representation of a jet plugs into training and sampling.

A family owns what differs between representations; everything else (the trainer, the objective,
the samplers and the fused update op, guidance, DDP, resume, EMA, the run directory) is shared.
Its interface (both :class:`~e2econd.families.hits.HitFamily` and
:class:`~e2econd.families.towers.TowerFamily` implement it):

- ``load_data(data_dir, cfg, world) -> TrainData``: the train / val splits as the family's tokens;
  ``TrainData.n_sel`` = tokens per jet (the batcher buckets by it).
- ``n_features(data_or_run) -> F``: width of one token's diffusion state.
- ``build_network(cfg, data_or_run) -> nn.Module`` with ``forward_packed(x, channel, cu_seqlens, t,
  cond, drop_cond, max_seqlen, check)``.
- ``fit_stage1(cfg, data)`` / ``stage1_from_dict(d)``: the model drawn before the diffusion (hit
  multiplicities; the jet summary), checkpoint key ``multiplicity``.
- ``make_batch(data, store, idx, dq, device) -> Batch``: packed clean tokens x0 (T, F), conditions.
- ``extra_state(data) -> dict`` / ``load_extras(ck)``: what else a checkpoint carries (its keys:
  ``extra_keys``).
- ``draw_stage1(run, ct, yt, gen) -> (tokens per jet, state)`` and ``generate_batch(g, idx, state, ct, yt,
  images, chunk_index, b)``: sampling, through the shared ``Generator.integrate`` (noise, network,
  fused-op sampler loop).
"""

from __future__ import annotations

from e2econd.config import FAMILIES as FAMILY_NAMES
from e2econd.errors import E2EInputError


def get_family(name: str):
    """The family object for ``model.family`` (``--model``)."""
    if name == "hits":
        from e2econd.families.hits import HitFamily

        return HitFamily()
    if name == "towers":
        from e2econd.families.towers import TowerFamily

        return TowerFamily()
    raise E2EInputError(f"unknown model family {name!r} (choose from {', '.join(FAMILY_NAMES)})", key="model")
