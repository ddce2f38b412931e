"""Where siporch finds the files it ships: templates, playbooks, roles, ansible.cfg.

The top-level ``templates/``, ``playbooks/``, ``roles/`` and ``ansible.cfg`` of the source
tree are the only copy. A wheel carries them inside the package, as ``siporch/_data/``
(``hatch_build.py``, a hatchling build hook); a source tree or an
editable install finds them beside the package. Nothing else in siporch builds these paths.

Ansible needs real directories, so the package must be installed as files (pip and pipx
install it so; a zipped package is refused with a clear message).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from siporch.errors import SiporchError

#: What a data root holds; a directory missing one of them is not a data root.
_MARKERS = ("templates", "playbooks", "roles", "ansible.cfg")


def _package_dir() -> Path:
    root = files("siporch")
    path = Path(str(root))
    if not path.is_dir():
        raise SiporchError(
            f"siporch is installed as {root}, not as files on disk",
            hint="install it with pip or pipx (not zipped)",
        )
    return path


def _is_data_root(path: Path) -> bool:
    return all((path / name).exists() for name in _MARKERS)


@cache
def data_root() -> Path:
    """The directory holding templates/, playbooks/, roles/ and ansible.cfg."""
    package = _package_dir()
    for candidate in (package / "_data", package.parent):
        if _is_data_root(candidate):
            return candidate
    raise SiporchError(
        f"siporch's templates, playbooks and roles are missing (looked in {package / '_data'} "
        f"and {package.parent})",
        hint="reinstall siporch (pipx install siporch) or run it from its source tree",
    )


def templates_dir() -> Path:
    return data_root() / "templates"


def playbooks_dir() -> Path:
    return data_root() / "playbooks"


def roles_dir() -> Path:
    return data_root() / "roles"


def strategy_plugins_dir() -> Path:
    return playbooks_dir() / "strategy_plugins"


def action_plugins_dir() -> Path:
    """The siporch_release role's action plugins."""
    return roles_dir() / "siporch_release" / "action_plugins"


def filter_plugins_dir() -> Path:
    """The filters of the siporch_release role (loaded with the role; also made global)."""
    return roles_dir() / "siporch_release" / "filter_plugins"


def ansible_cfg() -> Path:
    """siporch's default Ansible settings (used only when the user has no ansible.cfg)."""
    return data_root() / "ansible.cfg"


def playbook(name: str) -> Path:
    path = playbooks_dir() / name
    if not path.is_file():
        raise SiporchError(
            f"playbook {path} is missing", hint="reinstall siporch (pipx install siporch)"
        )
    return path
