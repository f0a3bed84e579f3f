"Smoke test of benchmarks/nn_small_tables.py: its --quick mode on one classification and two regression sets."
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'benchmarks' / 'nn_small_tables.py'
DATA = Path(os.environ.get('FASTDROPOUT_NB_DATA') or ROOT.parent / 'shared' / 'data')
NEEDED = [DATA / 'uci' / 'hepatitis' / 'hepatitis.data', DATA / 'uci' / 'liver-disorders' / 'bupa.data',
          DATA / 'uci' / 'cardiotocography' / 'CTG.xls']


def numbers(cell):
    "Every number in a table cell (ignores ± and brackets)."
    return [float(x) for x in re.findall(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|inf', cell)]


@pytest.mark.skipif(not all(p.exists() for p in NEEDED), reason=f'hepatitis/liver/cardio data not found under {DATA}')
def test_quick_tables(tmp_path):
    out = tmp_path / 'nn_small.md'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--data-dir', str(DATA),
                        '--datasets', 'hepatitis', 'liver', 'cardio', '--out', str(out)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    rows = {line.split('|')[1].strip(): line.split('|')[2:-1] for line in text.splitlines()
            if line.startswith('| ') and not line.startswith('| data set')}
    assert set(rows) == {'hepatitis', 'liver', 'cardio'}, rows
    for name, cells in rows.items():
        # cells: split sizes, ours no dropout, ours fast dropout, paper NoDrop, paper F.Dropout, last epoch, chosen
        ours_nodrop, ours_fd = numbers(cells[1]), numbers(cells[2])
        assert ours_nodrop and ours_fd, (name, cells)
        assert all(math.isfinite(v) and v >= 0 for v in ours_nodrop + ours_fd), (name, cells)
        assert numbers(cells[3]) and numbers(cells[4]), f'{name}: paper numbers missing'
    acc = numbers(rows['hepatitis'][1])[0], numbers(rows['hepatitis'][2])[0]
    assert all(0 <= a <= 100 for a in acc) and max(acc) > 60, acc        # better than chance-level nonsense
    mse = numbers(rows['cardio'][1])[0], numbers(rows['cardio'][2])[0]     # target LB, variance about 97 bpm^2
    assert all(0 < e < 40 for e in mse), mse                              # far below predicting the mean
    assert 'Protocol' in text and 'torch' in text and 'Wall time' in text
