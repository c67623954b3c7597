import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_example_script_runs_and_explains_its_choices():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "run_active_learning.py"), "--pool-size", "120",
         "--test-size", "60", "--image-size", "32", "--rounds", "2", "--query-size", "10",
         "--epochs", "3"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert out.count("dual chose 10 images") == 2
    assert "misalignment" in out and "test accuracy" in out and "Round 2" in out
