"""dvc.yaml lists, for each stage, exactly the library modules its script imports (directly or not), and
passes each stage exactly the paths it declares."""

import ast
import re
from pathlib import Path

import pytest
from conftest import DVC_YAML, PATHS, ROOT

LIBRARY = ROOT / "src" / "alexnet_mnist"
STAGES = DVC_YAML["stages"]


def library_imports(path: Path) -> set[str]:
    """Names of the alexnet_mnist modules that the file at `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:  # from .x import y / from . import x
                found.update([module.split(".")[0]] if module else [a.name for a in node.names])
            elif module == "alexnet_mnist":
                found.update(a.name for a in node.names)
            elif module.startswith("alexnet_mnist."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("alexnet_mnist."))
    return {name for name in found if (LIBRARY / f"{name}.py").exists()}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_the_code_it_runs(stage):
    needed, todo = {"__init__"}, library_imports(ROOT / "stages" / f"{stage}.py")
    while todo:
        module = todo.pop()
        if module not in needed:
            needed.add(module)
            todo |= library_imports(LIBRARY / f"{module}.py")
    deps = STAGES[stage]["deps"]
    assert f"stages/{stage}.py" in deps
    listed = {Path(d).stem for d in deps if d.startswith("src/")}
    assert listed == needed, f"missing {sorted(needed - listed)}, extra {sorted(listed - needed)}"


def names_in(text: str) -> set[str]:
    return set(re.findall(r"\$\{paths\.(\w+)\}", text))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_command_passes_exactly_the_paths_the_stage_declares(stage):
    """Each data dep and output reaches the script as an argument, and the script gets no undeclared
    path but the train stage's checkpoint, which is deliberately not an output (see dvc.yaml)."""
    declared = set()
    outputs = [entry for key in ("outs", "metrics", "plots") for entry in STAGES[stage].get(key, [])]
    for entry in STAGES[stage]["deps"] + outputs:
        declared |= names_in(entry if isinstance(entry, str) else next(iter(entry)))
    assert names_in(STAGES[stage]["cmd"]) - declared <= {"checkpoint"}
    assert declared <= names_in(STAGES[stage]["cmd"])


def test_every_named_path_is_used():
    used = names_in((ROOT / "dvc.yaml").read_text().split("stages:", 1)[1])
    assert used == set(PATHS)
