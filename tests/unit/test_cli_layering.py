"""The CLI's layering: a command module imports the shared options and the library, never
another command module (each command stays loadable, and movable, on its own)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "siporch" / "cli"
COMMANDS = sorted(CLI.glob("cmd_*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import cmd_x / from .cmd_x import y
                base = "siporch.cli" + (f".{base}" if base else "")
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_there_are_command_modules() -> None:
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.stem)
def test_no_command_module_imports_another(path: Path) -> None:
    others = {f"siporch.cli.{p.stem}" for p in COMMANDS} - {f"siporch.cli.{path.stem}"}
    found = sorted(m for m in _imports(path) if any(m == o or m.startswith(o + ".") for o in others))
    assert not found, f"{path.name} imports {', '.join(found)}: move what they share to siporch/cli/common.py or the library"


def test_the_check_sees_an_import_of_another_command(tmp_path: Path) -> None:
    bad = tmp_path / "cmd_bad.py"
    bad.write_text("def f():\n    from siporch.cli.cmd_deploy import print_result\n")
    assert "siporch.cli.cmd_deploy" in _imports(bad)
    rel = tmp_path / "cmd_rel.py"
    rel.write_text("from .cmd_status import x\n")
    assert "siporch.cli.cmd_status" in _imports(rel)


def test_the_deploy_layer_does_not_print() -> None:
    deploy = CLI.parent / "deploy"
    for path in sorted(deploy.glob("*.py")):
        mods = _imports(path)
        assert not any(m == "rich" or m.startswith("rich.") for m in mods), path.name
        assert not any(m.startswith("siporch.cli") for m in mods), path.name
