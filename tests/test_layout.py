"""The code's shape: scripts on top, library modules below, utils.py, runtime.py and model.py at
the bottom. Imports go one way (no script is imported, no cycle, none hidden in a function), no
module is over MAX_LINES lines, and test files share helpers through tests/helpers.py only."""
import ast
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {"train", "evaluate", "predict", "bench", "export"}
# The bottom: model.py imports nothing of the project, runtime.py only model.py, utils.py only
# those two (it re-exports runtime's names that moved out of it).
BOTTOM = {"model": set(), "runtime": {"model"}, "utils": {"model", "runtime"}}
MAX_LINES = 500  # a module longer than this does more than one job: split it by job
# Imports a function may make: optional or heavy dependencies, never a project module.
PROJECT = {path.stem for path in ROOT.glob("*.py")}


def imports(path):
    """(modules imported at module level, modules imported inside functions) of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = {node.module.split(".")[0]}
        else:
            continue
        (top if node in tree.body else nested).update(names)
    return top, nested


def project_graph():
    return {path.stem: imports(path)[0] & PROJECT for path in ROOT.glob("*.py")}


def test_the_modules_are_the_ones_the_readme_code_map_names():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code_map = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    assert {f"`{name}.py`" for name in PROJECT} <= {word.strip(",") for word in code_map.split()
                                                     if word.startswith("`")}


def test_no_module_imports_a_script():
    offenders = {module: sorted(targets & SCRIPTS) for module, targets in project_graph().items()
                 if targets & SCRIPTS}
    assert not offenders, f"scripts are leaves, but these import them: {offenders}"


def test_utils_and_model_import_nothing_above_them():
    graph = project_graph()
    assert graph["model"] == set()
    assert graph["utils"] <= BOTTOM["utils"]
    assert graph["runtime"] <= BOTTOM["runtime"]


def test_no_module_is_over_max_lines():
    long = {path.name: count for path in ROOT.glob("*.py")
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_imports_have_no_cycle():
    graph = project_graph()
    state = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(trail + [module])}"
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_no_project_import_hides_in_a_function():
    hidden = {path.name: sorted(imports(path)[1] & PROJECT) for path in ROOT.glob("*.py")
              if imports(path)[1] & PROJECT}
    assert not hidden, f"project modules imported inside functions: {hidden}"


def test_test_files_share_helpers_only():
    test_names = {path.stem for path in (ROOT / "tests").glob("test_*.py")}
    for path in (ROOT / "tests").glob("*.py"):
        top, nested = imports(path)
        assert not (top | nested) & test_names, f"{path.name} imports another test file"


def test_the_notebook_api_the_readme_once_taught_still_imports():
    import inference
    with pytest.warns(DeprecationWarning, match="inference.load_model"):
        from utils import load_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from utils import predict
    assert load_model is inference.load_model and predict is inference.predict
    with pytest.raises(ImportError):
        from utils import no_such_name  # noqa: F401


def test_library_modules_leave_the_process_alone():
    """No SystemExit (a notebook kernel would end), no backend switch, no global reseeding:
    library code raises, and only a script's main decides exit codes and process settings."""
    library = sorted(path for path in ROOT.glob("*.py") if path.stem not in SCRIPTS)
    for path in library:
        text = path.read_text(encoding="utf-8")
        body = text.split('if __name__ == "__main__":')[0]  # a module's own CLI may exit
        for forbidden in ("SystemExit", "sys.exit(", "matplotlib.use(", "import matplotlib.pyplot",
                          "from matplotlib import pyplot"):
            assert forbidden not in body, f"{path.name} uses {forbidden}"
        lines = text.splitlines()
        global_seeds = [line.strip() for number, line in enumerate(lines)
                        if "torch.manual_seed(" in line
                        and not any("fork_rng" in before for before in lines[number - 3:number])]
        assert path.stem == "runtime" or not global_seeds, f"{path.name} reseeds: {global_seeds}"
