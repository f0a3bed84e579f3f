"""Inference cost of `moment_propagation` relative to one standard forward pass, for each net of the zoo of
chapter 04b and the MNIST 784-1200-1200-10 dropout MLP, on the 600 test digits in one batch (resized to 28 x 28 for
the MNIST net), with 1 thread and with all cores. Per net: the standard pass; the twin (diagonal moments), eager and
through `torch.compile`; the twin with the unscented softmax; the logits' full covariance (`covariance_propagation`);
MC-100 (`mc_predict`: 100 sampled nets, their softmax outputs averaged) looped and batched; and, with --baseline REV, the twin of the
package as committed at REV (run in a subprocess from `git archive REV`), in the same run. A second table costs the
covariance against the number of outputs K and the width W of a 64-W-W-K dropout MLP.
Prints the ratios from this one run and writes them to reports/propagation_cost.txt.

    python benchmarks/propagation_cost.py [--baseline REV] [--device cuda] [--loaded] [--out PATH]

On a GPU: `python benchmarks/propagation_cost.py --device cuda --out reports/propagation_cost_cuda.txt` (the thread
settings then only affect the host; timings synchronise the device).
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn
from fastdropout_nb.distillation_protocols import digits_split
from fastdropout_nb.distill import mc_predict, switchable_dropout
from fastdropout_nb.propagation import zoo_models, moment_propagation


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def best_time(fn, device, repeat=7):
    "Best wall time of `repeat` calls (after two warm-up calls)."
    fn(); fn(); sync(device); best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); sync(device); best = min(best, time.perf_counter() - t0)
    return best


def mnist_net():
    "The MNIST 784-1200-1200-10 dropout MLP (p_input 0.2, p_hidden 0.5): Dropout, Linear, ReLU as nn.Sequential."
    from fastdropout_nb.nn import dropout_mlp
    return dropout_mlp((784, 1200, 1200, 10), 0.2, 0.5)


def nets():
    return {**zoo_models(), 'mnist_1200': mnist_net}


def inputs(name, x):
    "The 600 digits (8 x 8) as the net takes them: flat 64 pixels, or resized to 28 x 28 for the MNIST net."
    if name != 'mnist_1200': return x
    return F.interpolate(x.reshape(-1, 1, 8, 8), size=(28, 28), mode='bilinear', align_corners=False).reshape(len(x), -1)


def twin_only(names, threads, device):
    "Times of the twin and the twin with softmax for `names` (the part a baseline package can run): name -> threads -> dict."
    x0 = digits_split(0)['test'][0]
    out = {}
    for name in names:
        make = nets()[name]; torch.manual_seed(0); net = make().to(device).eval(); x = inputs(name, x0).to(device)
        moments, probs = moment_propagation(net), moment_propagation(net, 'softmax')
        out[name] = {}
        for t in threads:
            torch.set_num_threads(t)
            with torch.no_grad():
                std = best_time(lambda: net(x), device)
                out[name][t] = dict(moments=best_time(lambda: moments(x), device) / std,
                                    softmax=best_time(lambda: probs(x), device) / std)
    return out


def costs(name, net, x, threads, device):
    "Every column for one net: name -> threads -> dict of seconds (standard) and ratios to the standard pass."
    from fastdropout_nb.uncertainty import covariance_propagation
    net.eval()
    moments, probs = moment_propagation(net), moment_propagation(net, 'softmax')
    compiled, cov = moment_propagation(net, compile=True), covariance_propagation(net)
    sampled = switchable_dropout(net)                                    # traced once, outside the timings
    t0 = time.perf_counter()
    with torch.no_grad(): compiled(x); compiled(x); sync(device)          # an eager call binds the rules, the second traces
    compile_s = time.perf_counter() - t0
    res = {}
    for t in threads:
        torch.set_num_threads(t)
        with torch.no_grad():
            std = best_time(lambda: net(x), device)
            mc100 = lambda batched: best_time(lambda: mc_predict(sampled, x, 100, seed=0, batched=batched, progress=False), device, repeat=2) / std
            r = dict(standard=std, moments=best_time(lambda: moments(x), device) / std,
                     compiled=best_time(lambda: compiled(x), device) / std,
                     softmax=best_time(lambda: probs(x), device) / std)
            r['mc100'], r['mc100_batched'] = mc100(False), mc100(True)
        r['covariance'] = best_time(lambda: cov(x), device, repeat=3) / std
        res[t] = r
    return res, compile_s


PRODUCTS = {'aten::mm', 'aten::addmm', 'aten::bmm', 'aten::mkldnn_convolution', 'aten::_slow_conv2d_forward', 'aten::thnn_conv2d'}


def twin_profile(twin, x, calls=3):
    "Where one twin call's time goes (torch.profiler, self times): matrix products and convolutions, the other ops, and the rest of the wall time."
    from torch.profiler import profile
    with torch.no_grad():
        twin(x); twin(x)
        t0 = time.perf_counter()
        with profile() as prof:
            for _ in range(calls): twin(x)
        wall = (time.perf_counter() - t0) / calls
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev) / 1e6 / calls
    products = sum(e.self_cpu_time_total for e in ev if e.key in PRODUCTS) / 1e6 / calls
    top = sorted((e for e in ev if e.key not in PRODUCTS), key=lambda e: -e.self_cpu_time_total)[:3]
    return dict(wall=wall, products=products / wall, ops=(total - products) / wall, rest=max(wall - total, 0.0) / wall,
                top=', '.join(f"{e.key.replace('aten::', '')} {e.self_cpu_time_total / 1e6 / calls / wall:.0%}" for e in top))


def covariance_growth(device, widths=(64, 512), outputs=(2, 10, 100)):
    "Seconds of the twin and of the covariance (and their ratio to the standard pass) for a 64-W-W-K MLP, 600 inputs."
    from fastdropout_nb.nn import dropout_mlp
    from fastdropout_nb.uncertainty import covariance_propagation
    x = torch.rand(600, 64, device=device)
    rows = []
    for w in widths:
        for k in outputs:
            torch.manual_seed(0); net = dropout_mlp((64, w, w, k), 0.2, 0.5).to(device).eval()
            twin, cov = moment_propagation(net), covariance_propagation(net)
            with torch.no_grad(): std, tw = best_time(lambda: net(x), device), best_time(lambda: twin(x), device)
            rows.append(dict(width=w, outputs=k, standard=std, moments=tw / std, covariance=best_time(lambda: cov(x), device, repeat=3) / std))
            print(f"cov W={w:5d} K={k:4d}: standard {std:.5f} s, twin {tw / std:.2f}x, covariance {rows[-1]['covariance']:.1f}x", flush=True)
    return rows


def baseline(rev, names, threads, device):
    "The twin of the package at `rev`, timed in a subprocess that imports it from `git archive rev`."
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(f"git archive {rev} fastdropout_nb | tar -x -C {d}", shell=True, check=True)
        env = {**os.environ, 'PYTHONPATH': d}
        cmd = [sys.executable, __file__, '--twin-only', ','.join(names), '--threads', ','.join(map(str, threads)), '--device', device.type]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return {name: {int(t): v for t, v in d.items()} for name, d in json.loads(out.strip().splitlines()[-1]).items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--baseline', default=None, help='a git revision whose twin to time beside (subprocess)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', default=None, help='comma-separated thread counts (default: 1 and all cores)')
    ap.add_argument('--loaded', action='store_true', help='the machine runs other jobs meanwhile (said in the report)')
    ap.add_argument('--out', default='reports/propagation_cost.txt')
    ap.add_argument('--note', default=None, help='a line for the report (why a setting was chosen)')
    ap.add_argument('--twin-only', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    device = torch.device(a.device)
    threads = [int(t) for t in a.threads.split(',')] if a.threads else sorted({1, os.cpu_count()})
    if a.twin_only:
        print(json.dumps(twin_only(a.twin_only.split(','), threads, device))); return
    command = 'python benchmarks/propagation_cost.py' + ''.join(' ' + s for s in sys.argv[1:])
    x0 = digits_split(0)['test'][0]
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores'
    lines = [f'command: {command}',
             f'machine: {where}' + (' shared with other jobs' if a.loaded else '') + f', torch {torch.__version__}; '
             f'{len(x0)} test digits in one batch (28 x 28 resized for mnist_1200); best of 7 (MC-100: of 2, covariance: of 3) '
             f'after 2 warm-up calls; ratios to the standard pass of the same net, same thread count',
             'columns: moments = the twin (diagonal), eager; compiled = the same through torch.compile; +softmax = the twin '
             'with the unscented softmax; cov = the logits\' full covariance (covariance_propagation); MC-100 looped = 100 '
             'sampled passes, softmax averaged (mc_predict, batched=False); MC batched = the same with the batch repeated (mc_predict, '
             'batched=True); batched/moments = how many times the eager twin is cheaper than batched MC-100' + (f'; at {a.baseline} = the twin (and with softmax) of the package at {a.baseline}' if a.baseline else '')]
    if a.note: lines.append(f'note: {a.note}')
    base = baseline(a.baseline, list(nets()), threads, device) if a.baseline else None
    head = (f"{'net':16s} {'threads':>7s} {'standard s':>10s} {'moments':>8s} {'compiled':>8s} {'+softmax':>8s} {'cov':>7s} {'MC looped':>9s} "
            f"{'MC batched':>10s} {'batched/moments':>15s}")
    if base: head += f" {'moments@' + a.baseline[:7]:>16s} {'+softmax@' + a.baseline[:7]:>17s}"
    lines.append(head)
    for name, make in nets().items():
        torch.manual_seed(0); net = make().to(device)
        res, compile_s = costs(name, net, inputs(name, x0).to(device), threads, device)
        for t, c in res.items():
            row = (f"{name:16s} {t:7d} {c['standard']:10.5f} {c['moments']:7.2f}x {c['compiled']:7.2f}x {c['softmax']:7.2f}x "
                   f"{c['covariance']:6.1f}x {c['mc100']:8.1f}x {c['mc100_batched']:9.1f}x {c['mc100_batched'] / c['moments']:14.1f}x")
            if base: row += f" {base[name][t]['moments']:15.2f}x {base[name][t]['softmax']:16.2f}x"
            lines.append(row); print(row, flush=True)
        lines.append(f"{'':16s} (torch.compile: first call {compile_s:.1f} s)")
    torch.set_num_threads(1)
    lines += ['', "where the twin's time goes (1 thread, torch.profiler self times over 3 calls, the profiler's own cost included): "
              "matrix products and convolutions / the other ops (the three largest) / the rest of the wall time (Python, dispatch)"]
    for name, make in (nets().items() if device.type == 'cpu' else ()):
        torch.manual_seed(0); net = make().to(device).eval()
        r = twin_profile(moment_propagation(net), inputs(name, x0).to(device))
        lines.append(f"{name:16s} {r['wall'] * 1e3:7.2f} ms: products {r['products']:4.0%}, other ops {r['ops']:4.0%} ({r['top']}), rest {r['rest']:4.0%}")
        print(lines[-1], flush=True)
    lines += ['', 'covariance against outputs K and width W: 64-W-W-K dropout MLP (p 0.2, 0.5), 600 random inputs, 1 thread',
              f"{'W':>5s} {'K':>4s} {'standard s':>10s} {'moments':>8s} {'cov':>7s}"]
    for r in covariance_growth(device):
        lines.append(f"{r['width']:5d} {r['outputs']:4d} {r['standard']:10.5f} {r['moments']:7.2f}x {r['covariance']:6.1f}x")
    text = '\n'.join(lines) + '\n'
    print(text)
    Path(a.out).write_text(text)


if __name__ == '__main__': main()
