"""Table 1 fold by fold: the stored LR cells now against the same cells at an earlier revision (the current solver
against the previous one), for the rows whose cells were recomputed.

Usage: python benchmarks/lr_table_diff.py [--base 611ea0b] [--rows 'closed form' quadrature ...] [--optimum --data-dir D --jobs N] [--out F]

Prints, per row, every fold's test accuracy before and after (points) and the largest |difference|; with
`--optimum`, each fold that moved by more than 0.1 point is refitted by the previous solver, L-BFGS-B, run to
`tol=1e-10` (the optimum of the same objective, with the fold's selected hyperparameters for a tuned row), and
its accuracy printed beside: a fold whose new accuracy is that one moved because the previous solve stopped
short of the optimum, not because the new solver finds another.
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


def optimum_accuracy(name, method, k, data_dir, params, seed=0):
    "Test accuracy (points) of the row's estimator with `params` on fold `k`, fitted by L-BFGS-B to `tol=1e-10`."
    from fastdropout_nb.experiments import LR_METHODS, _lr_folds
    from fastdropout_nb.logistic import FastDropoutLogisticRegression
    from threadpoolctl import threadpool_limits
    load, folds = _lr_folds(name, data_dir, seed)
    Xtr, ytr, Xte, yte = load(*folds[k])
    est = FastDropoutLogisticRegression(random_state=seed, **{**LR_METHODS[method], **params})
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        est.set_params(solver='lbfgs', tol=1e-10, max_iter=5000).fit(Xtr, ytr)
    return 100 * est.score(Xte, yte)


def main(argv=None):
    from _typed import typed_command   # benchmarks/_typed.py
    from fastdropout_nb.experiments import LR_METHODS
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--base', default='611ea0b')
    ap.add_argument('--rows', nargs='+', default=['closed form', 'quadrature', 'closed form, p by inner CV'])
    ap.add_argument('--optimum', action='store_true')
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--out', default=None, help='also write the report to this file')
    ap.add_argument('--jobs', type=int, default=1, help='parallel refits for --optimum')
    args = ap.parse_args(argv)
    lines = []
    def say(line=''):
        print(line, flush=True); lines.append(line)
    say(f'# lr_table_diff: {typed_command("benchmarks/lr_table_diff.py", argv)}')
    old, new = cells_at(args.base), cells_at(None)
    slug = {m: re.sub(r'[^A-Za-z0-9]+', '_', m).strip('_') for m in LR_METHODS}
    worst = 0.0
    moved = {}
    for method in args.rows:
        for cell in sorted(c for c in new if c.split('__')[1] == slug[method] and c in old):
            if abs(new[cell]['accuracy'] - old[cell]['accuracy']) > 1e-3 + 1e-11: moved[cell] = method
    opt = {}
    if args.optimum:
        from joblib import Parallel, delayed
        todo = sorted(moved)
        got = Parallel(n_jobs=args.jobs)(delayed(optimum_accuracy)(c.split('__')[0], moved[c], int(c.split('__')[2][4:]),
                                                                   args.data_dir, new[c].get('selected', {})) for c in todo)
        opt = dict(zip(todo, got))
    for method in args.rows:
        diffs, n_opt, n_new_at_opt = [], 0, 0
        for cell in sorted(c for c in new if c.split('__')[1] == slug[method] and c in old):
            a, b = 100 * old[cell]['accuracy'], 100 * new[cell]['accuracy']
            diffs.append((cell, a, b, b - a))
        d = np.array([x[3] for x in diffs])
        worst = max(worst, np.abs(d).max())
        say(f'\n{method}: {len(d)} folds; |Δ| <= 0.1 point in {int((np.abs(d) <= 0.1 + 1e-9).sum())}; max |Δ| {np.abs(d).max():.2f}; '
              f'mean Δ {d.mean():+.3f}; test documents changed: {sum(abs(new[c]["correct"] - old[c]["correct"]) for c, *_ in diffs)} '
              f'of {sum(new[c]["n_test"] for c, *_ in diffs)}')
        for cell, a, b, dd in diffs:
            if abs(dd) <= 0.1 + 1e-9: continue
            line = f'  {cell:45s} {a:6.2f} -> {b:6.2f} ({dd:+.2f}; {new[cell]["correct"] - old[cell]["correct"]:+d} of {new[cell]["n_test"]})'
            if cell in opt:
                n_opt += 1; n_new_at_opt += abs(b - opt[cell]) <= 0.1 + 1e-9
                line += f'; previous solver at the optimum {opt[cell]:6.2f}: new {"within 0.1" if abs(b - opt[cell]) <= 0.1 + 1e-9 else "OFF"}'
                if 'selected' in new[cell]:
                    line += f' (selected {new[cell]["selected"]}; before {old[cell].get("selected")})'
            say(line)
        if args.optimum: say(f'  moved folds whose new accuracy is within 0.1 point of the previous solver at the optimum: {n_new_at_opt} of {n_opt}')
    say(f'\nlargest |Δ| over the rows: {worst:.2f} points')
    if args.out: Path(args.out).write_text('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
