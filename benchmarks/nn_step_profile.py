"""Where a training step's time goes, fast dropout against MC dropout, on the MNIST 784-1200-1200-10 net: one epoch of
`train_mlp` per kind on random MNIST-shaped data (2000 images in [0, 1], batch 100; the cost does not depend on the
values) under torch.profiler, split into matrix products (aten::mm / addmm, with their count per step), dropout's
random masks (aten::bernoulli_) and the other ops. Needs no MNIST. `benchmarks/nn_timing.py` times whole epochs on MNIST.

    python benchmarks/nn_step_profile.py --threads 1 --out reports/nn_step_profile.txt [--device cuda]
"""
import argparse, platform, sys
import torch
from fastdropout_nb.nn import train_mlp
from fastdropout_nb.fastdropout_protocols import make_mnist_model

KINDS = ('plain', 'mc_dropout', 'fast_dropout')


def step_profile(device, n=2000, kinds=KINDS):
    "Per kind: seconds per step, and the shares of matrix products, random masks and the rest, from one profiled epoch."
    from torch.profiler import profile, ProfilerActivity
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(n, 784, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    own = (lambda e: e.self_device_time_total) if device.type == 'cuda' else (lambda e: e.self_cpu_time_total)
    out = {}
    for kind in kinds:
        model = make_mnist_model(kind).to(device)
        train_mlp(model, X[:500], y[:500], 1, progress=None)                       # warm-up
        with profile(activities=acts) as prof:
            hist = train_mlp(model, X, y, 1, progress=None)
        ev = {e.key: e for e in prof.key_averages()}
        steps, total = n // 100, sum(own(e) for e in ev.values()) / 1e6
        t = lambda *keys: sum(own(ev[k]) for k in keys if k in ev) / 1e6
        out[kind] = dict(step=hist[-1]['seconds'] / steps, matmul=t('aten::mm', 'aten::addmm') / total,
                         matmuls=sum(ev[k].count for k in ('aten::mm', 'aten::addmm') if k in ev) // steps,
                         masks=t('aten::bernoulli_') / total, matmul_s=t('aten::mm', 'aten::addmm') / steps)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
    lines = [f'device: {name}; torch {torch.__version__}', 'command: python benchmarks/nn_step_profile.py' + ''.join(' ' + s for s in sys.argv[1:]),
             'net 784-1200-1200-10, ReLU, p_input 0.2, p_hidden 0.5; SGD momentum 0.9, lr 0.05, batch 100; one profiled epoch of '
             '2000 random images per kind (profiler self times; a step\'s seconds from train_mlp, profiler on)']
    prof = step_profile(device)
    for kind, r in prof.items():
        lines.append(f"{kind:13s} {r['step'] * 1e3:7.1f} ms/step; matrix products {r['matmuls']:2d} per step, {r['matmul']:.0%} of the op time "
                     f"({r['matmul_s'] * 1e3:.1f} ms/step); random masks {r['masks']:.0%}; other ops {1 - r['matmul'] - r['masks']:.0%}")
    mc, fd = prof['mc_dropout'], prof['fast_dropout']
    lines.append(f"fast_dropout / mc_dropout: {fd['step'] / mc['step']:.2f}x per step; matrix products alone "
                 f"{fd['matmul_s'] / mc['matmul_s']:.2f}x ({fd['matmuls']} against {mc['matmuls']} per step)")
    text = '\n'.join(lines) + '\n'
    print(text)
    if a.out:
        with open(a.out, 'w') as f: f.write(text)


if __name__ == '__main__': main()
