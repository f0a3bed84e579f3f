"""Fast dropout vs MC dropout vs plain training on MNIST 784-1200-1200-10: one run, one report.

Prints (and writes to --out): seconds per training epoch of each kind, the training wall time each
needs to reach a target test error (evaluation time excluded; checked after every epoch), and the
inference cost of `moment_propagation` and of MC-100 (`mc_predict`, one pass per sampled net and with the
batch repeated) relative to one standard forward pass of the MC-dropout net (all over the same test images,
batches of 1000, argument checks off).

Uses a GPU when one is available, the CPU otherwise. Example (the committed CPU report):

    OMP_NUM_THREADS=1 python benchmarks/nn_timing.py --data-dir DATA --n-train 10000 \
        --max-epochs 6 --target 0.06 --n-infer 2000 --threads 1 --out reports/nn_timing.txt
"""
import argparse
import platform
import sys
import time

import torch
import torch.nn.functional as F

from fastdropout_nb.arrays import no_checks
from fastdropout_nb.distill import mc_predict, switchable_dropout
from fastdropout_nb.moments import softmax_mean
from fastdropout_nb.nn import count_errors, fast_twin, train_mlp
from fastdropout_nb.fastdropout_protocols import make_mnist_model, mnist_tensors

KINDS = ('plain', 'mc_dropout', 'fast_dropout')


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def timed(fn, device, repeat=3):
    "Best wall time of `repeat` calls of `fn` (after one warm-up call)."
    fn(); sync(device); best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); sync(device); best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def inference_costs(model, X, device, batch=1000, mc_samples=100):
    """Seconds for standard, moment-propagation and MC-`mc_samples` prediction of `X` with the dropout net `model`;
    MC by `mc_predict`, looped (a pass per sampled net) and batched (the batch repeated, mc_predict's memory budget a pass)."""
    twin = fast_twin(model)                       # moment propagation of the dropout_mlp: its FastDropoutMLP twin
    net = switchable_dropout(model)               # traced once, outside the timings
    def standard():
        model.eval()
        for i in range(0, len(X), batch): F.softmax(model(X[i:i + batch]), -1)
    def moment():
        for i in range(0, len(X), batch): softmax_mean(*twin(X[i:i + batch]), method='unscented')
    def mc(batched):
        return lambda: mc_predict(net, X, mc_samples, seed=0, batch_size=batch, progress=False, batched=batched)
    with no_checks():
        t_std, t_mom = timed(standard, device), timed(moment, device)
        t_loop, t_batched = timed(mc(False), device, repeat=1), timed(mc(True), device, repeat=1)
    model.eval()
    return t_std, t_mom, t_loop, t_batched


def main(argv=None):
    from _typed import typed_command   # benchmarks/_typed.py
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data-dir', default=None)
    ap.add_argument('--n-train', type=int, default=None, help='first N training images (default all 60000)')
    ap.add_argument('--max-epochs', type=int, default=10)
    ap.add_argument('--target', type=float, default=0.02, help='target test error rate')
    ap.add_argument('--n-infer', type=int, default=None, help='test images used for the inference timings (default all)')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--device', default=None)
    ap.add_argument('--out', default=None)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    device = torch.device(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
    Xtr, ytr, Xte, yte = mnist_tensors(a.data_dir, a.n_train, device)
    lines = [f'device: {name}; torch {torch.__version__}',
             f'command: {typed_command("benchmarks/nn_timing.py", argv)}',
             f'data: MNIST, {len(ytr)} training images, {len(yte)} test images; net 784-1200-1200-10, ReLU, p_input 0.2, p_hidden 0.5; '
             f'SGD momentum 0.9, lr 0.05, batch 100', '']
    print('\n'.join(lines), flush=True)
    per_epoch, models = {}, {}
    for kind in KINDS:
        model = make_mnist_model(kind).to(device)
        method = 'moment' if kind.startswith('fast') else 'standard'
        hist = train_mlp(model, Xtr, ytr, a.max_epochs, progress=None,
                         evaluate=lambda m: dict(error=count_errors(m, Xte, yte, method=method) / len(yte)),
                         until=lambda r: r['error'] <= a.target)
        secs = sorted(r['seconds'] for r in hist); per_epoch[kind] = secs[len(secs) // 2]; models[kind] = model
        reached = hist[-1]['error'] <= a.target
        line = (f"{kind:13s} {per_epoch[kind]:7.2f} s/epoch (median of {len(hist)}); test error by epoch "
                f"{[round(r['error'] * 100, 2) for r in hist]} %; "
                + (f"target {a.target:.1%} reached after {len(hist)} epochs, {hist[-1]['wall']:.1f} s of training"
                   if reached else f"target {a.target:.1%} not reached in {len(hist)} epochs ({hist[-1]['wall']:.1f} s)"))
        print(line, flush=True); lines.append(line)
    lines += ['', f"seconds per epoch relative to plain: mc_dropout {per_epoch['mc_dropout'] / per_epoch['plain']:.2f}x, "
                  f"fast_dropout {per_epoch['fast_dropout'] / per_epoch['plain']:.2f}x (target <= 2x)",
              f"fast_dropout relative to mc_dropout: {per_epoch['fast_dropout'] / per_epoch['mc_dropout']:.2f}x"]
    Xinf = Xte[:a.n_infer] if a.n_infer else Xte
    t_std, t_mom, t_loop, t_batched = inference_costs(models['mc_dropout'], Xinf, device)
    lines += [f'inference on {len(Xinf)} test images (MC-dropout net): standard {t_std:.3f} s, moment_propagation {t_mom:.3f} s '
              f'({t_mom / t_std:.2f}x, target <= 2.5x), MC-100 looped {t_loop:.2f} s ({t_loop / t_std:.1f}x), '
              f'MC-100 batched {t_batched:.2f} s ({t_batched / t_std:.1f}x)']
    print('\n'.join(lines[-4:]))
    if a.out:
        with open(a.out, 'w') as f: f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
