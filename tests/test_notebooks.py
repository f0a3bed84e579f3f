"""Run every notebook in `nbs/` as a test, exactly as `nbdev-test` does.

The notebooks hold the chapter-level tests beside the derivations; `tests/` holds the heavier
sweeps. Running the notebooks from pytest gives one runner and one summary line for both.
Cells flagged with one of nbdev's `tst_flags` (here `slow`: full experiments) are skipped, as
`nbdev-test` skips them; run them with `nbdev-test --flags slow`.
"""
from pathlib import Path

import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    cfg = get_config(ROOT)
    flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    ok, secs = run_notebook(nb, skip_flags=flags, showerr=True, cell_timeout=cfg.cell_timeout)
    assert ok, f"{nb.name} failed (its traceback is printed above)"
