"""MNIST 784-1200-1200-10: plain, MC dropout, fast dropout and fast dropout + Var, beside the paper.

Runs `fastdropout_nb.fastdropout_protocols.mnist_experiment` for each kind and writes one JSON file with every result
(test errors of 10 000; for the MC-dropout net also standard, MC-100 and moment-propagation
inference), the settings, the device and the paper's numbers. Checkpoints let a long run resume.

The committed reports (shown in nbs/11_mnist.ipynb):
  python benchmarks/mnist_nn.py --epochs 20 --threads 1 --out reports/mnist_nn_20epochs.json
  python benchmarks/mnist_nn.py --epochs 111 --kinds mc_dropout --threads 1 --out reports/mnist_mc_dropout_111epochs.json
  python benchmarks/mnist_nn.py --epochs 64 --kinds fast_dropout --threads 1 --out reports/mnist_fast_dropout_64epochs.json
The paper's length: --epochs 300 (uses a GPU when one is present). Training is seeded per epoch and checkpoints resume
exactly (--checkpoint-dir), so a run scored after N epochs equals the first N epochs of a longer one.
Choosing settings without the test set: add --validation (train on 50 000, score the last 10 000 training images),
and vary --lr, --max-norm, --var-scale. Checkpoint names carry the settings, so runs with different settings
never share a checkpoint.
"""
import argparse
import json
import time

import torch

from fastdropout_nb.fastdropout_protocols import PAPER_MNIST_ERRORS, mnist_experiment, mnist_tensors


def tag(a, kind):
    "The settings that differ from the defaults, for the checkpoint's name ('' for the defaults)."
    parts = [f'lr{a.lr:g}' if a.lr != 0.05 else '', f'decay{a.lr_decay:g}' if a.lr_decay != 0.99 else '',
             f'maxnorm{a.max_norm:g}' if a.max_norm else '', f'var{a.var_scale:g}' if kind == 'fast_dropout_var' and a.var_scale != 1.5 else '',
             'val' if a.validation else '', f'n{a.n_train}' if a.n_train else '']
    return ''.join('_' + p for p in parts if p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data-dir', default='../shared/data')
    ap.add_argument('--epochs', type=int, default=300)
    ap.add_argument('--n-train', type=int, default=None)
    ap.add_argument('--kinds', nargs='*', default=list(PAPER_MNIST_ERRORS))
    ap.add_argument('--checkpoint-dir', default=None)
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--lr-decay', type=float, default=0.99)
    ap.add_argument('--max-norm', type=float, default=None, help="cap each unit's incoming weight norm (Srivastava et al. 2014)")
    ap.add_argument('--var-scale', type=float, default=1.5, help="the extra variance factor of 'fast_dropout_var'")
    ap.add_argument('--validation', action='store_true', help='score the last 10 000 training images instead of the test set')
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    data = mnist_tensors(a.data_dir, a.n_train, device)
    results = {}
    for kind in a.kinds:
        t0 = time.time()
        ck = f'{a.checkpoint_dir}/mnist_{kind}{tag(a, kind)}.pt' if a.checkpoint_dir else None
        results[kind] = r = mnist_experiment(kind, epochs=a.epochs, data=data, device=device, checkpoint=ck, lr=a.lr,
                                             lr_decay=a.lr_decay, max_norm=a.max_norm, var_scale=a.var_scale,
                                             validation=a.validation)
        r['total_seconds'] = time.time() - t0
        print(f"{kind:17s} {r['evaluated_on']} errors {r['test_errors']} of {r['n_test']} (paper {r['paper']}), {r['epochs']} epochs, "
              f"{r['train_seconds']:.0f} s training", flush=True)
        with open(a.out, 'w') as f: json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
