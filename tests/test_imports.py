"""The import graph of `fastdropout_nb`: every edge between its modules, at module level and inside functions,
read from the source with `ast`. Data flows one way (methods -> protocols -> experiments -> cli), and the check
helpers of `testing` import the methods, never the reverse: the graph is acyclic, and no method module imports
`testing`, the experiment layer or the data readers."""
import ast
from pathlib import Path

import pytest

import fastdropout_nb

PKG = Path(fastdropout_nb.__file__).parent
MODULES = sorted(p.stem for p in PKG.glob('*.py') if p.stem != '__init__')

METHODS = ('gaussian', 'moments', 'logistic', 'bayes', 'nn', 'propagation', 'uncertainty', 'distill')   # on the user's tensors and nets
PROTOCOLS = ('fastdropout_protocols', 'distillation_protocols')                                           # the papers' experiments
UPPER = ('testing', 'experiments', 'cli') + PROTOCOLS
SUPPORT = ('arrays', 'progress', 'data', 'docs', '_modidx')                                               # below or beside the methods
FORBIDDEN_FOR_METHODS = UPPER + ('data',)                                                                  # methods take tensors, never load data


def module_imports(source, modules=MODULES, package='fastdropout_nb'):
    "Every module of `package` that `source` imports, anywhere in the file (module level or in a function): {name: [line, ...]}."
    found = {}
    def add(name, line):
        if name in modules: found.setdefault(name, []).append(line)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split('.')
                if parts[0] == package and len(parts) > 1: add(parts[1], node.lineno)
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or '').split('.') if node.module else []
            if node.level == 0 and (not parts or parts[0] != package): continue
            if node.level == 0: parts = parts[1:]                    # `from fastdropout_nb.x import ...` -> x
            if node.level > 1: continue                              # above the package
            if parts: add(parts[0], node.lineno)                     # `from .x import ...`, `from fastdropout_nb.x import ...`
            else:
                for a in node.names: add(a.name, node.lineno)        # `from . import x`, `from fastdropout_nb import x`
    return found


def import_graph(pkg=PKG):
    "The package's import graph {module: {imported module: [lines]}} (self-imports left out)."
    graph = {}
    for m in MODULES:
        edges = module_imports((pkg / f'{m}.py').read_text())
        graph[m] = {k: v for k, v in edges.items() if k != m}
    return graph


def find_cycle(graph):
    "A cycle of `graph` as a list of modules [a, b, ..., a], or None if it is acyclic (depth-first search)."
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 'open': return stack[stack.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c: return c
        state[m] = 'done'; stack.pop()
        return None
    for m in sorted(graph):
        if m not in state:
            c = visit(m)
            if c: return c
    return None


GRAPH = import_graph()


def _where(graph, a, b): return f"{a} imports {b} (line {', '.join(map(str, graph[a][b]))} of fastdropout_nb/{a}.py)"


def test_every_module_has_a_room():
    "A new module must be placed: a method, a protocol, an upper layer (testing, experiments, cli) or support."
    assert set(MODULES) <= set(METHODS + UPPER + SUPPORT), f"unplaced modules: {sorted(set(MODULES) - set(METHODS + UPPER + SUPPORT))}"
    assert set(METHODS) <= set(MODULES)


def test_import_graph_is_acyclic():
    cycle = find_cycle(GRAPH)
    assert cycle is None, 'import circle: ' + '; '.join(_where(GRAPH, a, b) for a, b in zip(cycle[:-1], cycle[1:]))


@pytest.mark.parametrize('method', METHODS)
def test_methods_import_no_testing_protocol_or_data(method):
    bad = [_where(GRAPH, method, m) for m in GRAPH[method] if m in FORBIDDEN_FOR_METHODS]
    assert not bad, '; '.join(bad)


def test_testing_imports_the_methods():
    "The direction the rules want: the check helpers use the methods (enumeration of a net's masks, its layers)."
    assert {'gaussian', 'nn', 'distill'} <= set(GRAPH['testing'])


def test_parser_sees_every_form_of_import():
    src = ("import os\nfrom . import moments\nfrom .testing import all_masks\nimport fastdropout_nb.nn as N\n"
           "from fastdropout_nb import distill as D, __version__\nfrom fastdropout_nb.data import load_mnist\n"
           "def f():\n    from fastdropout_nb.experiments import PAPER\n    class C:\n        def g(self):\n"
           "            from .propagation import moments_of\n"
           "from torch.nn import functional\nfrom ..other import x\n")
    got = module_imports(src)
    assert set(got) == {'moments', 'testing', 'nn', 'distill', 'data', 'experiments', 'propagation'}, got
    assert got['experiments'] == [8] and got['propagation'] == [11]      # function- and method-level imports, with their lines


def test_a_planted_circle_is_found():
    "The check can fail: an edge from a method back to `testing` (as `moments` had) closes a circle, and it is reported."
    planted = {m: dict(e) for m, e in GRAPH.items()}
    planted['moments']['testing'] = [0]
    cycle = find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1] and {'moments', 'testing'} <= set(cycle), cycle
    with pytest.raises(AssertionError, match='import circle'):
        c = find_cycle(planted)
        assert c is None, 'import circle: ' + '; '.join(_where(planted, a, b) for a, b in zip(c[:-1], c[1:]))
    assert find_cycle({'a': {'b': [1]}, 'b': {'c': [1]}, 'c': {}}) is None
    assert find_cycle({'a': {'b': [1]}, 'b': {'a': [1]}}) in (['a', 'b', 'a'], ['b', 'a', 'b'])


def test_a_planted_upward_import_is_found(tmp_path):
    "The check can fail: a method module importing a protocol inside a function is caught."
    for m in MODULES: (tmp_path / f'{m}.py').write_text((PKG / f'{m}.py').read_text())
    (tmp_path / 'distill.py').write_text((PKG / 'distill.py').read_text() + "\ndef _late():\n    from .experiments import PAPER\n")
    planted = import_graph(tmp_path)
    assert 'experiments' in planted['distill'] and 'experiments' not in GRAPH['distill']
    assert find_cycle(planted) is not None                   # experiments imports distill: the upward edge closes a circle
