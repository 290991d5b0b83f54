"""Regenerate the parts of README.md that are copied from the code (model table, flag tables):
`python docs/update_readme.py` rewrites them, `--check` exits 1 when the README is stale."""
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
        pattern = re.compile(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- /{name} -->)", re.S)
        text = pattern.sub(lambda match: match.group(1) + make() + "\n" + match.group(2), text)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    updated = render(current)
    if args.check:
        if updated != current:
            print("README.md is stale: run python docs/update_readme.py")
            return 1
        return 0
    README.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
