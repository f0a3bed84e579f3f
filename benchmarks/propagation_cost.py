"""Inference cost of `moment_propagation` relative to one standard forward pass, for each net of the zoo of
chapter 04b, beside MC-100 (100 sampled nets, their softmax outputs averaged), on the 600 test digits in one batch.
Prints the ratios from this one run and writes them to reports/propagation_cost.txt.

    python benchmarks/propagation_cost.py [--loaded]    (--loaded: the machine runs other jobs meanwhile)
"""
import os, platform, sys, time
from pathlib import Path
import torch
from fastdropout_nb.distillation_protocols import digits_split
from fastdropout_nb.propagation import zoo_models, moment_propagation, _switch_dropout_on

COMMAND = 'python benchmarks/propagation_cost.py' + ''.join(' ' + a for a in sys.argv[1:])

def best_time(fn, repeat=7):
    "Best wall time of `repeat` calls (after two warm-up calls)."
    fn(); fn(); best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return best

@torch.no_grad()
def costs(net, x):
    net.eval()
    moments, probs = moment_propagation(net), moment_propagation(net, 'softmax')
    t_std = best_time(lambda: net(x))
    def mc100():                                     # 100 sampled nets, their softmax outputs averaged
        _switch_dropout_on(net)
        acc = sum(net(x).softmax(-1) for _ in range(100)) / 100
        net.eval(); return acc
    return dict(standard=t_std, moments=best_time(lambda: moments(x)) / t_std, softmax=best_time(lambda: probs(x)) / t_std,
                mc100=best_time(mc100, repeat=2) / t_std)

def main():
    torch.set_num_threads(1)
    x = digits_split(0)['test'][0]
    lines = [f'command: {COMMAND}',
             f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores' + (' shared with other jobs' if '--loaded' in sys.argv else '')
             + f', torch {torch.__version__}, 1 thread; {len(x)} test digits in one batch; best of 7 (MC-100: of 2) after 2 warm-up calls',
             f"{'net':16s} {'standard s':>10s} {'moments/std':>11s} {'softmax/std':>11s} {'MC-100/std':>10s}"]
    for name, make in zoo_models().items():
        torch.manual_seed(0); c = costs(make(), x)
        lines.append(f"{name:16s} {c['standard']:10.5f} {c['moments']:10.2f}x {c['softmax']:10.2f}x {c['mc100']:9.1f}x")
        print(lines[-1], flush=True)
    text = '\n'.join(lines) + '\n'
    print(text)
    Path('reports/propagation_cost.txt').write_text(text)

if __name__ == '__main__': main()
