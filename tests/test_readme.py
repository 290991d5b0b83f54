"""The README's copied parts (model table, flag tables) match the code, and its Quickstart
commands are the ones CI runs."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_readme_sections_are_current():
    result = subprocess.run([sys.executable, "docs/update_readme.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
    assert "pip install -r requirements-dev.txt" in readme and "requirements-dev.txt" in ci
