"""Test-session setup: 8 fake CPU devices, float32 matmuls at full precision, one compilation cache.

The flags must be set before JAX initialises its backends, which is why this
happens at import time of the conftest (pytest imports it before any test).

Many tests compile the same small programs (the micro configs' train step, in this process and
in the `sslmd` subprocesses they start): one persistent compilation cache for the session,
created by the first process that imports this (pytest's main process, which the xdist workers
and the subprocesses inherit it from) and removed when that process exits, compiles each once.
`JAX_COMPILATION_CACHE_DIR` set beforehand is used as it is and kept.
"""

import atexit
import os
import pathlib
import shutil
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  _flags += " --xla_force_host_platform_device_count=8"
# Tests run a few steps of large graphs: cheaper compilation beats faster code here.
if "xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = _flags.strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="sslmd_jax_tests_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after the flags on purpose)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """`../shared/data` beside the checkout; tests that use it skip when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} is absent")
  return SHARED_DATA


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory) -> pathlib.Path:
  """A tiny Monodepth2 run directory as training leaves it (`test_predict.build_trained_workdir`),
  built once per test process, under pytest's temporary folder (removed with it)."""
  from tests.test_predict import build_trained_workdir
  return build_trained_workdir(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def predictor(trained_workdir):
  """`inference.Predictor` of `trained_workdir`."""
  from sslmd_jax import inference
  return inference.Predictor.from_workdir(trained_workdir)


# The modules whose single tests run longest (2-3 minutes each on 2 cores), run first: pytest-xdist
# hands tests out in collection order, and one of these started last kept one worker busy minutes
# after the other had finished.
_LONGEST_FIRST = ("test_multiprocess.py", "test_notebook.py", "test_experiments.py")


def pytest_collection_modifyitems(items):
  """Moves `_LONGEST_FIRST`'s tests to the front, in that order (the rest keep theirs)."""
  def rank(item):
    name = item.path.name
    return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)
  items.sort(key=rank)  # Stable: each module keeps its own order.


@pytest.fixture
def counting_step(monkeypatch):
  """`train.jit_train_step` replaced by `train_utils.CountingStep`: runs without compiling a step."""
  from sslmd_jax import train
  from tests import train_utils
  monkeypatch.setattr(train, "jit_train_step",
                      lambda step, mesh, state: train_utils.CountingStep())
