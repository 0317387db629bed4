"""The code passes ruff (with the async rules) and mypy in strict mode: part of the test suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_check() -> None:
    """ruff finds nothing (rules in pyproject.toml, ASYNC among them)."""
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    """The code is formatted as ruff formats it."""
    result = _run("ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    """mypy --strict finds nothing in the agent, the cloud stub, the benchmarks and the tests."""
    result = _run("mypy", "--no-incremental")
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(package: str) -> set[tuple[str, str]]:
    """(module, what it imports) for every import statement in ``package``."""
    import ast

    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
                found.add((str(path.relative_to(ROOT)), node.module))
            elif isinstance(node, ast.Import):
                found.update((str(path.relative_to(ROOT)), alias.name) for alias in node.names)
    return found


def test_the_import_contracts_hold() -> None:
    """import-linter's contracts (pyproject.toml): protocol/ imports nothing else of ours; cloud_stub/ never
    the device; the cloud's layers import downwards only (adapters → operations → aggregates → storage);
    only the aggregates and storage import a database driver or SQLAlchemy."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout, result.stdout


def test_no_test_module_imports_another() -> None:
    """Helpers live in tests/support/; a test module (or conftest) is never imported by another."""
    borrowed = [
        (module, imported)
        for module, imported in _imports("tests")
        if imported.startswith(("tests.test_", "tests.conftest"))
    ]
    assert not borrowed, borrowed


def test_the_agent_is_grouped_by_what_it_is() -> None:
    """The top of agent/ holds the composition root and what every part shares; the rest is in
    subpackages (docs/architecture.md)."""
    top = sorted(p.name for p in (ROOT / "agent").glob("*.py"))
    assert top == [
        "__init__.py", "__main__.py", "cli.py", "clock.py", "config.py", "core_config.py", "daemon.py", "device.py",
        "errors.py", "ports.py",
    ]  # fmt: skip
