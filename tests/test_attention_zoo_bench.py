"The attention/recurrent zoo of benchmarks/attention_zoo.py: every net samples under mc_predict and distils."
import importlib.util, pathlib
import pytest

_path = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'attention_zoo.py'
_spec = importlib.util.spec_from_file_location('attention_zoo', _path)
bench = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(bench)


@pytest.mark.parametrize('name', list(bench.NETS))
def test_mc_differs_from_the_standard_pass_beyond_its_noise(name):
    r = bench.run(name, masks=300, epochs=1)
    assert r['kl_mc_standard'] > 5 * r['kl_mc_mc'], r          # MC samples the net's dropouts (not a standard pass)
    assert all(v == v for v in r.values())                       # finite, no NaN
