"""Regenerate the parts of the README and docs/*.md that are copied from the code (the model
table in docs/model.md, the flag tables in docs/flags.md): `python docs/update_readme.py`
rewrites them, `--check` exits 1 when a page is stale or a table has no place left."""
import argparse
import contextlib
import importlib
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SCRIPTS = ("train", "evaluate", "predict", "bench", "export")


def model_table():
    import model
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        model.main()
    return f"```\n{output.getvalue().rstrip()}\n```"


def flags_table(script):
    """Markdown table of a script's argparse flags: flag, default, help."""
    parser = importlib.import_module(script).get_args_parser()
    rows = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = ", ".join(f"`{option}`" for option in action.option_strings)
        if action.choices:
            flag += " {" + ",".join(str(choice) for choice in action.choices) + "}"
        default = action.default
        if isinstance(default, (list, tuple)):
            default = " ".join(str(value) for value in default)
        hidden = default is None or default is False or default == argparse.SUPPRESS
        default = "" if hidden else f"`{default}`"
        meaning = " ".join((action.help or "").split())
        for character, escaped in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;")):
            meaning = meaning.replace(character, escaped)
        rows.append(f"| {flag} | {default} | {meaning} |")
    return "\n".join(rows)


def sections():
    generated = {"model-table": model_table}
    for script in SCRIPTS:
        if (ROOT / f"{script}.py").is_file():
            generated[f"flags-{script}"] = lambda script=script: flags_table(script)
    return generated


def render(text):
    for name, make in sections().items():
        if f"<!-- {name} -->" not in text:
            continue  # made only where a page has its place
        pattern = re.compile(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- /{name} -->)", re.S)
        text = pattern.sub(lambda match: match.group(1) + make() + "\n" + match.group(2), text)
    return text


def pages():
    """Every page a generated section may sit in: the README and docs/*.md."""
    return [README, *sorted(DOCS.glob("*.md"))]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a page is stale or a generated section has no markers")
    args = parser.parse_args()
    stale, texts = [], {}
    for page in pages():
        current = page.read_text(encoding="utf-8")
        updated = render(current)
        texts[page] = current
        if updated != current:
            stale.append(page)
            if not args.check:
                page.write_text(updated, encoding="utf-8")
    homeless = [name for name in sections()
                if not any(f"<!-- {name} -->" in text for text in texts.values())]
    if homeless:
        print(f"no page has the markers <!-- NAME --> ... <!-- /NAME --> of {homeless}")
        return 1
    if args.check and stale:
        names = ", ".join(str(page.relative_to(ROOT)) for page in stale)
        print(f"{names} stale: run python docs/update_readme.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
