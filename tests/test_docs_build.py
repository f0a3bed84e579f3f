"""The docs pipeline processes every notebook (runs everywhere; no browser or MathJax needed).

nbdev's doc processing executes every exported cell and every cell that contains an import (to
render `show_doc`); a cell mixing imports with code that needs other cells breaks `nbdev-docs`,
`fastdropout-nb docs` and `fastdropout-nb readme` alike. `test_docs_browser.py` checks the rendered
pages in Chromium where it is installed; this test keeps the processing itself honest on CI.
"""
import re
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


def test_quarto_sidebar_in_reading_order():
    "The Quarto site's sidebar (`_quarto.yml`) lists every notebook, in the order of the offline docs."
    from fastdropout_nb.docs import doc_notebooks
    listed = re.findall(r'^\s*- (\S+\.ipynb)\s*$', (ROOT / '_quarto.yml').read_text(encoding='utf-8'), re.M)
    assert listed == [p.name for p in doc_notebooks(ROOT / 'nbs')], \
        "update the sidebar contents in _quarto.yml (reading order: index, chapters, experiments, appendices A-D)"
