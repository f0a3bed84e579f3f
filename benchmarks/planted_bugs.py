"""Test power, measured: plant typical formula bugs in every registered Gaussian expectation and record
which of the tests generated from the registry (tests/test_registry.py) catch them.

Each bug wraps the entry's function (or, for a mistake inside a formula, is the entry's own `mutants`);
the wrapped entry replaces the real one in `REGISTRY` while that entry's generated tests run, in this
process, with the `ci` Hypothesis profile (no example database, no shrinking). Writes
reports/planted_bugs.md; with `--only NAME ...` it plants bugs in those entries only, prints their
rows, and replaces just their rows in the existing report (the other entries' rows stay, the total
is recounted). A function returning `(mean, var)` may be named for both its entries (`--only elu_moments`).

    .venv/bin/python benchmarks/planted_bugs.py [--out reports/planted_bugs.md] [--only NAME ...]
"""
import argparse, os, re, sys, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = ('test_monte_carlo', 'test_quadrature', 'test_exact_identity', 'test_finite_values_and_gradients_at_the_edges',
         'test_bad_input_names_the_argument')
SHORT = {'test_monte_carlo': 'MC', 'test_quadrature': 'quadrature', 'test_exact_identity': 'identity',
         'test_finite_values_and_gradients_at_the_edges': 'edges', 'test_bad_input_names_the_argument': 'bad input'}


def _sqrt_keep_sign(v):
    "sqrt(|v|) with v's sign, so a negative variance still reaches the function's own check."
    if torch.is_tensor(v): return v.sign() * v.abs().sqrt()
    v = np.asarray(v, dtype=float)
    return np.sign(v) * np.sqrt(np.abs(v))


GENERIC = {   # bug name -> wrapper of the real function
    'std for variance': lambda f: lambda mu, var: f(mu, _sqrt_keep_sign(var)),
    'constant 10 % off': lambda f: lambda mu, var: 1.1 * f(mu, var),
    'variance ignored': lambda f: lambda mu, var: f(mu, 0 * var),
    'variance halved': lambda f: lambda mu, var: f(mu, var / 2),
}
EXACT_ONLY = {'output 2 % off': lambda f: lambda mu, var: 1.02 * f(mu, var)}


def bugs_of(entry):
    "Every planted bug for `entry`: name -> broken function."
    out = {k: w(entry.fn) for k, w in GENERIC.items()}
    if entry.exact: out.update({k: w(entry.fn) for k, w in EXACT_ONLY.items()})
    out.update(entry.mutants)
    return out


class Plant:
    "pytest plugin: swap one registry entry's function for the run, record the outcome of every test."
    def __init__(self, registry, name, fn):
        self.registry, self.name, self.fn, self.failed, self.ran = registry, name, fn, set(), set()
    def pytest_sessionstart(self, session):
        self.real = self.registry[self.name]
        self.registry[self.name] = replace(self.real, fn=self.fn)
    def pytest_sessionfinish(self, session):
        self.registry[self.name] = self.real
    def pytest_runtest_logreport(self, report):
        test = report.nodeid.split('::')[-1].split('[')[0]
        if report.when == 'call' or report.failed: self.ran.add(test)
        if report.failed: self.failed.add(test)


def run(name, fn, registry):
    tests = [t for t in TESTS if t != 'test_exact_identity' or registry[name].identity is not None]
    ids = [f'{ROOT}/tests/test_registry.py::{t}[{name}]' for t in tests]
    plant = Plant(registry, name, fn)
    # -n 0: in this process, where the plant is (pyproject's addopts would send the tests to xdist workers)
    pytest.main(ids + ['-q', '-n', '0', '-p', 'no:cacheprovider', '--no-header', '-o', 'console_output_style=classic',
                       '--tb=no'], plugins=[plant])
    return plant


ROW = re.compile(r'^\| `([^`]+)` \| .+ \|$')


def merged_rows(path, names, new_rows, registry):
    "The report's rows with those of `names` replaced by `new_rows`, in registry order (entries no longer registered dropped)."
    old = [l for l in Path(path).read_text(encoding='utf-8').splitlines() if ROW.match(l)] if Path(path).exists() else []
    by_entry = {}
    for line in [l for l in old if ROW.match(l).group(1) not in names] + new_rows:
        by_entry.setdefault(ROW.match(line).group(1), []).append(line)
    return [line for n in registry if n in by_entry for line in by_entry[n]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / 'reports' / 'planted_bugs.md'))
    ap.add_argument('--only', nargs='*', help='registry names to plant bugs in, or a function for all its entries (default: all)')
    args = ap.parse_args()
    os.environ['HYPOTHESIS_PROFILE'] = 'ci'
    torch.set_num_threads(1)
    from hypothesis import settings, Phase
    from fastdropout_nb import testing  # noqa: F401  (registers the profiles)
    from fastdropout_nb.moments import REGISTRY
    settings.register_profile('planted', parent=settings.get_profile('ci'), database=None,
                              phases=[Phase.explicit, Phase.generate])
    settings.load_profile('planted')
    def expand(n):   # a function returning (mean, var), e.g. elu_moments, stands for its entries elu_moments.mean, .var
        return [n] if n in REGISTRY else [k for k in REGISTRY if k.startswith(n + '.')]
    unknown = [n for n in args.only or () if not expand(n)]
    if unknown: sys.exit(f'--only: not registry names: {unknown}; the names are {list(REGISTRY)}')
    names = [k for n in args.only for k in expand(n)] if args.only else list(REGISTRY)
    t0, rows, missed = time.time(), [], 0
    baseline = {n: run(n, REGISTRY[n].fn, REGISTRY) for n in names}
    for n in names:
        if baseline[n].failed: sys.exit(f'{n}: the real function fails {sorted(baseline[n].failed)}; fix that first')
    for n in names:
        for bug, fn in bugs_of(REGISTRY[n]).items():
            p = run(n, fn, REGISTRY)
            caught = [SHORT[t] for t in TESTS if t in p.failed]
            missed += not caught
            rows.append(f"| `{n}` | {bug} | {', '.join(caught) if caught else '**missed**'} |")
            print(rows[-1], flush=True)
    print(f'{len(rows) - missed}/{len(rows)} planted bugs caught in {", ".join(names)}')
    command = '`.venv/bin/python benchmarks/planted_bugs.py`'
    if args.only:
        rows = merged_rows(args.out, set(names), rows, REGISTRY)
        missed = sum('**missed**' in r for r in rows)
        command += f' (the rows of {", ".join(f"`{n}`" for n in names)}: `... planted_bugs.py --only {" ".join(names)}`)'
    total, n_entries = len(rows), len({ROW.match(r).group(1) for r in rows})
    took = '' if args.only else f' ({time.time() - t0:.0f} s)'
    lines = ['# Planted bugs: what the registry\'s generated tests catch', '',
             f'Command: {command} (tests/test_registry.py, Hypothesis profile `ci`, '
             '25 examples per test, derandomized). Each bug replaces one entry\'s function while that entry\'s tests run; '
             '"caught by" lists the generated tests that failed. The unchanged functions pass every test.', '',
             f'**{total - missed} of {total} planted bugs caught** over {n_entries} entries{took}.', '',
             '| entry | planted bug | caught by |', '|---|---|---|'] + rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text('\n'.join(lines) + '\n', encoding='utf-8')
    print(f'report: {total - missed}/{total} caught; wrote {args.out}')


if __name__ == '__main__':
    main()
