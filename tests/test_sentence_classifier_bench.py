"benchmarks/sentence_classifier.py on a small case: every method's row, the refusal recorded, and resuming skips finished units."
import importlib.util, json, pathlib
import pytest

_path = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'sentence_classifier.py'
_spec = importlib.util.spec_from_file_location('sentence_classifier', _path)
bench = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(bench)
if not (bench.SHARED / 'SHA256SUMS').is_file(): pytest.skip('the shared data folder is absent', allow_module_level=True)


def test_quick_run_rows_and_resume(tmp_path, monkeypatch):
    out = tmp_path / 'r.json'
    r = bench.main(['--quick', '--sets', 'RTs', '--nets', 'lstm', '--out', str(out)])
    u = r['units']['RTs/lstm']
    assert set(u['methods']) == {'standard', 'mc_10', 'moments', 'distilled'}
    for name, row in u['methods'].items():
        if 'refused' in row: assert name == 'moments' and "'rnn'" in row['refused']      # names the layer it stops at
        else: assert 0 <= row['accuracy'] <= 1 and row['nll'] > 0 and row['kl_to_mc'] >= 0 and row['cost_vs_standard'] > 0
    assert u['methods']['mc_10']['cost_vs_standard'] > 2                                 # ten passes cost more than one
    monkeypatch.setattr(bench, 'unit', lambda *a, **k: pytest.fail('a finished unit was run again'))
    assert bench.main(['--quick', '--sets', 'RTs', '--nets', 'lstm', '--out', str(out)])['units'] == r['units']
    assert json.loads(out.read_text())['settings'] == bench.QUICK
