# Load the project's Hypothesis profiles (`ci` by default, `dev` with HYPOTHESIS_PROFILE=dev).
import gc
import os
import sys

# pytest-xdist (`-n`, pyproject's addopts) runs the tests in several worker processes; each worker, and every
# process a test starts, gets an equal share of the cores for its math libraries instead of all of them.
if 'PYTEST_XDIST_WORKER_COUNT' in os.environ:
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ['PYTEST_XDIST_WORKER_COUNT'])))
    for _v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ.setdefault(_v, _share)

import pytest

import fastdropout_nb.testing  # noqa: F401


def _release_compiled_code():
    """Drop torch.compile's caches and collect the compiled code now, if anything was compiled.

    Compiling a frame stores helper globals (`__builtins_dict___N`, `__compiled_fn_N_...`) in the frame's
    module; a weakref callback (`torch._dynamo.utils.CleanupHook`) deletes each one when its compiled code
    object dies. The names are deterministic, so a compile after `torch._dynamo.reset()` (test_nn's compile
    test, chapter 04's `compile_smoke`, both compiling `fastdropout_nb.nn`) binds the names an earlier compile
    used while that earlier code may still be uncollected; its callback then deletes the newer binding, and the
    newer callback finds nothing to delete: `KeyError: '__builtins_dict___2'`. Left to interpreter exit, that
    KeyError is printed as "Exception ignored" after pytest's summary line. Collected here, after every test
    that compiled, no stale callback survives into the next compile or to exit."""
    dynamo = sys.modules.get('torch._dynamo')
    if dynamo is not None and dynamo.utils.CleanupManager.count > 0:
        dynamo.reset()
        gc.collect()


@pytest.fixture(autouse=True)
def _compiled_code_released_after_each_test():
    yield
    _release_compiled_code()


def pytest_sessionfinish(session, exitstatus):
    _release_compiled_code()
