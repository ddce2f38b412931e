"""siporch diff"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from siporch.cli.common import console, inventory_options, load, out_dir, out_option
from siporch.plan import changed_files, file_diff, reload_actions, semantic_diff
from siporch.release import (
    deployed_release,
    host_manifest,
    inventory_key,
    list_releases,
    load_release,
    read_release_files,
    sanitized_model,
)
from siporch.render import render_release, secret_files


@click.command()
@inventory_options
@click.option("--against", metavar="RELEASE", help="Compare with this release id.")
@out_option
@click.option("--stat", is_flag=True, help="Summary and file list only, no file diff.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def cli(
    inventory: Path,
    vault_password_file: Path | None,
    against: str | None,
    out: Path | None,
    stat: bool,
    as_json: bool,
) -> int:
    """What a deploy would change, before anything is touched.

    Compares the model with the release last deployed from this inventory (or --against,
    or the newest release rendered from it). Exit 0: nothing would change; 1: something
    would; 2: error.
    """
    out = out_dir(out, inventory)
    loaded = load(inventory, vault_password_file)
    model = loaded.model
    base_id = against or deployed_release(inventory, out)
    if base_id is None:
        mine = [m for m in list_releases(out) if m.get("inventory") == inventory_key(inventory)]
        base_id = mine[-1]["id"] if mine else None
    base_manifest = load_release(base_id, out) if base_id else None
    base_files = read_release_files(base_id, out) if base_id else {}
    old_model = None
    if base_id:
        try:
            old_model = json.loads((out / base_id / "model.json").read_text())
        except (OSError, json.JSONDecodeError):
            old_model = None
    summary = semantic_diff(old_model, sanitized_model(model))
    new_files = render_release(model)
    hosts: dict[str, dict[str, object]] = {}
    for host in sorted(set(new_files) | set(base_files)):
        old_hm = (base_manifest or {}).get("hosts", {}).get(host)
        if host not in new_files:
            hosts[host] = {"removed": True, "files": {}, "reloads": []}
            continue
        new_hm = host_manifest(model, host, new_files[host], "candidate", loaded.model_hash)
        files = changed_files(old_hm["files"] if old_hm else None, new_hm["files"])
        hosts[host] = {
            "files": files,
            "reloads": reload_actions(old_hm, new_hm) if files else [],
            "new_host": old_hm is None,
        }
    changed = bool(summary) or any(h["files"] or h.get("removed") for h in hosts.values())
    if as_json:
        click.echo(
            json.dumps(
                {"against": base_id, "changed": changed, "summary": summary, "hosts": hosts},
                indent=2,
            )
        )
        return 1 if changed else 0
    p = console.print
    p(f"comparing with {'release ' + base_id if base_id else 'nothing (no release yet)'}")
    if not changed:
        p("no changes: a deploy would do nothing")
        return 0
    for line in summary:
        p(f"  {escape(line)}", soft_wrap=True)
    for host, h in hosts.items():
        if h.get("removed"):
            p(f"[bold]{host}[/bold]: no longer in the model (its files stay until removed by hand)")
            continue
        files = h["files"]
        assert isinstance(files, dict)
        if not files:
            continue
        reloads = h["reloads"]
        assert isinstance(reloads, list)
        restart = [r for r in reloads if r.endswith(":restart")]
        note = "  [yellow](restart)[/yellow]" if restart and not h.get("new_host") else ""
        p(
            f"[bold]{host}[/bold]: {len(files)} file(s); reloads: {', '.join(reloads) or 'none'}{note}"
        )
        for path, state in files.items():
            p(f"    {state:8} {path}")
        if not stat:
            role = model.hosts[host].role
            text = file_diff(
                base_files.get(host, {}),
                new_files[host],
                secret_files(role),
                base_id or "empty",
                "candidate",
            )
            click.echo(text, nl=False)
    return 1
