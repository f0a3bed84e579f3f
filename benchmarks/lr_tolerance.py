"""Where each solver stops: Table 1's closed-form fast-dropout row fitted to several gradient tolerances, fold by fold.

Usage: python benchmarks/lr_tolerance.py [--data-dir D] [--datasets RT-2k ...] [--jobs 2] [--out F]

Every fold of the LR table (chapter `07_experiments`: RT-2k's ten standard folds, a stratified 10-fold split of
RTs, subj, CR and MPQA, the fixed splits of IMDB and AthR; NBSVM features; p = 0.5, C = 12.5) is fitted by
`FastDropoutLogisticRegression(method='closed_form')` with `solver='tron'` at `tol` = 1e-4, 1e-5, 1e-6, 1e-8, 1e-10
and with `solver='lbfgs'` (L-BFGS-B) at 1e-4 and 1e-10. `tol` bounds max |gradient| of the objective (the mean
penalised negative log-likelihood). The reference is the optimum, L-BFGS-B at 1e-10. Printed per data set and
setting: the folds whose test accuracy equals the optimum's, the largest |difference| in points, and the CPU
seconds of all its fits (one thread). The objective is strictly convex, so both solvers run to 1e-10 must agree.
"""
import argparse, os, platform, sys, time, warnings

for _v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ.setdefault(_v, '1')

import numpy as np

SETTINGS = [('tron', 1e-4), ('tron', 1e-5), ('tron', 1e-6), ('tron', 1e-8), ('tron', 1e-10), ('lbfgs', 1e-4), ('lbfgs', 1e-10)]
REFERENCE = ('lbfgs', 1e-10)


def fold_results(name, k, data_dir, seed=0):
    "`{(solver, tol): (correct, n_test, cpu_seconds, iterations)}` for fold `k` of data set `name`."
    from threadpoolctl import threadpool_limits
    from fastdropout_nb.experiments import LR_METHODS, _lr_folds
    from fastdropout_nb.logistic import FastDropoutLogisticRegression
    kw = {**LR_METHODS['closed form'], 'max_iter': 5000}
    kw.pop('tol', None)
    load, folds = _lr_folds(name, data_dir, seed)
    Xtr, ytr, Xte, yte = load(*folds[k])
    out = {}
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for solver, tol in SETTINGS:
            est = FastDropoutLogisticRegression(random_state=seed, solver=solver, tol=tol, **kw)
            t0 = time.process_time(); est.fit(Xtr, ytr); dt = time.process_time() - t0
            out[solver, tol] = (int((est.predict(Xte) == yte).sum()), len(yte), dt, int(est.n_iter_[0]))
    return name, k, out


def main(argv=None):
    from _typed import typed_command, typed_data   # benchmarks/_typed.py
    from joblib import Parallel, delayed
    from fastdropout_nb.data import data_dir
    from fastdropout_nb.experiments import _lr_folds
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--datasets', nargs='+', default=['RT-2k', 'IMDB', 'RTs', 'subj', 'AthR', 'CR', 'MPQA'])
    ap.add_argument('--jobs', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default=None)
    args = ap.parse_args(argv)
    root, lines = data_dir(args.data_dir), []
    def say(line=''):
        print(line, flush=True); lines.append(line)
    say(f'# lr_tolerance: {typed_command("benchmarks/lr_tolerance.py", argv)}')
    say(f'# {platform.machine()} {platform.system()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, '
        f'{args.jobs} worker(s) of one thread, {time.strftime("%Y-%m-%d %H:%M")}; data {typed_data(args.data_dir)}')
    tasks = [(name, k) for name in args.datasets for k in range(len(_lr_folds(name, root, args.seed)[1]))]
    got = Parallel(n_jobs=args.jobs)(delayed(fold_results)(name, k, root, args.seed) for name, k in tasks)
    res = {(name, k): out for name, k, out in got}
    cols = [f'{s} {t:g}' for s, t in SETTINGS]
    say(f'{"data set":8s} {"folds":>5s} | ' + ' | '.join(f'{c:>20s}' for c in cols))
    say(f'{"":8s} {"":5s} | ' + ' | '.join(f'{"=opt  max|Δ|  CPU s":>20s}' for _ in cols))
    tot = {st: [0, 0.0, 0.0] for st in SETTINGS}
    for name in args.datasets:
        ks = [k for (n, k) in res if n == name]
        cells = []
        for st in SETTINGS:
            d = [100 * (res[name, k][st][0] - res[name, k][REFERENCE][0]) / res[name, k][st][1] for k in ks]
            eq, worst, secs = sum(abs(x) < 1e-12 for x in d), max(abs(x) for x in d), sum(res[name, k][st][2] for k in ks)
            tot[st][0] += eq; tot[st][1] = max(tot[st][1], worst); tot[st][2] += secs
            cells.append(f'{eq:4d} {worst:6.2f} {secs:8.1f}')
        say(f'{name:8s} {len(ks):5d} | ' + ' | '.join(f'{c:>20s}' for c in cells))
    say(f'{"all":8s} {len(res):5d} | ' + ' | '.join(f'{f"{e:4d} {w:6.2f} {s:8.1f}":>20s}' for e, w, s in tot.values()))
    say('')
    say(f'=opt: folds whose test accuracy equals the optimum\'s ({REFERENCE[0]} at tol {REFERENCE[1]:g}); max|Δ|: the largest '
        f'|accuracy difference| from it (points); CPU s: all fits of the row (one thread each).')
    if args.out:
        from pathlib import Path
        Path(args.out).write_text('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
