"""The docs pipeline processes every notebook (runs everywhere; no browser or MathJax needed).

nbdev's doc processing executes every exported cell and every cell that contains an import (to
render `show_doc`); a cell mixing imports with code that needs other cells breaks `nbdev-docs`,
`fastdropout-nb docs` and `fastdropout-nb readme` alike. `test_docs_browser.py` checks the rendered
pages in Chromium where it is installed; this test keeps the processing itself honest on CI.
"""
from pathlib import Path

import pytest

from fastdropout_nb.docs import doc_notebooks, process_nb

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('nb', doc_notebooks(ROOT / 'nbs'), ids=lambda p: p.stem)
def test_notebook_processes_for_docs(nb):
    res = process_nb(nb, ROOT)
    assert res.cells and res.cells[0].cell_type == 'markdown' and res.cells[0].source.startswith('# ')
    src = nb.read_text(encoding='utf-8')
    if '"image/png"' in src:     # stored plots survive the processing
        assert any('image/png' in o.get('data', {}) for c in res.cells if c.cell_type == 'code' for o in c.outputs)
