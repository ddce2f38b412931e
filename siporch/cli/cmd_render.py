"""siporch render"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import click

from siporch import resources
from siporch.cli.common import (
    console,
    inventory_options,
    json_option,
    load,
    out_dir,
    out_option,
    output_options,
    timeout_option,
)
from siporch.core import Manifest
from siporch.errors import SiporchError
from siporch.lifecycle import trunk_ids_of_hosts
from siporch.release import build_release
from siporch.release import ids_from_hosts as kept_from_hosts


@click.command()
@inventory_options
@output_options
@out_option
@click.option(
    "--ids-from-hosts",
    is_flag=True,
    help="Number the trunks as the hosts run them (read over SSH): a trunk without its "
    "own `id:` keeps the id the hosts' files give it. For a controller without the "
    "releases deployed (a fresh clone); the release records the ids for later renders.",
)
@click.option(
    "--deploy-lock",
    type=click.Path(path_type=Path),
    hidden=True,
    help="Once rendered, take the controller's deploy lock (playbooks/files/deploy_lock.py; "
    "the deploy playbook's render and lock in one command); --json then has its `lock_token`.",
)
@click.option("--lock-wait", type=float, default=900.0, hidden=True)
@timeout_option(5.0)
@json_option("{id, path, reused, changes}")
def cli(
    inventory: tuple[Path, ...],
    vault_password_file: Path | None,
    out: Path | None,
    ids_from_hosts: bool,
    deploy_lock: Path | None,
    lock_wait: float,
    timeout: float,
    as_json: bool,
) -> int:
    """Render every host's configs into a release bundle.

    An unchanged model reuses the release that already holds the same files.
    """
    loaded = load(inventory, vault_password_file)
    if ids_from_hosts:
        ids = trunk_ids_of_hosts(
            inventory, loaded, out_dir=out_dir(out, inventory), timeout=timeout
        )
        with kept_from_hosts(ids):
            loaded = load(inventory, vault_password_file)
            release = build_release(loaded, out)
    else:
        release = build_release(loaded, out)
    manifest = Manifest.from_json(release.manifest)
    token = None if deploy_lock is None else take_deploy_lock(deploy_lock, lock_wait)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": release.id,
                    **({} if token is None else {"lock_token": token}),
                    "path": str(release.path),
                    "reused": release.reused,
                    "model_hash": loaded.model_hash,
                    "hosts": sorted(manifest.hosts),
                    # against the previous release rendered here (not what hosts run:
                    # `siporch diff` and `deploy --check` say that)
                    "changes": list(manifest.changes),
                    "changes_since": manifest.previous,
                }
            )
        )
        return 0
    verb = "unchanged, reusing" if release.reused else "rendered"
    console.print(f"{verb} release {release.id} at {release.path}", soft_wrap=True)
    for host, hm in sorted(manifest.hosts.items()):
        console.print(f"  {host} ({hm.role}): {len(hm.files)} files")
    return 0


def _lock_module() -> ModuleType:
    path = resources.playbooks_dir() / "files" / "deploy_lock.py"
    spec = importlib.util.spec_from_file_location("siporch_deploy_lock", path)
    if spec is None or spec.loader is None:
        raise SiporchError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def take_deploy_lock(lock: Path, wait: float) -> str:
    """The deploy lock for the ansible-playbook this runs under (its token; "" when the
    caller's SIPORCH_DEPLOY_LOCK holds it already), as `deploy_lock.py acquire` takes it."""
    mod = _lock_module()
    try:
        token: str = mod.acquire(
            lock, wait, mod.owner_pid(), os.environ.get("SIPORCH_DEPLOY_LOCK", "")
        )
    except TimeoutError as exc:
        raise SiporchError(str(exc)) from exc
    return token
