"""The README's and docs' copied parts (model table, flag tables) match the code, their links
resolve, and the README's Quickstart commands are the ones CI runs."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # fenced blocks and inline code hold no links


def test_generated_readme_sections_are_current():
    result = subprocess.run([sys.executable, "docs/update_readme.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
    assert "pip install -r requirements-dev.txt" in readme and "requirements-dev.txt" in ci


def heading_anchors(page):
    """The anchors GitHub gives a Markdown page's headings (lower case, punctuation dropped,
    spaces as hyphens)."""
    text = CODE.sub("", page.read_text(encoding="utf-8"))
    titles = [line.lstrip("#").strip().lower() for line in text.splitlines()
              if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", title).replace(" ", "-") for title in titles}


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(CODE.sub("", page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):  # https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert len(PAGES) > 1 and not broken, broken
