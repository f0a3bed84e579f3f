"""Moment propagation through attention (chapter 04b) on the transformer nets of the attention zoo
(benchmarks/attention_zoo.py: a `nn.TransformerEncoderLayer`, a GPT-style block calling
`F.scaled_dot_product_attention(..., dropout_p=self.p if self.training else 0.0)`, hand-written attention with
`nn.Dropout` on the weights), with the zoo's weights (PyTorch's random init times SCALE; not trained) and inputs
(random sequences of 6 tokens of width 16). Against MC-2000 (`uncertainty.mc_outputs`, a second MC-2000 with other masks
for its own noise): the probabilities' RMS distance of the propagated net (E[softmax] of its Gaussian logits, unscented)
and of the standard pass, the logits' variance relative Frobenius error, the mean logits' relative error, and the
propagated pass's time over a standard pass's; the same for the logits' full covariance (chapter 04c's
`covariance_propagation`, E[softmax] with the covariance's sigma points). The zoo's LSTM and GRU are refused: their refusal is recorded.

    python benchmarks/attention_moments.py --out reports/attention_moments.json
"""
import argparse, importlib.util, json, pathlib, time
import torch
from fastdropout_nb.propagation import moment_propagation
from fastdropout_nb.moments import softmax_mean
from fastdropout_nb.uncertainty import mc_outputs, covariance_propagation, softmax_stats

_path = pathlib.Path(__file__).resolve().parent / 'attention_zoo.py'
_spec = importlib.util.spec_from_file_location('attention_zoo', _path)
zoo = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(zoo)
TRANSFORMERS, RECURRENT = ('encoder', 'gpt_sdpa', 'hand_attention'), ('lstm', 'gru')


def net_and_inputs(name, n):
    "The zoo's net `name` (init times SCALE, seed 0) in eval mode and `n` held-out sequences (the zoo's test inputs when n = 256)."
    torch.manual_seed(0)
    net = zoo.NETS[name]().eval()
    with torch.no_grad():
        for prm in net.parameters():
            if prm.dim() > 1: prm.mul_(zoo.SCALE[name])
    g = torch.Generator().manual_seed(1)
    torch.randn(1024, zoo.T, zoo.D, generator=g)                        # the zoo's unlabelled sequences, skipped
    return net, torch.randn(n, zoo.T, zoo.D, generator=g)


def seconds(f, reps=5):
    "Best of `reps` timings of f()."
    best = float('inf')
    for _ in range(reps):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    return best


def run(name, n=256, masks=2000, cov=True, timing=True):
    "One net's row: distances to MC-`masks` of the diagonal twin, the covariance pass (`cov`) and the standard pass; costs (`timing`)."
    net, x = net_and_inputs(name, n)
    twin, cov_twin = moment_propagation(net), covariance_propagation(net)
    with torch.no_grad():
        mean, var = twin(x)
        std = net(x).softmax(-1)
    out, out2 = mc_outputs(net, x, masks, seed=1), mc_outputs(net, x, masks, seed=2)
    mc_p, mc_m, mc_v = out.softmax(-1).mean(0), out.mean(0), out.var(0)
    rms = lambda p: float(((p - mc_p) ** 2).sum(-1).mean().sqrt())
    fro = lambda v: float((v - mc_v).norm() / mc_v.norm())
    row = {}
    if cov:
        c_mean, c = cov_twin(x)
        row.update(rms_cov=rms(softmax_stats(c_mean.detach(), c)[0]), var_rel_fro_cov=fro(torch.diagonal(c, dim1=-2, dim2=-1)))
    if timing:
        with torch.no_grad(): t_prop, t_std = seconds(lambda: twin(x)), seconds(lambda: net(x))
        row.update(cost_vs_standard=t_prop / t_std)
        if cov: row.update(cov_cost_vs_standard=seconds(lambda: softmax_stats(*cov_twin(x)), reps=2) / t_std)
    return dict(rms_prop=rms(softmax_mean(mean, var, method='unscented')), rms_standard=rms(std), **row,
                rms_mc_mc=rms(out2.softmax(-1).mean(0)), var_rel_fro=fro(var), var_rel_fro_mc_mc=fro(out2.var(0)),
                mean_rel_err=float((mean - mc_m).norm() / mc_m.norm()), mean_rel_err_mc_mc=float((out2.mean(0) - mc_m).norm() / mc_m.norm()))


def refusal(name):
    "The ValueError moment_propagation raises for a recurrent net (its hidden dropout is never answered with variance 0)."
    try: moment_propagation(net_and_inputs(name, 1)[0])
    except ValueError as e: return str(e).split('. Supported:')[0]
    raise AssertionError(f"{name}: moment_propagation did not refuse")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='reports/attention_moments.json')
    ap.add_argument('--masks', type=int, default=2000); ap.add_argument('--n', type=int, default=256)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = {name: run(name, a.n, a.masks) for name in TRANSFORMERS}
    report = dict(**zoo.header('attention_moments.py', argv),
                  settings=dict(width=zoo.D, tokens=zoo.T, classes=zoo.K, p=zoo.P, masks=a.masks, test=a.n,
                                weights='PyTorch init times SCALE (not trained), as benchmarks/attention_zoo.py', scale=zoo.SCALE,
                                targets=dict(rms_ratio=0.7, var_rel_fro=0.35)),
                  nets=rows, refused={name: refusal(name) for name in RECURRENT})
    with open(a.out, 'w') as f: json.dump(report, f, indent=1)
    print(report['command']); print(report['machine'])
    print(f"{'':15s} {'probabilities RMS to MC':^50s} | {'logits variance error':^24s} |")
    print(f"{'net':15s} {'diag':>7s} {'cov':>7s} {'std':>7s} {'diag/std':>8s} {'cov/std':>8s} {'MC/MC':>7s} | {'diag':>6s} {'cov':>6s} {'MC/MC':>6s} | "
          f"{'mean err':>9s} {'cost':>6s} {'cov cost':>8s}")
    for name, r in rows.items():
        print(f"{name:15s} {r['rms_prop']:7.4f} {r['rms_cov']:7.4f} {r['rms_standard']:7.4f} {r['rms_prop'] / r['rms_standard']:8.2f} "
              f"{r['rms_cov'] / r['rms_standard']:8.2f} {r['rms_mc_mc']:7.4f} | {r['var_rel_fro']:6.3f} {r['var_rel_fro_cov']:6.3f} "
              f"{r['var_rel_fro_mc_mc']:6.3f} | {r['mean_rel_err']:9.4f} {r['cost_vs_standard']:6.1f} {r['cov_cost_vs_standard']:8.1f}")
    for name, why in report['refused'].items(): print(f"{name}: refused: {why[:150]}")


if __name__ == '__main__':
    main()
