"""The package's shape: layers point one way, and SQL on django-pq's tables lives in the
data layer (``django_pq.store``) only.

Both are read from the source with ``ast``, so an import inside a function counts as much
as one at the top (a function-level import is how a cycle hides).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "django_pq"

#: Bottom first. A module may import from its own layer and the ones below it only.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("settings and errors", ("conf", "exceptions", "signals")),
    (
        "timing, codec, protocol, task paths, a task's own view",
        (
            "timing",
            "codec",
            "notify",
            "task_paths",
            "context",
            "retry_policy",
            "flow_limits",
        ),
    ),
    # The data: the ORM's models and the named statements, which use each other's names
    # (a statement returns whole Task rows; Periodic.run_now() runs a statement).
    ("models and data layer", ("models", "store", "waiting")),
    (
        "enqueueing and schedules",
        ("enqueueing", "schedules", "declared", "declared_tasks", "limits", "dependencies"),
    ),
    (
        "worker, admin, backend, commands",
        (
            "worker",
            "admin",
            "backend",
            "management",
            "checks",
            "status",
            "dashboard",
            "metrics",
            "testing",
            "apps",
            "__init__",
        ),
    ),
]

#: Imports that run up a layer, each with the reason it is allowed; an entry goes when
#: its import does.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "migrations":
            continue
        found.append((".".join(relative.with_suffix("").parts), path))
    return found


def _layer_of(module: str) -> tuple[int, str]:
    top = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index, top
    raise AssertionError(
        f"django_pq.{module} belongs to no layer: add its top-level name to LAYERS in "
        f"{Path(__file__).name}."
    )


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """django_pq modules ``path`` imports, relative to the package (``store.worker``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "django_pq":
                # A submodule, or a name the package itself defines (__version__).
                names.update(
                    alias.name if _is_module(alias.name) else "__init__" for alias in node.names
                )
            elif node.module.startswith("django_pq."):
                names.add(node.module.removeprefix("django_pq."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("django_pq."):
                    names.add(alias.name.removeprefix("django_pq."))
    return names


def _upward_imports() -> set[tuple[str, str, str]]:
    upward = set()
    for module, path in _modules():
        level, top = _layer_of(module)
        for imported in _imports(path):
            imported_level, imported_top = _layer_of(imported)
            if imported_level > level:
                upward.add((module, top, imported_top))
    return upward


def test_every_module_has_a_layer() -> None:
    for module, _ in _modules():
        _layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    unexpected = sorted(
        f"django_pq.{module} imports django_pq.{imported} ({LAYERS[_layer_of(imported)[0]][0]})"
        for module, top, imported in _upward_imports()
        if (top, imported) not in KNOWN_UPWARD
    )
    assert not unexpected, (
        "A lower layer imports a higher one (see LAYERS): move the code down, or pass "
        "values in, instead of importing up:\n" + "\n".join(unexpected)
    )


def test_known_upward_imports_still_exist() -> None:
    # An allowance whose import is gone must go too, so the list only ever shrinks.
    present = {(top, imported) for _, top, imported in _upward_imports()}
    assert set(KNOWN_UPWARD) <= present, set(KNOWN_UPWARD) - present


#: SQL that names one of our tables: ``FROM pq_tasks``, ``UPDATE pq_periodic``,
#: ``'pq_tasks'::regclass``... (keywords as we write them, in capitals).
_SQL_ON_OUR_TABLES = re.compile(
    r"\b(FROM|JOIN|INTO|UPDATE|TABLE)\s+pq_(tasks|periodic|workers)\b"
    r"|'pq_(tasks|periodic|workers)'::regclass"
)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


#: Modules whose strings may name the tables, and why.
NOT_OUR_TABLES = {
    # pq 0.9.1's tables share the names (in another schema); its advice names them.
    "management.commands.pq_import_pq": "tells how to move pq's own tables aside",
}


def test_sql_on_django_pq_tables_lives_in_the_data_layer() -> None:
    outside = [
        f"django_pq/{path.relative_to(PACKAGE)}:{line}: {text.strip().splitlines()[0][:70]}"
        for module, path in _modules()
        if module.split(".")[0] != "store" and module not in NOT_OUR_TABLES
        for line, text in _string_literals(path)
        if _SQL_ON_OUR_TABLES.search(text)
    ]
    assert not outside, (
        "SQL against pq_tasks/pq_periodic/pq_workers outside django_pq/store/ (move the "
        "statement there, named and documented):\n" + "\n".join(outside)
    )


@pytest.mark.parametrize(
    "text",
    [
        "SELECT id FROM pq_tasks WHERE status = 'pending'",
        "UPDATE pq_periodic SET active = false",
        "INSERT INTO pq_workers (id) VALUES (%s)",
        "SELECT reltuples FROM pg_class WHERE oid = 'pq_tasks'::regclass",
    ],
)
def test_the_sql_detector_sees_statements(text: str) -> None:
    assert _SQL_ON_OUR_TABLES.search(text)


def _statement_constants(path: Path) -> list[tuple[str, bool]]:
    """Public module-level names holding SQL, and whether a docstring follows each."""
    body = ast.parse(path.read_text(), str(path)).body
    found = []
    for index, node in enumerate(body):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or target.id.startswith("_"):
            continue
        source = ast.get_source_segment(path.read_text(), node.value) or ""
        if not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b|_returning_rows|notifying", source):
            continue
        following = body[index + 1] if index + 1 < len(body) else None
        documented = (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        )
        found.append((target.id, documented))
    return found


def test_every_statement_of_the_data_layer_is_documented() -> None:
    statements = [
        (path.name, name, documented)
        for _, path in _modules()
        if path.parent.name == "store"
        for name, documented in _statement_constants(path)
    ]
    assert len(statements) >= 15, statements  # the finder finds them
    undocumented = [f"{file}: {name}" for file, name, documented in statements if not documented]
    assert not undocumented, (
        "Each statement in django_pq/store/ is followed by a docstring saying what it "
        "guarantees:\n" + "\n".join(undocumented)
    )
