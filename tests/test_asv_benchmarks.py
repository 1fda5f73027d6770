"""Every asv benchmark in asv_bench/benchmarks imports and runs once (a quick stand-in for
``asv check`` plus one sample of ``asv run``, without asv installed).

The benchmark package is imported by path. For every class or function with asv benchmarks
and every parameter combination, ``setup`` runs and then each ``time_``/``timeraw_``/
``peakmem_``/``mem_``/``track_`` benchmark once; ``track_`` must return a finite number. A
``NotImplementedError`` from setup is asv's "skip" and skips here too. The heavy cases
(``HEAVY``: the real cold and warm compiles, 25-50 s each) are skipped unless
``FASTBP_ASV_FULL=1``; without it the compile benchmark runs its machinery with a child that
only imports fastbp (and checks that it is the same fastbp).
"""

import importlib
import importlib.util
import inspect
import itertools
import math
import numbers
import os
import sys
from pathlib import Path

import pytest

import fastbp as fb

BENCH_DIR = Path(__file__).resolve().parents[1] / "asv_bench" / "benchmarks"
PACKAGE = "fastbp_asv_benchmarks"    # not "benchmarks": that name is too likely to clash
PREFIXES = ("time_", "timeraw_", "peakmem_", "mem_", "track_")
FULL = os.environ.get("FASTBP_ASV_FULL") == "1"
# (module, class, params) -> skipped unless FASTBP_ASV_FULL=1
HEAVY = {
    ("bench_compile", "FirstBatch", ("cold",)),
    ("bench_compile", "FirstBatch", ("warm",)),
}
# the cheap child checks that it imports the fastbp under test
CHEAP_CHILD = f"import fastbp\nassert fastbp.__file__ == {fb.__file__!r}, fastbp.__file__\n"


def _import_package():
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, BENCH_DIR / "__init__.py",
                                                      submodule_search_locations=[str(BENCH_DIR)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = pkg
        spec.loader.exec_module(pkg)
    return [importlib.import_module(f"{PACKAGE}.{p.stem}")
            for p in sorted(BENCH_DIR.glob("*.py")) if p.stem != "__init__"]


def _is_bench(name):
    return name.startswith(PREFIXES)


def _grid(owner):
    """asv's params: a list of lists (one per name), or one list for a single parameter."""
    params = getattr(owner, "params", [])
    names = getattr(owner, "param_names", [])
    if not params:
        return [()]
    if not all(isinstance(p, (list, tuple)) for p in params):
        params = [params]
    assert not names or len(names) == len(params), f"{owner.__name__}: param_names do not match params"
    for p in params:
        assert len(p) == len(set(map(repr, p))), f"{owner.__name__}: repeated parameter values"
    return list(itertools.product(*params))


def _cases():
    cases = []
    for mod in _import_package():
        short = mod.__name__.rsplit(".", 1)[1]
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue   # asv, too, collects no name with a leading underscore
            if inspect.isclass(obj):
                methods = sorted(n for n in dir(obj) if _is_bench(n) and callable(getattr(obj, n)))
                if not methods:
                    continue
            elif inspect.isfunction(obj) and _is_bench(name):
                methods = [None]
            else:
                continue
            for combo in _grid(obj):
                marks = [pytest.mark.skip(reason="heavy: set FASTBP_ASV_FULL=1")] \
                    if (short, name, combo) in HEAVY and not FULL else []
                cases.append(pytest.param(mod, obj, methods, combo, marks=marks,
                                          id="-".join([short, name, *map(str, combo)])))
    return cases


CASES = _cases()


def test_benchmarks_were_found():
    owners = {c.values[1].__name__ for c in CASES}
    assert {"Dense", "Activation", "Loss", "OptimizerUpdate", "TrainStep", "Epoch", "Predict",
            "FitMemory", "FitLoss", "FitAccuracy", "FirstBatch", "Dropout", "Norm"} <= owners


@pytest.fixture
def restore_threads():
    before = fb.get_num_threads()
    yield
    fb.set_num_threads(before)


@pytest.fixture
def cheap_compile(monkeypatch, tmp_path):
    """Without FASTBP_ASV_FULL the compile benchmark's child only imports fastbp, and its
    cache folders live in pytest's tmp_path."""
    mod = sys.modules[f"{PACKAGE}.bench_compile"]
    monkeypatch.setattr(mod, "_state", {})
    if not FULL:
        monkeypatch.setattr(mod, "CHILD", CHEAP_CHILD)
        monkeypatch.setattr(mod, "_tmp_root", lambda: str(tmp_path))


@pytest.mark.parametrize("mod, owner, methods, combo", CASES)
def test_benchmark_runs(mod, owner, methods, combo, restore_threads, cheap_compile):
    if methods == [None]:            # a module-level benchmark function
        fns = [owner]
        setup, teardown, cache = getattr(mod, "setup", None), getattr(mod, "teardown", None), None
    else:
        inst = owner()
        fns = [getattr(inst, m) for m in methods]
        setup, teardown = getattr(inst, "setup", None), getattr(inst, "teardown", None)
        cache = inst.setup_cache() if hasattr(inst, "setup_cache") else None
    args = combo if cache is None else (cache, *combo)
    if setup is not None:
        try:
            setup(*args)
        except NotImplementedError as e:
            pytest.skip(f"asv would skip: {e}")
    try:
        for fn in fns:
            value = fn(*args)
            name = fn.__name__
            if name.startswith("track_"):
                assert isinstance(value, numbers.Real) and math.isfinite(value), f"{name} returned {value!r}"
            elif name.startswith("timeraw_"):
                assert isinstance(value, (str, tuple)), f"{name} must return code to run"
    finally:
        if teardown is not None:
            teardown(*args)
