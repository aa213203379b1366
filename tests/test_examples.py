"""Every script in examples/ (hat_mlp, dct_digits, gmp_cnn_digits, ...) runs in its quick mode
and prints a sensible test accuracy for both of the models it compares."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted(p for p in (Path(__file__).parent.parent / "examples").glob("*.py")
                  if not p.name.startswith("_"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_in_quick_mode(script):
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True,
                            text=True, timeout=600, cwd=script.parent)
    assert result.returncode == 0, result.stderr
    accuracies = [float(a) for a in re.findall(r"test accuracy (\d\.\d+)", result.stdout)]
    # Each example compares a fastact model with its plain PyTorch counterpart.
    assert len(accuracies) == 2, result.stdout
    # Ten classes: chance is 0.1; even a couple of epochs learn far more than that.
    assert all(a > 0.5 for a in accuracies), result.stdout
