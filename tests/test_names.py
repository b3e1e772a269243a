"""Names shared across layers are spelled once, in lora_profiler/names.py; roles are computed once
per trace when a report is built."""

import ast
from pathlib import Path

import pytest

from lora_profiler import names

PACKAGE = Path(__file__).resolve().parents[1] / "lora_profiler"


def _constants(path: Path):
    """String constants and tuples of string constants in code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value
        elif isinstance(node, ast.Tuple) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, tuple(e.value for e in node.elts)


def test_scope_prefix_modes_and_phases_are_spelled_once():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "names.py":
            continue
        for line, value in _constants(path):
            if value == names.SCOPE_PREFIX or value in (names.BASE_MODES, names.PHASES):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}")
            elif isinstance(value, tuple) and set(value) in (set(names.PHASES), set(names.BASE_MODES)):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r} (reordered)")
    assert not found, "import these from lora_profiler.names instead:\n" + "\n".join(found)


def test_roles_are_computed_once_per_trace(tiny_run, tmp_path, monkeypatch):
    import shutil

    from lora_profiler.analyses import attribution, lora_roles
    from lora_profiler.report.build import build_report

    calls = []
    real = lora_roles.assign_roles

    def counting(trace, *args, **kwargs):
        calls.append(id(trace))
        return real(trace, *args, **kwargs)

    monkeypatch.setattr(attribution, "assign_roles", counting)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    report = build_report(run, figures=False)
    traced = [m for m, e in report["modes"].items() if e.get("trace_files")]
    assert len(calls) == len(set(calls)) == len(traced)


@pytest.mark.parametrize("prefix", ["lp/", "xy/"])
def test_scope_names_round_trip(prefix):
    assert names.parse_scope(names.adapter_scope("m.q", "lora_A", prefix), prefix) == ("adapter", "m.q", "lora_A")
    assert names.parse_scope(names.phase_scope("forward", prefix), prefix) == ("phase", "forward", "")
    assert names.parse_scope("other/x", prefix) is None
