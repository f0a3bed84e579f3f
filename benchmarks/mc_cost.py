"""MC dropout's cost relative to one standard pass: MC-100 (`mc_predict`, 100 sampled nets, their softmax outputs
averaged) looped (one pass per sampled net) and batched (the batch repeated, as many copies per pass as
`mc_predict`'s default memory budget holds), for each net of the zoo of chapter 04b and the MNIST 784-1200-1200-10 dropout MLP: on the 600
test digits in one batch (600 random inputs in [0, 1] for the MNIST net) and on one digit. Prints the ratios from this
one run and writes them to reports/mc_cost.txt.

    python benchmarks/mc_cost.py [--threads 1] [--device cpu] [--loaded] [--out reports/mc_cost.txt]

`mc_ratios` is the measurement; benchmarks/propagation_cost.py can report its columns beside the twin's.
"""
import argparse, inspect, os, platform, sys, time
from pathlib import Path
import torch
from fastdropout_nb.distill import mc_predict, switchable_dropout, _batch_check
from fastdropout_nb.distillation_protocols import digits_split
from fastdropout_nb.nn import dropout_mlp
from fastdropout_nb.propagation import zoo_models


def best_time(fn, device, repeat):
    "Best wall time of `repeat` calls (after one warm-up call)."
    def run():
        t0 = time.perf_counter(); fn()
        if device.type == 'cuda': torch.cuda.synchronize()
        return time.perf_counter() - t0
    run(); return min(run() for _ in range(repeat))


@torch.no_grad()
def mc_ratios(net, x, device, n_samples=100, repeat=2):
    "Standard pass (s) and MC-`n_samples` looped / batched as ratios to it, and the copies a batched pass takes."
    net = switchable_dropout(net.to(device).eval())          # traced once, outside the timings
    x = x.to(device)
    std = best_time(lambda: net(x), device, 7)
    mc = lambda batched: best_time(lambda: mc_predict(net, x, n_samples, seed=0, batched=batched, progress=False), device, repeat)
    per_row = _batch_check(net, x)[1]
    memory = inspect.signature(mc_predict).parameters['memory'].default
    copies = min(n_samples, max(1, int(memory // max(1, per_row * len(x)))))
    return dict(standard=std, looped=mc(False) / std, batched=mc(True) / std, copies=copies)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--loaded', action='store_true', help='the machine runs other jobs meanwhile (said in the report)')
    ap.add_argument('--out', default='reports/mc_cost.txt')
    a = ap.parse_args()
    torch.set_num_threads(a.threads); device = torch.device(a.device)
    x = digits_split(0)['test'][0]
    nets = {**zoo_models(), 'mnist_1200': lambda: dropout_mlp((784, 1200, 1200, 10), 0.2, 0.5)}
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores'
    lines = [f"command: python benchmarks/mc_cost.py{''.join(' ' + s for s in sys.argv[1:])}",
             f"machine: {where}{' shared with other jobs' if a.loaded else ''}, torch {torch.__version__}, {a.threads} thread(s); "
             'standard: best of 7, MC-100: best of 2, after a warm-up call; ratios to the standard pass of the same net and batch',
             f"{'net':16s} {'rows':>4s} {'standard s':>10s} {'MC-100 looped':>13s} {'MC-100 batched':>14s} {'copies/pass':>11s} {'looped/batched':>14s}"]
    for name, make in nets.items():
        torch.manual_seed(0); net = make()
        xs = torch.rand(len(x), 784, generator=torch.Generator().manual_seed(0)) if name == 'mnist_1200' else x
        for rows in (len(xs), 1):
            r = mc_ratios(net, xs[:rows], device)
            lines.append(f"{name:16s} {rows:4d} {r['standard']:10.5f} {r['looped']:12.1f}x {r['batched']:13.1f}x {r['copies']:11d} "
                         f"{r['looped'] / r['batched']:13.2f}x")
            print(lines[-1], flush=True)
    text = '\n'.join(lines) + '\n'
    print(text); Path(a.out).write_text(text)


if __name__ == '__main__': main()
