"""What the ReLUs' residual variance changes in `DeltaVariance` training: a short MNIST run, with and without it.

The MNIST 784-1200-1200-10 ReLU `FastDropoutMLP` (p_input 0.2, p_hidden 0.5, seed 0; SGD momentum 0.9, batch 100,
lr 0.05 decayed x0.99 per epoch) trained on `DeltaVariance(net, residual)` for both settings of `residual`, on the
first N training images for E epochs; scored on the last 10 000 training images (a validation split, never the test
set) by moment-propagation prediction after every epoch. For each trained net: the median over logits and 500
training rows of real dropout's logit variance (200 masks, the same weights) over the propagated one and over
delta's with and without the residual. `residual=False` is the rule the committed MNIST runs of
reports/mnist_fast_dropout_variants.json ('delta', 'delta_test') were trained with.

  python benchmarks/delta_residual.py --data-dir DATA --n-train 10000 --epochs 5 --threads 1 --out reports/delta_residual.json
"""
import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from fastdropout_nb.nn import DeltaVariance, FastDropoutMLP, _real_and_fast, count_errors, delta_moments, train_mlp
from fastdropout_nb.fastdropout_protocols import mnist_tensors


@torch.no_grad()
def logit_var_ratios(model, X, n_samples=200, seed=0):
    "Median over logits and rows of real dropout's logit variance (MC, the same weights) over each approximation's."
    real, _ = _real_and_fast(model); real.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        v_real = torch.stack([real(X) for _ in range(n_samples)]).var(0)
    rows = {'propagated': model(X)[1], 'delta': delta_moments(model, X)[1], 'delta, residual=False': delta_moments(model, X, residual=False)[1]}
    return {k: float((v_real / v).median()) for k, v in rows.items()}


def run(residual, data, epochs):
    Xtr, ytr, Xva, yva = data
    torch.manual_seed(0)
    net = FastDropoutMLP((784, 1200, 1200, 10), 0.2, 0.5)
    hist = train_mlp(DeltaVariance(net, residual), Xtr, ytr, epochs, lr=0.05, lr_decay=0.99, batch_size=100, momentum=0.9, seed=0,
                     evaluate=lambda m: dict(errors=count_errors(net, Xva, yva, method='moment')), progress=False)
    return dict(residual=residual, curve=[h['errors'] for h in hist], loss=[h['loss'] for h in hist],
                logit_var_ratio=logit_var_ratios(net, Xtr[:500]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data-dir', default='../shared/data')
    ap.add_argument('--n-train', type=int, default=10_000)
    ap.add_argument('--epochs', type=int, default=5)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default='reports/delta_residual.json')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads); torch.set_flush_denormal(True)
    Xtr, ytr, _, _ = mnist_tensors(a.data_dir)
    data = (Xtr[:a.n_train], ytr[:a.n_train], Xtr[-10_000:], ytr[-10_000:])
    if a.n_train > 50_000: raise ValueError(f"n_train must be <= 50 000 (the last 10 000 images are the validation split); got {a.n_train}")
    rows = [run(r, data, a.epochs) for r in (True, False)]
    report = dict(runs=rows, n_train=a.n_train, epochs=a.epochs, evaluated_on='validation (the last 10 000 training images)',
                  command='python ' + ' '.join(['benchmarks/delta_residual.py'] + sys.argv[1:]).replace(a.data_dir, 'DATA'),
                  machine=f'{platform.machine()} CPU, {a.threads} thread(s)', torch=torch.__version__)
    Path(a.out).write_text(json.dumps(report, indent=1) + '\n'); print(json.dumps(report))


if __name__ == '__main__':
    main()
