"""The layering of DESIGN.md, enforced: imports only point api/events -> service -> domain, store."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"
AWS_LIBS = {"boto3", "botocore", "pynamodb", "chalice", "moto"}


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against chalicelib)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            names.add(module)
    return names


def files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("path", files("domain"), ids=lambda p: p.name)
def test_domain_is_pure(path):
    for name in imports_of(path):
        root = name.split(".")[0]
        assert root not in AWS_LIBS, f"{path.name} imports {name}"
        assert not name.startswith(("chalicelib.store", "chalicelib.service", "chalicelib.api",
                                    "chalicelib.events")), f"{path.name} imports {name}"


@pytest.mark.parametrize("layer", ["service", "api", "events", "domain"])
def test_only_the_store_talks_to_dynamodb(layer):
    for path in files(layer):
        for name in imports_of(path):
            assert name.split(".")[0] != "pynamodb", f"{path} imports {name}"


@pytest.mark.parametrize("path", files("service"), ids=lambda p: p.name)
def test_service_does_not_import_http_or_events(path):
    for name in imports_of(path):
        assert name.split(".")[0] != "chalice", f"{path.name} imports {name}"
        assert not name.startswith(("chalicelib.api", "chalicelib.events")), f"{path.name} imports {name}"


def test_app_is_only_wiring():
    tree = ast.parse((ROOT / "app.py").read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for function in functions:
        body = [s for s in function.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        assert len(body) <= 2, f"app.py:{function.name} holds logic; move it to chalicelib/"


