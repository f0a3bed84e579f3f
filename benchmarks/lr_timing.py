"""Training time of plain LR, fast dropout and MC dropout on the paper's text sets (Wang & Manning 2013, Table 1).

Usage: python benchmarks/lr_timing.py [--data-dir D] [--datasets RT-2k AthR ...] [--mc-samples 100] [--seed 0]

Per data set, one split (the first of RT-2k's standard folds, the first of a stratified 10-fold split
for RTs, subj, CR, MPQA, the fixed train/test split of IMDB and AthR), NBSVM features (chapter
`data`), all on one thread (BLAS and torch), with the hyperparameters of the LR table
(`fastdropout_nb.experiments.LR_METHODS`: p = 0.5, C = 12.5 for dropout, C = 50 for plain LR):

* plain LR and fast dropout (closed form): wall-clock time of `fit`, and test accuracy;
* MC dropout (100 masks per example and evaluation, L-BFGS on fresh samples, as the authors ran it):
  the time of the whole fit, and the time at which its iterates first reach fast dropout's test
  accuracy ("at equal accuracy"; the test accuracy of every iterate is evaluated off the clock).
  If MC dropout never reaches it, its whole fit time is used and the ratio is marked '>' (a lower
  bound on the speed-up).

Ratios printed: fast / plain (target <= 2.5; paper 325 / 92 = 3.5) and MC / fast at equal accuracy
(target >= 20; paper 2661 / 325 = 8.2, whole training times).
"""
import argparse
import os
import platform
import sys
import time
import warnings

for _v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ.setdefault(_v, '1')

import numpy as np
from scipy import optimize


def split_of(name, data_dir, seed):
    "The benchmark's `(X_train, y_train, X_test, y_test)` for text set `name`."
    from sklearn.model_selection import StratifiedKFold
    from fastdropout_nb import data as D
    ds = D.load_text(name, data_dir, download=False)
    if ds.protocol == 'split': tr, te = ds.split
    elif ds.folds is not None: tr, te = np.flatnonzero(ds.folds != 0), np.flatnonzero(ds.folds == 0)
    else: tr, te = next(iter(StratifiedKFold(10, shuffle=True, random_state=seed).split(np.zeros(len(ds)), ds.labels)))
    Xtr, Xte = D.nbsvm_features([ds.texts[i] for i in tr], [ds.texts[i] for i in te])
    return Xtr, ds.labels[tr], Xte, ds.labels[te]


def timed_fit(est, X, y):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        est.fit(X, y)
    return time.perf_counter() - t0


def mc_trajectory(est, X, y, Xte, yte):
    """Fit `est` (a sampled method) with the estimator's own objective and L-BFGS-B settings, recording the
    elapsed time and the parameters at every iteration; returns `(total seconds, [(seconds, test accuracy)])`."""
    from sklearn.utils.validation import validate_data
    est._validate_params()
    classes, yi = np.unique(y, return_inverse=True)
    fun, size = est._objective(X, yi.astype(float), len(classes))
    marks, t0 = [], time.perf_counter()
    cb = lambda xk: marks.append((time.perf_counter() - t0, xk.copy()))
    optimize.minimize(fun, np.zeros(size), jac=True, method='L-BFGS-B', callback=cb,
                      options=dict(maxiter=est.max_iter, maxls=50, gtol=est.tol, ftol=0.0))
    total = time.perf_counter() - t0
    m = X.shape[1]
    traj = []
    for secs, theta in marks:                        # off the clock
        scores = Xte @ theta[:m] + theta[m]
        traj.append((secs, float(((scores > 0).astype(int) == yte).mean())))
    return total, traj


def main(argv=None):
    from fastdropout_nb.data import data_dir, TEXT_DATASETS
    from fastdropout_nb.experiments import LR_METHODS
    from fastdropout_nb.logistic import FastDropoutLogisticRegression
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--datasets', nargs='+', default=['AthR', 'CR', 'RT-2k', 'MPQA', 'RTs', 'subj'],
                    choices=list(TEXT_DATASETS))
    ap.add_argument('--mc-samples', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    import torch; torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits
    root = data_dir(args.data_dir)
    print(f'# lr_timing: {" ".join(sys.argv)}')
    print(f'# {platform.machine()} {platform.system()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, '
          f'one thread, {time.strftime("%Y-%m-%d %H:%M")}; data {root}')
    print(f'# plain LR: {LR_METHODS["plain LR"]}; fast dropout: {LR_METHODS["closed form"]}; '
          f'MC dropout: method=mc, p=0.5, C=12.5, n_samples={args.mc_samples}')
    head = (f'{"data set":8s} {"n_train":>7s} {"m":>8s} | {"plain s":>8s} {"acc":>6s} | {"fast s":>7s} {"acc":>6s} | '
            f'{"MC s":>8s} {"acc":>6s} {"MC s@=":>8s} | {"fast/plain":>10s} {"MC/fast@=":>10s} {"MC/fast":>8s} | '
            f'{"iter plain":>10s} {"iter fast":>9s} {"per eval":>8s}')
    print(head); print('-' * len(head))
    rows = []
    with threadpool_limits(1):
        for name in args.datasets:
            Xtr, ytr, Xte, yte = split_of(name, root, args.seed)
            plain = FastDropoutLogisticRegression(random_state=args.seed, **LR_METHODS['plain LR'])
            fast = FastDropoutLogisticRegression(random_state=args.seed, **LR_METHODS['closed form'])
            t_plain = timed_fit(plain, Xtr, ytr); a_plain = plain.score(Xte, yte)
            t_fast = timed_fit(fast, Xtr, ytr); a_fast = fast.score(Xte, yte)
            mc = FastDropoutLogisticRegression(method='mc', p=0.5, C=12.5, n_samples=args.mc_samples, random_state=args.seed)
            t_mc, traj = mc_trajectory(mc, Xtr, ytr, Xte, yte)
            a_mc = traj[-1][1] if traj else float('nan')
            hit = next((s for s, a in traj if a >= a_fast), None)
            t_eq, mark = (hit, ' ') if hit is not None else (t_mc, '>')
            per_eval = (t_fast / fast.optimize_result_.nfev) / (t_plain / plain.optimize_result_.nfev)
            rows.append((t_fast / t_plain, t_eq / t_fast, t_mc / t_fast, per_eval))
            print(f'{name:8s} {Xtr.shape[0]:7d} {Xtr.shape[1]:8d} | {t_plain:8.2f} {100 * a_plain:6.2f} | {t_fast:7.2f} '
                  f'{100 * a_fast:6.2f} | {t_mc:8.1f} {100 * a_mc:6.2f} {t_eq:8.1f} | {t_fast / t_plain:10.2f} '
                  f'{mark}{t_eq / t_fast:9.1f} {t_mc / t_fast:8.1f} | {plain.n_iter_[0]:10d} {fast.n_iter_[0]:9d} '
                  f'{per_eval:8.2f}', flush=True)
    r = np.array(rows)
    print('-' * len(head))
    print(f'geometric means: fast/plain {np.exp(np.log(r[:, 0]).mean()):.2f} (target <= 2.5, paper 3.5); '
          f'MC/fast at equal accuracy {np.exp(np.log(r[:, 1]).mean()):.1f} (target >= 20, paper 8.2); '
          f'MC/fast whole fits {np.exp(np.log(r[:, 2]).mean()):.1f}; fast/plain per evaluation {np.exp(np.log(r[:, 3]).mean()):.2f}')
    print('columns: times are fit wall-clock seconds; acc = test accuracy % on the split; "MC s@=" = seconds until '
          "MC dropout's iterates first reach fast dropout's accuracy ('>' in the ratio: never reached, whole fit used); "
          'MC/fast = whole fit times; iter = L-BFGS-B iterations; "per eval" = fast/plain time per objective evaluation '
          '(the paper: "each iteration of fast dropout is only about 2 times slower than plain LR").')
    return 0


if __name__ == '__main__':
    sys.exit(main())
