"""siporch's Ansible settings join the user's: the user's ansible.cfg stays in force, and
siporch's roles, strategy and filter plugin directories come first in each search path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from siporch import resources
from siporch.deploy import runner


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("ANSIBLE_"):
            monkeypatch.delenv(key)
    return {"HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "")}


def _paths(env: dict[str, str], key: str) -> list[str]:
    return env[key].split(os.pathsep)


def test_without_a_user_config_the_shipped_one_is_used(clean: dict[str, str], tmp_path: Path) -> None:
    env = runner.ansible_env(clean, cwd=tmp_path)
    assert env["ANSIBLE_CONFIG"] == str(resources.ansible_cfg())
    assert _paths(env, "ANSIBLE_ROLES_PATH")[0] == str(resources.roles_dir())
    assert _paths(env, "ANSIBLE_STRATEGY_PLUGINS")[0] == str(resources.strategy_plugins_dir())
    assert _paths(env, "ANSIBLE_FILTER_PLUGINS")[0] == str(resources.filter_plugins_dir())
    # Ansible's own defaults stay behind siporch's (templated, not "{{ ANSIBLE_HOME ... }}")
    assert str(Path(clean["HOME"]) / ".ansible" / "plugins" / "filter") in _paths(env, "ANSIBLE_FILTER_PLUGINS")
    assert not any("{{" in p for k in runner.PATH_SETTINGS for p in _paths(env, k))


def test_the_users_ansible_cfg_in_the_working_directory_is_kept(
    clean: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\nroles_path = ./my-roles:/opt/roles\nstrategy_plugins = ./strategies\n"
    )
    env = runner.ansible_env(clean, cwd=tmp_path)
    assert "ANSIBLE_CONFIG" not in env  # Ansible finds ./ansible.cfg by itself
    assert _paths(env, "ANSIBLE_ROLES_PATH") == [
        str(resources.roles_dir()), str(tmp_path / "my-roles"), "/opt/roles"
    ]
    assert _paths(env, "ANSIBLE_STRATEGY_PLUGINS") == [
        str(resources.strategy_plugins_dir()), str(tmp_path / "strategies")
    ]


def test_ansible_config_and_the_users_variables_are_kept(
    clean: dict[str, str], tmp_path: Path
) -> None:
    cfg = tmp_path / "elsewhere.cfg"
    cfg.write_text("[defaults]\nroles_path = /from/cfg\n")
    base = {**clean, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_FILTER_PLUGINS": "/my/filters"}
    env = runner.ansible_env(base, cwd=tmp_path)
    assert env["ANSIBLE_CONFIG"] == str(cfg)
    assert _paths(env, "ANSIBLE_ROLES_PATH") == [str(resources.roles_dir()), "/from/cfg"]
    assert _paths(env, "ANSIBLE_FILTER_PLUGINS") == [str(resources.filter_plugins_dir()), "/my/filters"]
    assert "ANSIBLE_FILTER_PLUGINS" not in os.environ  # the caller's environment is untouched


def test_playbooks_and_templates_come_from_one_place() -> None:
    root = resources.data_root()
    assert runner.playbook_path("deploy-trunk.yml") == root / "playbooks" / "deploy-trunk.yml"
    from siporch.render.env import environment

    assert environment().loader.searchpath == [str(root / "templates")]  # type: ignore[union-attr]


def test_a_world_writable_directory_has_no_ansible_cfg(clean: dict[str, str], tmp_path: Path) -> None:
    """As Ansible: ./ansible.cfg in a world-writable directory is not read, so the shipped
    settings apply."""
    (tmp_path / "ansible.cfg").write_text("[defaults]\nroles_path = /nowhere\n")
    tmp_path.chmod(0o777)
    env = runner.ansible_env(clean, cwd=tmp_path)
    assert env["ANSIBLE_CONFIG"] == str(resources.ansible_cfg())
    assert "/nowhere" not in _paths(env, "ANSIBLE_ROLES_PATH")
