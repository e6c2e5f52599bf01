"""Housekeeping. No dead code: every top-level function and class of chalicelib/, tools/ and bench/ is used
somewhere (the code, the tests or the benchmarks), and no route or handler takes a ``request``
parameter it never reads. Decorated functions (routes, event handlers) are used by their
decorator; names listed in a module's ``__all__`` are its interface."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("chalicelib", "tools", "bench")
ENTRY_POINTS = {"main"}  # `python -m tools.x` / bench scripts


def python_files(*folders: str) -> list[Path]:
    files = [ROOT / "app.py"]
    for folder in folders:
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if ".venv" not in f.parts]


def trees(*folders: str) -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in python_files(*folders)}


def used_names(modules) -> set[str]:
    names = set()
    for tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[-1])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                names.add(node.value)  # getattr(module, "name"), __all__ entries
    return names


def test_every_top_level_function_and_class_is_used():
    everything = trees(*SCANNED, "tests")
    names = {path: used_names([tree]) for path, tree in everything.items()}
    dead = []
    for path, tree in everything.items():
        if path.relative_to(ROOT).parts[0] not in SCANNED:
            continue
        elsewhere = set().union(*(n for p, n in names.items() if p != path))
        here = [getattr(n, "id", None) or getattr(n, "attr", None) for n in ast.walk(tree)
                if isinstance(n, (ast.Name, ast.Attribute))]
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if node.decorator_list or node.name.startswith("__") or node.name in ENTRY_POINTS:
                continue
            if node.name not in elsewhere and node.name not in here:
                dead.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert dead == []


def test_no_function_takes_a_request_it_never_reads():
    unused = []
    for path, tree in trees(*SCANNED).items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = [a.arg for a in node.args.args + node.args.kwonlyargs]
            if "request" not in params:
                continue
            body_names = {n.id for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
            if "request" not in body_names:
                unused.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert unused == []


def test_every_chalicelib_package_is_a_regular_package():
    """A folder without __init__.py imports as a namespace package: it works until a second
    folder of the same name appears on sys.path (a Lambda layer, a vendored copy)."""
    missing = [str(folder.relative_to(ROOT)) for folder in sorted((ROOT / "chalicelib").rglob("*"))
               if folder.is_dir() and "__pycache__" not in folder.parts
               and any(folder.glob("*.py")) and not (folder / "__init__.py").is_file()]
    assert missing == []


# ---- one naming convention for blueprints ---------------------------------------------------------

BLUEPRINT_NAMES = {"api": "routes", "events": "handlers"}  # HTTP routes; event handlers


def blueprints(tree: ast.Module) -> list[str]:
    """The names a module binds to ``Blueprint(...)`` at its top level."""
    return [target.id for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "Blueprint"
            for target in node.targets if isinstance(target, ast.Name)]


def test_each_blueprint_is_named_for_its_layer_and_app_registers_them_all():
    """``routes`` in api/, ``handlers`` in events/: app.py reads ``gocd.routes``, ``timers.handlers``,
    so a module's blueprint is found without knowing a per-module name."""
    registered = {ast.unparse(node.args[0]) for node in ast.walk(ast.parse((ROOT / "app.py").read_text()))
                  if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "register_blueprint"}
    expected = set()
    for layer, name in BLUEPRINT_NAMES.items():
        for path in sorted((ROOT / "chalicelib" / layer).glob("*.py")):
            found = blueprints(ast.parse(path.read_text()))
            assert found in ([], [name]), f"{path.name} names its blueprint {found}, not {name!r}"
            expected |= {f"{path.stem}.{name}"} if found else set()
    assert len(expected) == 20
    assert registered == expected
