"benchmarks/attention_moments.py on a small case: the propagated transformer nets against Monte Carlo, as the report says; a planted bug caught."
import importlib.util, pathlib
import pytest
import fastdropout_nb.propagation as P

_path = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'attention_moments.py'
_spec = importlib.util.spec_from_file_location('attention_moments', _path)
bench = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(bench)


@pytest.mark.parametrize('name', bench.TRANSFORMERS)
def test_propagated_transformer_nets_against_monte_carlo(name):
    """64 sequences, MC-1000: the logits' variance within 35 % of MC's (beyond MC's own error), probabilities closer to MC
    than the standard pass; with the logits' covariance within 0.7× the standard pass's distance."""
    r = bench.run(name, n=64, masks=1000, timing=False)
    assert r['var_rel_fro'] <= 0.35 + 2 * r['var_rel_fro_mc_mc'], r
    assert r['rms_prop'] < r['rms_standard'], r
    assert r['rms_cov'] <= 0.7 * r['rms_standard'], r
    if name != 'hand_attention': assert r['rms_prop'] <= 0.7 * r['rms_standard'], r      # hand_attention diagonal: 0.72 in the report


def test_recurrent_nets_are_refused():
    for name in bench.RECURRENT: assert 'drops inside itself' in bench.refusal(name)


def test_attention_dropout_ignored_is_caught(monkeypatch):
    "Planted bug: scaled_dot_product_attention's training-mode rate read as 0 (the eval trace's): the variance misses by far more than 35 %."
    monkeypatch.setattr(P, '_attention_rates', lambda model, gm: {})
    r = bench.run('gpt_sdpa', n=64, masks=1000, cov=False, timing=False)
    assert r['var_rel_fro'] > 0.35, r
