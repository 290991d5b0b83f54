"""The code's shape: five commands and the design card's model.py, dataset.py and utils.py at the
root, the library in segnet/ with one folder per job. Imports go one way (down LAYERS, no script
imported, no cycle, none hidden in a function), no module is over MAX_LINES lines nor a function
over MAX_FUNCTION_LINES, tests mirror the package, and old import paths still work and warn."""
import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "segnet"
SCRIPTS = {"train", "evaluate", "predict", "bench", "export"}
DESIGN_CARD = {"model", "dataset", "utils"}  # first-class at the root, no warning
SHIMS = {"inference"}  # old paths the README showed, kept one release with a DeprecationWarning
# What each part of the package may import (besides itself and model.py, the torch-only leaf).
# The order the data flows: runtime and utils at the bottom, then data, then the plan and
# inference beside each other, then training and the report page (which shows inference's
# results); bench's measurements sit on top of them all.
BASE = {"runtime", "utils"}
LAYERS = {"runtime": set(), "utils": {"runtime"}, "data": BASE, "plan": {"data"} | BASE,
          "inference": {"data"} | BASE, "report": {"inference"} | BASE,
          "training": {"plan", "inference", "data"} | BASE,
          "bench": {"training", "plan", "inference", "data"} | BASE}
MAX_LINES = 500  # a module longer than this does more than one job: split it by job
MAX_FUNCTION_LINES = 60  # argparse builders aside (a flag a few lines, one place for all)


def python_files():
    return sorted([*ROOT.glob("*.py"), *PACKAGE.rglob("*.py")])


def module_name(path):
    """segnet/data/pixels/masks.py -> segnet.data.pixels.masks, segnet/__init__.py -> segnet, train.py ->
    train."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in python_files()}


def resolve(node):
    """The project modules an import statement names (`from segnet import utils` names the
    module segnet.utils; `from segnet.data.pixels.masks import decode_mask` names segnet.data.pixels.masks)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level == 0:
        names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES
                 else node.module for alias in node.names]
    else:
        names = ["(relative import)"]
    return {name for name in names if name in MODULES or name.split(".")[0] in MODULES
            or name == "(relative import)"}


def imports(path):
    """(project modules imported at module level, those imported inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            (top if node in tree.body else nested).update(resolve(node))
    return top, nested


def project_graph():
    return {name: imports(path)[0] - {name} for name, path in MODULES.items()}


def part(module):
    """The part of the package a module is in: segnet.data.pixels.masks -> data, segnet.utils -> utils."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def layering_problems(graph):
    """Every import that breaks the package rules, as 'importer -> imported (why)'."""
    problems = []
    for module, targets in sorted(graph.items()):
        if not module.startswith("segnet") or module == "segnet":
            continue  # the root modules and the package's public API sit on top
        for target in sorted(targets):
            if target == "(relative import)":
                problems.append(f"{module}: relative import (absolute only)")
            elif not target.startswith("segnet"):
                if target != "model":
                    problems.append(f"{module} -> {target} (the package imports model.py only)")
            elif target == "segnet":
                problems.append(f"{module} -> segnet (the public API is for users)")
            elif part(target) != part(module) and part(target) not in LAYERS[part(module)]:
                problems.append(f"{module} -> {target} ({part(module)} may import "
                                f"{sorted(LAYERS[part(module)]) or 'nothing'} of the package)")
    return problems


def test_the_root_holds_the_commands_the_design_card_and_the_shims_only():
    assert {path.stem for path in ROOT.glob("*.py")} == SCRIPTS | DESIGN_CARD | SHIMS
    assert len(SCRIPTS | DESIGN_CARD | SHIMS) <= 10


def test_every_part_of_the_package_is_a_layer():
    parts = {path.name for path in PACKAGE.iterdir()
             if path.is_dir() and path.name != "__pycache__"}
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert parts | modules == set(LAYERS)


def test_each_part_says_its_job_and_what_it_may_import():
    for name, allowed in LAYERS.items():
        folder = PACKAGE / name
        path = folder / "__init__.py" if folder.is_dir() else PACKAGE / f"{name}.py"
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring, f"{path.relative_to(ROOT)} has no docstring"
        if path.name == "__init__.py":
            said = docstring.split("Imports:", 1)[1]
            assert {word.strip(",.()").removeprefix("segnet.") for word in said.split()
                    if word.startswith("segnet.")} == allowed, path


def test_imports_go_down_the_layers():
    problems = layering_problems(project_graph())
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


# segnet/data/'s rooms in the order the data flows: reading pixels, finding files, checking a
# dataset, feeding training; a room imports its own and the rooms before it (demo.py: pixels).
DATA_ROOMS = ("pixels", "files", "check", "feed")


def data_room_problems(graph):
    """Every import inside segnet.data that runs back up DATA_ROOMS, as 'importer -> imported'."""
    def room(module):
        pieces = module.split(".")
        return pieces[2] if len(pieces) > 3 and pieces[:2] == ["segnet", "data"] else None
    return sorted(f"{module} -> {target}" for module, targets in graph.items() if room(module)
                  for target in targets if room(target) and DATA_ROOMS.index(room(target))
                  > DATA_ROOMS.index(room(module)))


def test_data_rooms_import_down_their_order():
    assert {path.name for path in (PACKAGE / "data").iterdir() if path.is_dir()
            and path.name != "__pycache__"} == set(DATA_ROOMS)
    assert data_room_problems(project_graph()) == []
    graph = project_graph()
    graph["segnet.data.pixels.masks"] |= {"segnet.data.files.index"}
    assert data_room_problems(graph) == ["segnet.data.pixels.masks -> segnet.data.files.index"]


def test_an_upward_import_is_caught():
    """The rule above fails when a lower part imports a higher one (data -> training), a
    part imports a command, or the package imports a root module other than model.py."""
    graph = project_graph()
    graph["segnet.data.pixels.masks"] = graph["segnet.data.pixels.masks"] | {"segnet.training.engine"}
    graph["segnet.inference.plots"] = graph["segnet.inference.plots"] | {"train", "dataset"}
    assert layering_problems(graph) == [
        "segnet.data.pixels.masks -> segnet.training.engine (data may import ['runtime', 'utils'] "
        "of the package)",
        "segnet.inference.plots -> dataset (the package imports model.py only)",
        "segnet.inference.plots -> train (the package imports model.py only)"]


def test_no_module_imports_a_script():
    offenders = {module: sorted(targets & SCRIPTS) for module, targets in project_graph().items()
                 if targets & SCRIPTS}
    assert not offenders, f"scripts are leaves, but these import them: {offenders}"


def test_model_imports_nothing_of_the_project():
    assert project_graph()["model"] == set()


def test_no_module_is_over_max_lines():
    long = {str(path.relative_to(ROOT)): count for path in python_files()
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_no_function_is_over_max_function_lines():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and "parser" not in node.name
                    and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES):
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (one job each): {long}"


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
    hidden = {name: sorted(imports(path)[1]) for name, path in MODULES.items() if imports(path)[1]}
    assert not hidden, f"project modules imported inside functions: {hidden}"


def test_tests_mirror_the_package():
    folders = {path.name for path in (ROOT / "tests").iterdir()
               if path.is_dir() and any(path.glob("test_*.py"))}
    assert folders <= set(LAYERS), f"test folders without a part of the package: {folders}"
    assert {name for name in LAYERS if (PACKAGE / name).is_dir()} <= folders


def test_test_files_share_helpers_only():
    test_files = sorted((ROOT / "tests").rglob("*.py"))
    test_names = {path.stem for path in test_files if path.stem.startswith("test_")}
    assert len(test_names) == len([p for p in test_files if p.stem.startswith("test_")])
    for path in test_files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        named = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        named |= {node.module for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
        assert not named & test_names, f"{path.name} imports another test file"


def fresh_python(code):
    """Run code in a new interpreter at the root, DeprecationWarnings shown; its stderr."""
    result = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c", code],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_one_import_for_notebooks_and_the_design_card_without_warnings():
    stderr = fresh_python("from segnet import SegNet, SegmentationDataset, load_model, predict\n"
                          "from model import SegNet as root_segnet\n"
                          "from dataset import SegmentationDataset as root_dataset\n"
                          "from utils import load_checkpoint, DataError\n"
                          "assert SegNet is root_segnet and SegmentationDataset is root_dataset\n"
                          "import segnet; assert set(segnet.__all__) == "
                          "{'SegNet', 'SegmentationDataset', 'load_model', 'predict'}")
    assert "Warning" not in stderr, stderr


@pytest.mark.parametrize("statement", ["from inference import load_model, predict",
                                       "from utils import load_model, predict"])
def test_the_notebook_api_the_readme_once_taught_still_imports_and_warns(statement):
    stderr = fresh_python(f"{statement}\nimport segnet\n"
                          "assert load_model is segnet.load_model and predict is segnet.predict")
    assert stderr.count("DeprecationWarning") == 2 and "segnet" in stderr, stderr


def test_moved_names_warn_and_unknown_names_fail():
    import inference
    import utils
    from segnet.inference import measures
    with pytest.warns(DeprecationWarning, match="segnet.inference.measures.confusion_matrix"):
        assert utils.confusion_matrix is measures.confusion_matrix
    with pytest.warns(DeprecationWarning, match="segnet.inference.inference.TILE"):
        assert isinstance(inference.TILE, int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the design card's own names never warn
        assert callable(utils.load_checkpoint)
    with pytest.raises(ImportError):
        from utils import no_such_name  # noqa: F401
    with pytest.raises(AttributeError):
        inference.no_such_name  # noqa: B018


def test_library_modules_leave_the_process_alone():
    """No SystemExit (a notebook kernel would end), no backend switch, no global reseeding:
    library code raises, and only a script's main decides exit codes and process settings."""
    library = sorted(path for path in python_files() if path.stem not in SCRIPTS)
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
