"""Run a part of the full LR table (Table 1) into reports/: `det` (plain, closed form, quadrature, informativeness, the inner-CV rows) or `sampled` (Gaussian, MC dropout). Same store and keys as `fastdropout-nb reproduce lr --full`; run both side by side, then that command renders reports/lr.md.

Usage: python benchmarks/lr_table_workers.py det|sampled [DATA_DIR] [SETS]
SETS (optional, comma-separated, e.g. IMDB) restricts the part to those data sets, so that a long cell
(MC dropout on IMDB: one fit of about 40 minutes) can run in a process of its own.
"""
import sys
from fastdropout_nb.experiments import ResultStore, lr_cells
sets = ['AthR', 'CR', 'RT-2k', 'MPQA', 'RTs', 'subj', 'IMDB']
if len(sys.argv) > 3: sets = [d for d in sets if d in sys.argv[3].split(',')]
which = sys.argv[1] if len(sys.argv) > 1 else ''
if which == 'det': plan = [(d, None, ['plain LR', 'closed form', 'quadrature', 'plain LR + informativeness', 'plain LR, C by inner CV']) for d in sets] + [(d, None, ['closed form, p by inner CV']) for d in sets]
elif which == 'sampled': plan = [(d, None, ['Gaussian approx.']) for d in sets] + [(d, None, ['MC dropout']) for d in sets]
else: raise SystemExit('usage: python benchmarks/lr_table_workers.py det|sampled [DATA_DIR] [SETS]')
lr_cells(ResultStore('reports'), quick=False, data_dir=sys.argv[2] if len(sys.argv) > 2 else None, seed=0, plan=plan, progress=lambda s: print(s, flush=True))
print('WORKER DONE', which, flush=True)
