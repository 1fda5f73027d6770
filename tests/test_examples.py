"""The example scripts run end to end: each once with --quick, in its own process, writing into
a temporary folder; where matplotlib is installed each leaves a PNG there."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(script, *args, cwd):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("script, png, says", [
    ("digits.py", "digits.png", "validation accuracy"),
    ("regression.py", "regression.png", "test R²"),
    ("spirals.py", "spirals.png", "test acc"),
    # the harness's tiny mode with fastbp alone: torch and sklearn would add seconds of imports
    ("compare.py --peers fastbp", "compare.png", "summary (training samples/s"),
    ("gradient_health.py", "gradient_health.png", "first-layer / last-layer gradient norm"),
], ids=["digits", "regression", "spirals", "compare", "gradient_health"])
def test_example_runs_and_plots(tmp_path, script, png, says):
    script, *extra = script.split()
    out = run(script, "--quick", "--out", str(tmp_path / "plots"), *extra, cwd=tmp_path)
    assert says in out
    path = tmp_path / "plots" / png
    if HAVE_MPL:
        assert f"plot: {path}" in out
        data = path.read_bytes()
        assert len(data) > len(PNG_SIGNATURE) and data[:8] == PNG_SIGNATURE
    else:
        assert "matplotlib is not installed" in out and not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots"]   # nothing written beside it


def test_quickstart(tmp_path):
    out = run("quickstart.py", cwd=tmp_path)
    assert "test:" in out and "accuracy" in out
    assert (tmp_path / "quickstart_model.npz").stat().st_size > 0
