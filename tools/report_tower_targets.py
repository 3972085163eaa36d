"""Mean ± standard error of the jet-level targets of issue 16 (core energy within R < 0.05 per channel, hottest
HCAL tower central, fully read ECAL towers) for the test split of a hit directory and generated E2E files.

    python tools/report_tower_targets.py HIT_DIR SOURCE.parquet GEN.parquet [GEN2 ...]
"""

import json
import sys

import numpy as np
import pyarrow.parquet as pq

from e2econd.data.e2e_io import iter_e2e
from e2econd.data.towers import TowerLayout, images_to_tokens, jet_summary, summary_names

lay = TowerLayout.of(["tracks", "ecal", "hcal"])
names = summary_names(lay)
ii, jj = np.mgrid[:125, :125]
rr = np.sqrt((ii - 62) ** 2 + (jj - 62) ** 2) * 0.0174


def stats(chunks):
    core, cen, full, occ = [], [], 0, 0
    for img in chunks:
        core.append(img[:, :, rr < 0.05].sum(-1))
        t = images_to_tokens(img, lay)
        s = jet_summary(t)
        cen.append(s[:, names.index("hcal_central")])
        ecal = t.cells[:, lay.slots("ecal")]
        full += int(((ecal != 0).sum(1) == 25).sum())
        occ += int((ecal != 0).any(1).sum())
    core = np.concatenate(core)
    cen = np.concatenate(cen)
    f = full / occ
    return {
        "core_mean": core.mean(0).tolist(),
        "core_se": (core.std(0) / np.sqrt(len(core))).tolist(),
        "central": float(cen.mean()),
        "central_se": float(cen.std() / np.sqrt(len(cen))),
        "full_frac": f,
        "full_se": float(np.sqrt(f * (1 - f) / occ)),
        "n": len(core),
    }


hit_dir, source, gens = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = set(pq.read_table(f"{hit_dir}/test.parquet", columns=["row"]).column("row").to_numpy().tolist())


def real():
    for c in iter_e2e(source, 1024):
        sel = [i for i in range(len(c.pt)) if c.start + i in rows]
        if sel:
            yield c.images[sel]


out = {"real": stats(real())}
for f in gens:
    out[f] = stats(c.images for c in iter_e2e(f, 1024))
print(json.dumps(out, indent=1))
