"""Kill `fastdropout-nb reproduce` mid-run, rerun it: finished cells are reused, never recomputed,
no result file is corrupt, and the final table is the one an uninterrupted run writes.

The run is a real subprocess killed with SIGKILL (no chance to clean up) as soon as its first
table cell is on disk; the core table (every closed form against its ground truth) is the table
that exists in every install.
"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

CMD = [sys.executable, '-c', 'import sys; from fastdropout_nb.cli import main; sys.exit(main())',
       'reproduce', 'core', '--seed', '0']
pytestmark = pytest.mark.skipif(os.name != 'posix', reason="uses POSIX signals")


def _run(out, **kw):
    return subprocess.run(CMD + ['--out', str(out)], capture_output=True, text=True, timeout=600, **kw)


def _cells(out):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((out / 'core-quick').glob('*.json'))}


def test_killed_run_resumes_without_recomputing(tmp_path):
    from fastdropout_nb.experiments import core_cell_fns
    n_cells = len(core_cell_fns(quick=True))                                # one per registry entry, plus two
    interrupted, clean = tmp_path / 'interrupted', tmp_path / 'clean'
    proc = subprocess.Popen(CMD + ['--out', str(interrupted)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_cells(interrupted) if (interrupted / 'core-quick').exists() else {}) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL); proc.wait()

    before = _cells(interrupted)
    assert 2 <= len(before) < n_cells, f"killed after {len(before)} of {n_cells} cells"
    for name, (_, data) in before.items(): json.loads(data)                 # nothing half-written
    assert not (interrupted / 'core.md').exists()                           # the table is written last

    r = _run(interrupted)
    assert r.returncode == 0, r.stderr[-3000:]
    after = _cells(interrupted)
    assert len(after) == n_cells
    for name, stamp in before.items(): assert after[name] == stamp, f"{name} was recomputed"

    r2 = _run(clean)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (interrupted / 'core.md').read_text() == (clean / 'core.md').read_text()
    strip = lambda cells: {k: json.loads(v[1]) for k, v in cells.items()}
    assert strip(after) == strip(_cells(clean))
