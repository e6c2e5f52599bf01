"""The layering of DESIGN.md, enforced: imports only point api/events -> service -> domain, and
store -> service.ports (the store implements the ports the services use).

- domain imports nothing of ours but domain;
- service imports domain, integrations and service (its ports) only, plus the settings and
  logging setup;
  never store, api, events, adapters or the wiring;
- api imports domain, service (its ports included), the wiring and api only, never store or
  adapters; its wire modules (``*_wire.py``, ``aksk.py``, ``credentials.py``: other systems'
  formats) are pure: domain and each other only, no chalice, so their tests stay in tests/unit;
- events import service and domain (and their own helpers, adapters, the wiring), never store;
- store imports domain, ``service.ports``, the settings and itself only;
- integrations (one module per outside system's wire format) import domain and themselves
  only (plus the settings and logging setup); the domain never imports them;
- adapters never import store;
- outside store/, only the wiring imports a store module, and only the assemblies
  (``store.dynamo``, ``store.memory``): every other caller gets the stores as ports on its
  ``ServiceContext``;
- no import cycles among our modules, function-level imports included;
- an import of our own modules inside a function is there for the cold start (a Lambda that
  never needs a client or a store does not load it) and says so in ``DEFERRED_IMPORTS``; it
  never hides a cycle.
Every import counts, wherever it is written (a function-level import is still an import)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"
AWS_LIBS = {"boto3", "botocore", "pynamodb", "chalice", "moto"}


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against chalicelib); for
    ``from X import y`` both ``X`` and ``X.y`` (y may be a module)."""
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
            names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
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


@pytest.mark.parametrize("path", files("integrations"), ids=lambda p: p.name)
def test_integrations_need_no_aws_library(path):
    """A wire format is parsed and checked in plain Python: no boto3, PynamoDB or Chalice."""
    assert {name.split(".")[0] for name in imports_of(path)} & AWS_LIBS == set()


@pytest.mark.parametrize("layer", ["service", "api", "events", "domain", "integrations"])
def test_only_the_store_talks_to_dynamodb(layer):
    for path in files(layer):
        for name in imports_of(path):
            assert name.split(".")[0] != "pynamodb", f"{path} imports {name}"


@pytest.mark.parametrize("path", files("service"), ids=lambda p: p.name)
def test_service_does_not_import_http_or_events(path):
    for name in imports_of(path):
        assert name.split(".")[0] != "chalice", f"{path.name} imports {name}"
        assert not name.startswith(("chalicelib.api", "chalicelib.events")), f"{path.name} imports {name}"


OURS = "chalicelib"
SHARED = ("chalicelib.settings", "chalicelib.logging_setup")  # configuration every layer may read
RULES = {
    # layer: prefixes of our modules it may import (besides the shared ones)
    "domain": ("chalicelib.domain",),
    "service": ("chalicelib.domain", "chalicelib.integrations", "chalicelib.service"),
    "store": ("chalicelib.domain", "chalicelib.service.ports", "chalicelib.store"),
    "api": ("chalicelib.domain", "chalicelib.integrations", "chalicelib.service", "chalicelib.wiring",
            "chalicelib.api"),
    "integrations": ("chalicelib.domain", "chalicelib.integrations"),
}
FORBIDDEN = {
    # layer: prefixes of our modules it must never import
    "api": ("chalicelib.store", "chalicelib.adapters"),
    "events": ("chalicelib.store",),
    "adapters": ("chalicelib.store", "chalicelib.api", "chalicelib.events"),
}


def _ours(names: set[str]) -> set[str]:
    """Our modules among ``names``; the bare package (``from .. import x`` yields it) is not one."""
    return {n for n in names if n.startswith(OURS + ".")}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_violations(layer: str, path: Path, names: set[str]) -> list[str]:
    wrong = []
    for name in sorted(_ours(names)):
        if _within(name, SHARED):
            continue
        if layer in RULES and not _within(name, RULES[layer]):
            wrong.append(name)
        if layer in FORBIDDEN and _within(name, FORBIDDEN[layer]):
            wrong.append(name)
    return [f"{path.relative_to(ROOT)} imports {name}" for name in wrong]


@pytest.mark.parametrize("layer", sorted({*RULES, *FORBIDDEN}))
def test_each_layer_imports_only_its_neighbours(layer):
    wrong = [v for path in files(layer) for v in layer_violations(layer, path, imports_of(path))]
    assert wrong == []


@pytest.mark.parametrize("layer, name, allowed", [
    ("domain", "chalicelib.service.ports", False),
    ("domain", "chalicelib.integrations.github", False),
    ("integrations", "chalicelib.domain.events", True),
    ("integrations", "chalicelib.service.ingest", False),
    ("integrations", "chalicelib.store.stream", False),
    ("integrations", "chalicelib.api", False),
    ("service", "chalicelib.integrations.cdevents", True),
    ("service", "chalicelib.store.tokens", False),
    ("service", "chalicelib.adapters.secretbox", False),
    ("service", "chalicelib.wiring", False),
    ("service", "chalicelib.service.ports", True),
    ("service", "chalicelib.settings", True),
    ("store", "chalicelib.service.runs", False),
    ("store", "chalicelib.service.ports", True),
    ("store", "chalicelib.api", False),
    ("api", "chalicelib.store.idempotency", False),
    ("api", "chalicelib.service.ports", True),
    ("api", "chalicelib.service.tokens", True),
    ("api", "chalicelib.wiring", True),
    ("api", "chalicelib.adapters.secretbox", False),
    ("api", "chalicelib.events.inbound", False),
    ("events", "chalicelib.store.active", False),
    ("adapters", "chalicelib.store.active", False),
    ("adapters", "chalicelib.service.ports", True),
])
def test_the_rules_catch_a_violation(layer, name, allowed):
    """The checker itself: each rule refuses what it must (a rule that accepts anything passes
    the test above too)."""
    path = PACKAGE / layer / "probe.py"
    assert (layer_violations(layer, path, {name}) == []) == allowed


# ---- the wire modules: other systems' formats, pure -------------------------------------------

def is_wire(path: Path) -> bool:
    return path.parent.name == "api" and (path.name.endswith("_wire.py") or path.name in WIRE_MODULES)


WIRE_MODULES = {"aksk.py", "credentials.py"}  # Huawei's signature, the Authorization schemes
WIRE_MAY_IMPORT = ("chalicelib.domain",)


def wire_violations(path: Path, names: set[str]) -> list[str]:
    """A wire module imports no web framework or AWS library, and of ours only the domain and
    the other wire modules."""
    wrong = [n for n in sorted(names) if n.split(".")[0] in AWS_LIBS]
    for name in sorted(_ours(names) - {"chalicelib.api"}):  # the package itself: a docstring
        module = name.split(".")[:3]
        sibling = len(module) == 3 and module[1] == "api" and is_wire(PACKAGE / "api" / f"{module[2]}.py")
        if not (_within(name, WIRE_MAY_IMPORT) or sibling):
            wrong.append(name)
    return [f"{path.relative_to(ROOT)} imports {name}" for name in wrong]


def test_the_wire_modules_are_there():
    assert {p.name for p in files("api") if is_wire(p)} >= {
        "gocd_wire.py", "codearts_wire.py", "buddy_wire.py", "aksk.py", "credentials.py"}


@pytest.mark.parametrize("path", [p for p in files("api") if is_wire(p)], ids=lambda p: p.name)
def test_wire_modules_are_pure(path):
    assert wire_violations(path, imports_of(path)) == []


@pytest.mark.parametrize("name, allowed", [
    ("chalice", False),
    ("chalice.Response", False),
    ("boto3", False),
    ("chalicelib.api.routing", False),
    ("chalicelib.api.security", False),
    ("chalicelib.service.tokens", False),
    ("chalicelib.wiring", False),
    ("chalicelib.domain.auth", True),
    ("chalicelib.api.aksk", True),
    ("chalicelib.api.aksk.SignedRequest", True),
])
def test_the_wire_rule_catches_a_violation(name, allowed):
    assert (wire_violations(PACKAGE / "api" / "probe_wire.py", {name}) == []) == allowed


ASSEMBLERS = {"chalicelib.wiring": ("chalicelib.store.dynamo", "chalicelib.store.memory")}


def store_reach(module: str, names: set[str]) -> list[str]:
    """The store modules ``module`` (outside store/) imports that it may not."""
    allowed = ASSEMBLERS.get(module, ())
    return sorted(n for n in _ours(names) if _within(n, ("chalicelib.store",))
                  and n != "chalicelib.store" and not _within(n, allowed))


def test_only_the_wiring_reaches_the_store_and_only_its_assemblies():
    wrong = [f"{_module_name(p)} imports {n}" for p in PACKAGE.rglob("*.py")
             if not _within(_module_name(p), ("chalicelib.store",))
             for n in store_reach(_module_name(p), imports_of(p))]
    assert wrong == []


@pytest.mark.parametrize("module, name, allowed", [
    ("chalicelib.wiring", "chalicelib.store.dynamo", True),
    ("chalicelib.wiring", "chalicelib.store.memory.build_stores", True),
    ("chalicelib.wiring", "chalicelib.store.tokens", False),
    ("chalicelib.integrations.github", "chalicelib.store.stream", False),
    ("chalicelib.commands", "chalicelib.store.dynamo", False),
])
def test_the_store_reach_rule_catches_a_violation(module, name, allowed):
    assert (store_reach(module, {name}) == []) == allowed


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _ours(imports_of(path)):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != OURS:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles_hidden_in_function_level_imports():
    assert [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES] == []


# ---- imports inside functions --------------------------------------------------------------
# app.py imports every handler module in every Lambda (the API's as well as the stream's), so a
# handler module imports what only its handler needs when that handler runs. Nothing else is
# imported inside a function: such an import would only hide a cycle from the reader.
_LAMBDA_COLD_START = "keeps the API Lambda's cold start free of what only this handler needs"
DEFERRED_IMPORTS = {
    # (module, module it imports inside a function): why
    ("chalicelib.adapters.eventbridge", "chalicelib.adapters.aws"): "botocore loads on the first publish",
    ("chalicelib.adapters.sqs", "chalicelib.adapters.aws"): "botocore loads on the first send",
    ("chalicelib.adapters.lambdas", "chalicelib.adapters.aws"): "botocore loads on the first rebuild asked",
    ("chalicelib.events.rebuilds", "chalicelib.service.insights"): _LAMBDA_COLD_START,
    ("chalicelib.events.inbound", "chalicelib.adapters.clients"): "botocore only when a message dead-letters",
    ("chalicelib.events.inbound", "chalicelib.service.ingest"): _LAMBDA_COLD_START,
    ("chalicelib.events.inbound", "chalicelib.events.messages"): _LAMBDA_COLD_START + " (queue models)",
    ("chalicelib.events.outbound", "chalicelib.adapters.clients"): _LAMBDA_COLD_START + " (botocore)",
    ("chalicelib.events.outbound", "chalicelib.service.outbox"): _LAMBDA_COLD_START,
    ("chalicelib.events.outbound", "chalicelib.service.insights"): _LAMBDA_COLD_START,
    ("chalicelib.events.outbound", "chalicelib.service.overruns"): _LAMBDA_COLD_START,
    ("chalicelib.events.insights_export", "chalicelib.adapters.otlp"): _LAMBDA_COLD_START + " (the exporter)",
    ("chalicelib.events.insights_export", "chalicelib.service.insights_export"): _LAMBDA_COLD_START,
    ("chalicelib.events.outbound", "chalicelib.adapters.local"): "chalice local only, never in Lambda",
    ("chalicelib.events.outbound", "chalicelib.ticker"): "chalice local only, never in Lambda",
    ("chalicelib.events.timers", "chalicelib.adapters.stepfunctions"): _LAMBDA_COLD_START + " (botocore)",
    ("chalicelib.events.timers", "chalicelib.service.timers"): _LAMBDA_COLD_START,
    ("chalicelib.events.outbound", "chalicelib.service.retention"): _LAMBDA_COLD_START,
    ("chalicelib.events.timers", "chalicelib.service.schedules"): _LAMBDA_COLD_START,
    ("chalicelib.events.wakeups", "chalicelib.service.schedules"): _LAMBDA_COLD_START,
    ("chalicelib.adapters.scheduler", "chalicelib.adapters.aws"): "botocore on the first schedule change",
    ("chalicelib.wiring", "chalicelib.adapters.scheduler"): "only a stack with a schedule group has wake-ups",
    ("chalicelib.wiring", "chalicelib.adapters.metrics"): "only a stack with a metrics namespace writes them",
    ("chalicelib.wiring", "chalicelib.adapters.lambdas"): "only a rebuild asked for starts one",
    ("chalicelib.wiring", "chalicelib.service.insights"): "only a rebuild asked for runs one (`make run`)",
    ("chalicelib.wiring", "chalicelib.adapters.secretbox"): "the cipher loads only to seal or open",
    ("chalicelib.wiring", "chalicelib.adapters.secrets"): "botocore loads only where secrets are named",
    ("chalicelib.wiring", "chalicelib.store.dynamo"): "PynamoDB loads only where the stores are DynamoDB",
    ("chalicelib.wiring", "chalicelib.store.memory"): "the in-memory stores never load in Lambda",
}
# Function-level imports that hide a cycle (KNOWN_CYCLES); each goes with its cycle.
HIDING_KNOWN_CYCLES: set[tuple[str, str]] = set()


def function_level_imports(path: Path, source: str | None = None) -> set[str]:
    """Our modules ``path`` imports inside a function: for ``from X import y``, X.y where y is a
    module, else X."""
    tree = ast.parse(path.read_text() if source is None else source)
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                prefix = ".".join(p for p in (base, node.module or "") if p)
                names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix
                         for a in node.names]
            else:
                continue
            for name in names:
                while name not in modules and "." in name:
                    name = name.rpartition(".")[0]
                if name in modules and name != OURS:
                    found.add(name)
    return found


def deferred_imports() -> set[tuple[str, str]]:
    return {(_module_name(path), name) for path in PACKAGE.rglob("*.py")
            for name in function_level_imports(path) if name != _module_name(path)}


def test_imports_inside_functions_are_only_for_the_cold_start():
    found = deferred_imports()
    assert found - set(DEFERRED_IMPORTS) - HIDING_KNOWN_CYCLES == set()
    stale = (set(DEFERRED_IMPORTS) | HIDING_KNOWN_CYCLES) - found
    assert stale == set(), "these imports are no longer inside a function: drop them from the list"


def test_a_cycle_hidden_inside_a_function_goes_with_its_cycle():
    for pair in HIDING_KNOWN_CYCLES:
        assert any(set(pair) <= set(cycle) for cycle in KNOWN_CYCLES), pair


def test_the_function_level_scan_finds_one():
    source = ("from . import routing\n\n\ndef view():\n    from ..service import tokens\n"
              "    from ..domain.auth import Principal\n    import chalicelib.wiring\n    import json\n")
    assert function_level_imports(PACKAGE / "api" / "probe.py", source) == {
        "chalicelib.service.tokens", "chalicelib.domain.auth", "chalicelib.wiring"}


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_app_is_only_wiring():
    tree = ast.parse((ROOT / "app.py").read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for function in functions:
        body = [
            s for s in function.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        ]
        assert len(body) <= 2, f"app.py:{function.name} holds logic; move it to chalicelib/"


