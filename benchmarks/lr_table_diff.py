"""Table 1 fold by fold: the stored LR cells now against the same cells at an earlier revision (today's solver
against the previous one), for the rows whose cells were recomputed.

Usage: python benchmarks/lr_table_diff.py [--base 611ea0b] [--rows 'closed form' quadrature ...] [--optimum --data-dir D]

Prints, per row, every fold's test accuracy before and after (points) and the largest |difference|; with
`--optimum`, each fold that moved by more than 0.1 point is refitted at `tol=1e-10` (the optimum of the same
objective, to which both solvers converge) and its accuracy printed beside, so that one sees which solve
stopped further from it.
"""
import argparse, json, re, subprocess, sys, warnings
from pathlib import Path

import numpy as np


def cells_at(rev, folder='reports/lr-full'):
    "`{cell name: stored value}` of the LR cells at git revision `rev` (None: the working tree)."
    if rev is None:
        return {f.stem: json.loads(f.read_text())['value'] for f in Path(folder).glob('*.json')}
    names = subprocess.run(['git', 'ls-tree', '--name-only', rev, folder + '/'], capture_output=True, text=True, check=True).stdout.split()
    return {Path(n).stem: json.loads(subprocess.run(['git', 'show', f'{rev}:{n}'], capture_output=True, text=True, check=True).stdout)['value']
            for n in names}


def optimum_accuracy(name, method, k, data_dir, seed=0):
    "Test accuracy of the row's estimator on fold `k` fitted to `tol=1e-10` (its selected hyperparameters for tuned rows)."
    from fastdropout_nb.experiments import LR_METHODS, _lr_folds
    from fastdropout_nb.logistic import FastDropoutLogisticRegression
    load, folds = _lr_folds(name, data_dir, seed)
    Xtr, ytr, Xte, yte = load(*folds[k])
    return Xtr, ytr, Xte, yte, FastDropoutLogisticRegression(random_state=seed, **LR_METHODS[method])


def main(argv=None):
    from fastdropout_nb.experiments import LR_METHODS
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--base', default='611ea0b')
    ap.add_argument('--rows', nargs='+', default=['closed form', 'quadrature', 'closed form, p by inner CV'])
    ap.add_argument('--optimum', action='store_true')
    ap.add_argument('--data-dir', default=None)
    args = ap.parse_args(argv)
    print(f'# lr_table_diff: python benchmarks/lr_table_diff.py {" ".join(sys.argv[1:] if argv is None else argv)}')
    old, new = cells_at(args.base), cells_at(None)
    slug = {m: re.sub(r'[^A-Za-z0-9]+', '_', m).strip('_') for m in LR_METHODS}
    worst = 0.0
    for method in args.rows:
        diffs = []
        for cell in sorted(c for c in new if c.split('__')[1] == slug[method] and c in old):
            a, b = 100 * old[cell]['accuracy'], 100 * new[cell]['accuracy']
            diffs.append((cell, a, b, b - a))
        d = np.array([x[3] for x in diffs])
        worst = max(worst, np.abs(d).max())
        print(f'\n{method}: {len(d)} folds; |Δ| <= 0.1 point in {int((np.abs(d) <= 0.1 + 1e-9).sum())}; max |Δ| {np.abs(d).max():.2f}; '
              f'mean Δ {d.mean():+.3f}; test documents changed: {sum(abs(new[c]["correct"] - old[c]["correct"]) for c, *_ in diffs)} '
              f'of {sum(new[c]["n_test"] for c, *_ in diffs)}')
        for cell, a, b, dd in diffs:
            if abs(dd) <= 0.1 + 1e-9: continue
            line = f'  {cell:45s} {a:6.2f} -> {b:6.2f} ({dd:+.2f}; {new[cell]["correct"] - old[cell]["correct"]:+d} of {new[cell]["n_test"]})'
            if args.optimum and 'inner_CV' not in cell:
                name, _, fold = cell.split('__')
                Xtr, ytr, Xte, yte, est = optimum_accuracy(name, method, int(fold[4:]), args.data_dir)
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    est.set_params(tol=1e-10, max_iter=1000).fit(Xtr, ytr)
                opt = 100 * est.score(Xte, yte)
                line += f'; optimum {opt:6.2f}: {"new" if abs(b - opt) < abs(a - opt) else "old" if abs(a - opt) < abs(b - opt) else "both"} closer'
            print(line, flush=True)
    print(f'\nlargest |Δ| over the rows: {worst:.2f} points')
    return 0


if __name__ == '__main__':
    sys.exit(main())
