"""The distillation table's heavy-dropout conv cell (8×8 digits, the full protocol: a 300-epoch teacher, 100-epoch students)
over several seeds: standard / MC-100 / moment-twin teacher errors and students distilled from sampled masks and from moments.

Usage: python benchmarks/distill_digits_seeds.py [--seeds 0 1 2 3 4] [--threads 1] --out reports/distill_digits_conv_seeds.json
Each seed is the cell `digits-conv` of `fastdropout-nb reproduce distill --full --seed S` (the same function); about a
minute per seed on one CPU thread.
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from fastdropout_nb.experiments import distill_cells

KEYS = ('standard', 'mc', 'moments', 'distilled', 'distilled_moments')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    runs, t0 = [], time.time()
    for s in a.seeds:
        r = distill_cells(quick=False, seed=s)['digits-conv'](); r['seed'] = s; runs.append(r)
        print(' '.join(f'{k} {r[k]:.2f}' for k in ('seed',) + KEYS), flush=True)
    summary = {k: dict(mean=float(np.mean([r[k] for r in runs])), sd=float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else None)
               for k in KEYS}
    out = dict(setting=runs[0]['setting'], runs=runs, summary=summary, seconds=time.time() - t0, torch=torch.__version__,
               device=f'cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)', machine=f'{platform.machine()} {platform.system()}',
               date=time.strftime('%Y-%m-%d'), command='python benchmarks/distill_digits_seeds.py ' + ' '.join(argv or os.sys.argv[1:]))
    with open(a.out, 'w') as f: json.dump(out, f, indent=1)
    for k, v in summary.items(): print(f"{k:18s} {v['mean']:6.2f} ± {v['sd']:.2f} % test error" if v['sd'] is not None else f"{k:18s} {v['mean']:6.2f}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
