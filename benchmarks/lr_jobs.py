"""Wall time of cells of the full LR table (`fastdropout-nb reproduce lr --full`) in one process and in two
(`--jobs 2`, joblib's processes): the four deterministic rows (plain LR, closed form, quadrature, plain LR +
informativeness) on CR and MPQA, every one of their 10 folds, each run into a fresh results folder.
Prints both wall times, their ratio, and whether the two runs stored the same cells (timings aside).

Usage (needs a quiet machine): flock -x -w 1500 /tmp/locks/cpu.lock python benchmarks/lr_jobs.py [DATA_DIR]
"""
import json, os, platform, sys, tempfile, time
from pathlib import Path
from fastdropout_nb.experiments import LR_DETERMINISTIC, ResultStore, lr_cells

SETS = ('CR', 'MPQA')
PLAN = [(d, None, list(LR_DETERMINISTIC)) for d in SETS]


def run(jobs, data_dir):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        cells = lr_cells(ResultStore(out), quick=False, data_dir=data_dir, plan=PLAN, progress=lambda s: None, jobs=jobs)
        wall = time.perf_counter() - t0
        stored = {p.name: {k: v for k, v in json.loads(p.read_text())['value'].items() if not k.endswith('_seconds')}
                  for p in Path(out, 'lr-full').glob('*.json')}
    assert sorted(d for d, _ in cells) == sorted(d for d in SETS for _ in LR_DETERMINISTIC), 'a data set is missing'
    return wall, stored


if __name__ == '__main__':
    data_dir = sys.argv[1] if len(sys.argv) > 1 else None
    print(f'# LR table cells, one process vs two (benchmarks/lr_jobs.py)\n')
    print(f'command: python benchmarks/lr_jobs.py {"DATA" if data_dir else ""}'.rstrip())   # the folder as typed: DATA
    print(f'machine: {platform.machine()} / {platform.system()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, '
          f'{time.strftime("%Y-%m-%d")}')
    print(f'cells: rows {", ".join(LR_DETERMINISTIC)}; data sets {", ".join(SETS)}; 10 folds each '
          f'({len(SETS) * 10 * len(LR_DETERMINISTIC)} cells, {len(SETS) * 10} tasks of one fold each)\n')
    one, cells1 = run(1, data_dir)
    print(f'--jobs 1: {one:7.1f} s wall')
    two, cells2 = run(2, data_dir)
    print(f'--jobs 2: {two:7.1f} s wall')
    print(f'speed-up: {one / two:.2f}x')
    print(f'same cells (timings aside): {cells1 == cells2} ({len(cells1)} cells)')
