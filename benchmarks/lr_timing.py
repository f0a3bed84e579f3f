"""Training time of plain LR, fast dropout and MC dropout on the paper's text sets (Wang & Manning 2013, Table 1).

Usage: python benchmarks/lr_timing.py [--data-dir D] [--datasets RT-2k AthR ...] [--mc-samples 100] [--seed 0] [--out F]

Per data set, one split (the first of RT-2k's standard folds, the first of a stratified 10-fold split
for RTs, subj, CR, MPQA, the fixed train/test split of IMDB and AthR), NBSVM features (chapter
`data`), all on one thread (BLAS and torch), with the hyperparameters of the LR table
(`fastdropout_nb.experiments.LR_METHODS`: p = 0.5, C = 12.5 and tol = 1e-6 for dropout, C = 50 and
scikit-learn's tol = 1e-4 for plain LR; `benchmarks/lr_tolerance.py` shows why dropout's fits go to 1e-6):

* plain LR (L-BFGS-B, as scikit-learn's `LogisticRegression`) and fast dropout (closed form) with both of the
  estimator's solvers side by side, `solver='tron'` (trust-region Newton, the default) and `solver='lbfgs'`:
  CPU time of `fit`, test accuracy, iterations, objective evaluations and Hessian-vector products;
* MC dropout (100 masks per example and evaluation, L-BFGS on fresh samples, as the authors ran it):
  the time of the whole fit, and the time at which its iterates first reach fast dropout's test
  accuracy ("at equal accuracy"; the test accuracy of every iterate is evaluated off the clock).
  If MC dropout never reaches it, its whole fit time is used and the ratio is marked '>' (a lower
  bound on the speed-up).

Times are CPU seconds of this process (`time.process_time`, one thread for BLAS and torch): on a machine shared
with other jobs they are inflated far less than wall-clock seconds, and on an idle one they equal them.

Ratios printed: fast / plain for each solver (target <= 2.0 with the default solver; paper 325 / 92 = 3.5), the
cost of one objective evaluation (value and gradient) and of one Hessian-vector product relative to one plain-LR
evaluation (each timed alone, median of repeats, at the fitted weights), and MC / fast at equal accuracy (target
>= 10; paper 2661 / 325 = 8.2, whole training times), with fast dropout fitted by the default solver.
"""
import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

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
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        est.fit(X, y)
    return time.process_time() - t0


def eval_costs(plain, fast, X, y, repeats=7):
    """Seconds of one objective evaluation of plain LR and of fast dropout, and of one Hessian-vector product of fast
    dropout, each the median of `repeats` at the fitted weights (the estimator's own prepared objective)."""
    from fastdropout_nb.logistic import _as_2d, _binary_curvature, _prepared
    mats, yf = _prepared(_as_2d(X)), np.unique(y, return_inverse=True)[1].astype(float)
    def median_time(f):
        ts = []
        for _ in range(repeats):
            t0 = time.process_time(); f(); ts.append(time.process_time() - t0)
        return float(np.median(ts))
    theta_p, theta_f = np.r_[plain.coef_[0], plain.intercept_], np.r_[fast.coef_[0], fast.intercept_]
    fun_p = plain._objective(X, yf, 2)[0]; fun_f = fast._objective(X, yf, 2)[0]
    hessp = _binary_curvature(fast, mats, yf, np.ones(X.shape[1]))(theta_f)[0]
    return median_time(lambda: fun_p(theta_p)), median_time(lambda: fun_f(theta_f)), median_time(lambda: hessp(theta_f))


def mc_trajectory(est, X, y, Xte, yte):
    """Fit `est` (a sampled method) with the estimator's own objective and L-BFGS-B settings, recording the
    elapsed time and the parameters at every iteration; returns `(total seconds, [(seconds, test accuracy)])`."""
    from sklearn.utils.validation import validate_data
    est._validate_params()
    classes, yi = np.unique(y, return_inverse=True)
    fun, size = est._objective(X, yi.astype(float), len(classes))
    marks, t0 = [], time.process_time()
    cb = lambda xk: marks.append((time.process_time() - t0, xk.copy()))
    optimize.minimize(fun, np.zeros(size), jac=True, method='L-BFGS-B', callback=cb,
                      options=dict(maxiter=est.max_iter, maxls=50, gtol=est.tol, ftol=0.0))
    total = time.process_time() - t0
    m = X.shape[1]
    traj = []
    for secs, theta in marks:                        # off the clock
        scores = Xte @ theta[:m] + theta[m]
        traj.append((secs, float(((scores > 0).astype(int) == yte).mean())))
    return total, traj


def main(argv=None):
    from _typed import typed_command, typed_data   # benchmarks/_typed.py
    from fastdropout_nb.data import data_dir, TEXT_DATASETS
    from fastdropout_nb.experiments import LR_METHODS
    from fastdropout_nb.logistic import FastDropoutLogisticRegression
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--datasets', nargs='+', default=['AthR', 'CR', 'RT-2k', 'MPQA', 'RTs', 'subj'],
                    choices=list(TEXT_DATASETS))
    ap.add_argument('--mc-samples', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default=None, help='also write the report to this file')
    args = ap.parse_args(argv)
    import torch; torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits
    root, lines = data_dir(args.data_dir), []
    def say(line=''):
        print(line, flush=True); lines.append(line)
    say(f'# lr_timing: {typed_command("benchmarks/lr_timing.py", argv)}')
    say(f'# {platform.machine()} {platform.system()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, '
        f'one thread, {time.strftime("%Y-%m-%d %H:%M")}, load average {os.getloadavg()[0]:.1f} at the start; data {typed_data(args.data_dir)}')
    say(f'# plain LR: {LR_METHODS["plain LR"]} (L-BFGS-B); fast dropout: {LR_METHODS["closed form"]}, solver tron '
        f'(default) and lbfgs; MC dropout: method=mc, p=0.5, C=12.5, n_samples={args.mc_samples}')
    head = (f'{"data set":8s} {"n_train":>7s} {"m":>7s} | {"plain s":>7s} {"acc":>5s} {"it":>3s} | '
            f'{"tron s":>6s} {"acc":>5s} {"it":>3s} {"f":>3s} {"Hv":>4s} | {"lbfgs s":>7s} {"acc":>5s} {"it":>3s} | '
            f'{"MC s":>6s} {"acc":>5s} {"MC s@=":>6s} | {"tron/plain":>10s} {"lbfgs/plain":>11s} {"eval":>5s} {"Hv":>5s} '
            f'{"MC/fast@=":>9s}')
    say(head); say('-' * len(head))
    rows = []
    with threadpool_limits(1):
        for name in args.datasets:
            Xtr, ytr, Xte, yte = split_of(name, root, args.seed)
            plain = FastDropoutLogisticRegression(random_state=args.seed, **LR_METHODS['plain LR'])
            tron = FastDropoutLogisticRegression(random_state=args.seed, solver='tron', **LR_METHODS['closed form'])
            lbfgs = FastDropoutLogisticRegression(random_state=args.seed, solver='lbfgs', **LR_METHODS['closed form'])
            t_plain = timed_fit(plain, Xtr, ytr); a_plain = plain.score(Xte, yte)
            t_tron = timed_fit(tron, Xtr, ytr); a_tron = tron.score(Xte, yte)
            t_lbfgs = timed_fit(lbfgs, Xtr, ytr); a_lbfgs = lbfgs.score(Xte, yte)
            e_plain, e_fast, e_hv = eval_costs(plain, tron, Xtr, ytr)
            mc = FastDropoutLogisticRegression(method='mc', p=0.5, C=12.5, n_samples=args.mc_samples, random_state=args.seed)
            t_mc, traj = mc_trajectory(mc, Xtr, ytr, Xte, yte)
            a_mc = traj[-1][1] if traj else float('nan')
            hit = next((s for s, a in traj if a >= a_tron), None)
            t_eq, mark = (hit, ' ') if hit is not None else (t_mc, '>')
            r = dict(tron=t_tron / t_plain, lbfgs=t_lbfgs / t_plain, eval=e_fast / e_plain, hv=e_hv / e_plain, mc=t_eq / t_tron)
            rows.append(r)
            res = tron.optimize_result_
            say(f'{name:8s} {Xtr.shape[0]:7d} {Xtr.shape[1]:7d} | {t_plain:7.2f} {100 * a_plain:5.1f} {plain.n_iter_[0]:3d} | '
                f'{t_tron:6.2f} {100 * a_tron:5.1f} {tron.n_iter_[0]:3d} {res.nfev:3d} {res.nhev:4d} | {t_lbfgs:7.2f} '
                f'{100 * a_lbfgs:5.1f} {lbfgs.n_iter_[0]:3d} | {t_mc:6.1f} {100 * a_mc:5.1f} {t_eq:6.1f} | {r["tron"]:10.2f} '
                f'{r["lbfgs"]:11.2f} {r["eval"]:5.2f} {r["hv"]:5.2f} {mark}{r["mc"]:8.1f}')
    say(f'# load average {os.getloadavg()[0]:.1f} at the end')
    gm = {k: float(np.exp(np.mean(np.log([r[k] for r in rows])))) for k in rows[0]}
    say('-' * len(head))
    say(f'geometric means: fast/plain {gm["tron"]:.2f} with solver tron (target <= 2.0, paper 3.5), {gm["lbfgs"]:.2f} with '
        f'lbfgs; one evaluation {gm["eval"]:.2f}x plain LR\'s, one Hessian-vector product {gm["hv"]:.2f}x; '
        f'MC/fast at equal accuracy {gm["mc"]:.1f} (target >= 10, paper 8.2)')
    say('columns: s = fit CPU seconds (one thread); acc = test accuracy % on the split; it = iterations; f, Hv = objective '
        'evaluations and Hessian-vector products of tron; "MC s@=" = seconds until MC dropout\'s iterates first reach '
        'tron\'s accuracy (\'>\' in the ratio: never reached, whole fit used); eval, Hv = seconds of one fast-dropout '
        'evaluation (value and gradient) and one Hessian-vector product over one plain-LR evaluation (medians of 7).')
    if args.out: Path(args.out).write_text('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
