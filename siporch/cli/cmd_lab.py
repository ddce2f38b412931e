"""siporch lab: build, inspect, impair and tear down the lab."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from siporch.errors import LabError
from siporch.lab import dns, lab
from siporch.lab import impair as impairments
from siporch.lab.spec import LabPaths

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
DEFAULT_EXAMPLE = "inventory/example"


def _host_table(hosts: list[lab.HostStatus]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("host", "address", "netns", "root", "sshd", "daemons", "problem"):
        table.add_column(col)

    def yn(flag: bool) -> str:
        return "[green]yes[/green]" if flag else "[red]no[/red]"

    for h in hosts:
        daemons = " ".join(f"{k}({len(v)})" for k, v in sorted(h.daemons.items()) if k != "sshd")
        sshd = yn(h.sshd_running and h.ssh_port)
        problem = h.problem()
        table.add_row(
            h.name,
            h.address,
            yn(h.netns and h.veth),
            yn(h.mounted),
            sshd,
            daemons or "-",
            f"[red]{escape(problem)}[/red]" if problem else "",
        )
    return table


def _systemd_line(hosts: list[lab.HostStatus]) -> str | None:
    """One line naming the hosts that boot systemd and how their systemd is."""
    booting = [h for h in hosts if h.init == "systemd"]
    if not booting:
        return None
    states = [f"{h.name} ({h.system if h.init_pid is not None else 'down'})" for h in booting]
    return "systemd hosts: " + ", ".join(states)


@click.group()
def cli() -> None:
    """Real edge, PBX and ITSP hosts on this machine (needs root). See docs/lab.md."""


@cli.command()
@click.option(
    "-i",
    "--inventory",
    "example",
    type=click.Path(path_type=Path, file_okay=False),
    default=lambda: os.environ.get("SIPORCH_INVENTORY", DEFAULT_EXAMPLE),
    show_default=DEFAULT_EXAMPLE,
    help="Inventory the lab mirrors (its hosts and trunk model).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write the lab inventory [default: <inventory>/../lab].",
)
@click.option("--rebuild", is_flag=True, help="Rebuild the root file system first.")
@click.option("--recreate", is_flag=True, help="Tear down and start again even if up.")
@click.option(
    "--init",
    type=click.Choice(["systemd", "none"]),
    default=None,
    help="systemd: the edges and the PBX boot systemd as PID 1 (the default, or "
    "$SIPORCH_LAB_INIT); none: every host runs only sshd, daemons without init.",
)
@click.option(
    "--edge-root",
    type=click.Choice(["sid", "bookworm"]),
    default=None,
    help="Debian suite of the edges' root file system: sid (the default, or "
    "$SIPORCH_LAB_EDGE_ROOT) or bookworm (Debian 12: Kamailio 5.6, rtpengine 10.5; built "
    "once, beside sid's). The PBX and the ITSP hosts always run sid.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def up(
    example: Path,
    out: Path | None,
    rebuild: bool,
    recreate: bool,
    init: str | None,
    edge_root: str | None,
    as_json: bool,
) -> int:
    """Build the root file system if needed, start every host, write inventory/lab.

    Exit 0 when every host is up, 1 when some host failed (see the problem column).
    """
    out = out or example.parent / "lab"

    def progress(msg: str) -> None:
        if not as_json:
            err_console.print(escape(msg), soft_wrap=True)

    result = lab.up(
        example,
        out,
        rebuild=rebuild,
        recreate=recreate,
        init=init,
        edge_root=edge_root,
        progress=progress,
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "already_up": result.already_up,
                    "init": result.init,
                    "edge_root": result.edge_root,
                    "notes": result.notes,
                    "repaired": result.repaired,
                    "rootfs": str(result.rootfs),
                    "inventory": str(result.inventory),
                    "seconds": round(result.seconds, 2),
                    "timings": {k: round(v, 3) for k, v in result.timings.items()},
                    "cleaned": result.cleaned.__dict__ if result.cleaned else None,
                    "hosts": {h.name: {"ok": h.ok, "problem": h.problem()} for h in result.hosts},
                },
                indent=2,
            )
        )
        return 0 if result.ok else 1
    if result.cleaned and result.cleaned.removed_anything:
        c = result.cleaned
        err_console.print(
            f"cleaned leftovers of an earlier lab: {len(c.processes)} process(es), "
            f"{len(c.mounts)} mount(s), {len(c.network)} network object(s)"
        )
    console.print(_host_table(result.hosts))
    line = _systemd_line(result.hosts)
    if line:
        console.print(escape(line), soft_wrap=True)
    if result.repaired:
        console.print("restarted sshd on: " + ", ".join(result.repaired))
    state = "already up" if result.already_up else f"up in {result.seconds:.1f} s"
    state += f" (init {result.init})"
    if result.edge_root != "sid":
        state += f" (edges on {result.edge_root})"
    good = sum(1 for h in result.hosts if h.ok)
    console.print(
        f"lab {state}: {good}/{len(result.hosts)} hosts; inventory {escape(str(result.inventory))}",
        soft_wrap=True,
    )
    if result.ok:
        console.print(f"try: ansible -i {escape(str(result.inventory))} all -m ping")
        return 0
    err_console.print("siporch: some hosts failed; `siporch lab down` cleans up")
    return 1


@cli.command()
@click.option("--keep-state", is_flag=True, help="Keep the hosts' overlay layers (their files).")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def down(keep_state: bool, as_json: bool) -> int:
    """Stop every lab process, unmount, remove namespaces, veths and the bridge.

    Idempotent, and it works on a half-built lab.
    """
    result = lab.down(keep_state=keep_state)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2))
        return 0
    if not result.removed_anything:
        console.print("the lab is down (nothing to remove)")
        return 0
    console.print(
        f"lab down: stopped {len(result.processes)} process(es), unmounted "
        f"{len(result.mounts)} file system(s), removed {len(result.network)} network "
        f"object(s) and {len(result.directories)} host director(ies)"
    )
    return 0


def _status_console() -> Console:
    return console if console.is_terminal else Console(highlight=False, width=220)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> int:
    """Per host: namespace, root, sshd, daemons, and why a host is not up.

    Exit 0 when every host is up, 1 otherwise.
    """
    lab.require_root()
    st = lab.status()
    if as_json:
        click.echo(json.dumps(st.to_json(), indent=2))
        return 0 if st.up else 1
    # piped or captured: wide enough for a whole row (a pair edge's daemons column would
    # otherwise squeeze a host's problem into fragments over several lines)
    out = _status_console()
    if st.down:
        out.print("the lab is down; start it with `siporch lab up`")
        return 1
    out.print(_host_table(st.hosts))
    line = _systemd_line(st.hosts)
    if line:
        out.print(escape(line), soft_wrap=True)
    if not st.bridge:
        out.print(f"[red]bridge {lab.topology.BRIDGE} is missing[/red]")
    for item in st.impairments:
        out.print(f"impairment: {escape(item)}")
    out.print(
        f"rootfs {escape(str(st.rootfs))}"
        + (f" (edges on {escape(st.edge_root)})" if st.edge_root != "sid" else "")
        + f"; inventory {escape(str(st.inventory))}",
        soft_wrap=True,
    )
    good = sum(1 for h in st.hosts if h.ok)
    out.print(("lab up" if st.up else "lab NOT up") + f": {good}/{len(st.hosts)} hosts")
    return 0 if st.up else 1


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def shell(host: str, command: tuple[str, ...]) -> int:
    """Run a login shell, or COMMAND, inside HOST (its namespace and root).

    Example: siporch lab shell pbx-central -- asterisk -rx "core show version"
    """
    cmd = list(command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    argv = lab.shell_argv(host, cmd)
    env: dict[str, Any] = dict(lab.hostfs.HOST_ENV)
    try:
        return subprocess.run(argv, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130


@cli.command()
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--delay", help="Delay each packet between A and B, e.g. 200ms.")
@click.option("--loss", help="Drop this share of packets between A and B, e.g. 30%.")
@click.option("--partition", is_flag=True, help="Drop every packet between A and B.")
@click.option("--one-way", is_flag=True, help="Only packets from A to B (default: both ways).")
@click.option("--clear", is_flag=True, help="Remove the impairment of A and B (or all of A's).")
def impair(
    a: str | None,
    b: str | None,
    delay: str | None,
    loss: str | None,
    partition: bool,
    one_way: bool,
    clear: bool,
) -> int:
    """Inject faults between lab hosts A and B: delay, loss or a partition.

    Applies to both directions unless --one-way; a new impairment of A and B replaces
    the old one. `impair --clear` with no hosts removes every impairment.

    A may be `controller` (this machine, 198.18.0.1) with --partition: the lab host B
    drops every packet from the controller, so Ansible and SSH cannot reach it.
    Example: siporch lab impair controller pbx-central --partition
    """
    lab.require_root()
    paths = LabPaths.default()
    if clear:
        if delay or loss or partition:
            raise LabError("--clear cannot be combined with --delay, --loss or --partition")
        removed = impairments.clear(paths, a, b)
        if not removed:
            console.print("no impairment to clear")
        for item in removed:
            console.print(f"cleared: {escape(item.describe())}")
        return 0
    if not (a and b):
        raise LabError(
            "impair needs two hosts, A and B", hint="siporch lab impair A B --delay 200ms"
        )
    item = impairments.impair(
        paths,
        a,
        b,
        delay_ms=impairments.parse_delay(delay) if delay else 0.0,
        loss_percent=impairments.parse_loss(loss) if loss else 0.0,
        partition=partition,
        one_way=one_way,
    )
    console.print(f"impaired: {escape(item.describe())}")
    return 0


# --- lab dns ----------------------------------------------------------------------------


def _records_table(records: list[dns.DnsRecord]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("name", "type", "value"):
        table.add_column(col)
    for rec in sorted(records, key=lambda r: (r.name, r.type, r.value)):
        table.add_row(escape(rec.name), rec.type, escape(rec.value))
    return table


def _print_records(records: list[dns.DnsRecord], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([rec.__dict__ for rec in records], indent=2))
    else:
        console.print(_records_table(records))


@cli.group("dns")
def dns_group() -> None:
    """The lab's DNS server (dnsmasq on the host dns, 198.18.0.53): A, SRV and NAPTR.

    Changes apply at once (dnsmasq restarts; TTLs are 5 s) and last until `lab down`.
    """


@dns_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.argument("name", required=False)
def dns_show(as_json: bool, name: str | None) -> int:
    """Every record the lab's DNS serves (or only those of NAME)."""
    lab.require_root()
    records = dns.records()
    if name:
        wanted = dns.check_name(name)
        records = [r for r in records if r.name == wanted]
    _print_records(records, as_json)
    return 0


@dns_group.command("set")
@click.option("--json", "as_json", is_flag=True, help="Print the records of NAME as JSON.")
@click.argument("name")
@click.argument("rtype", metavar="TYPE")
@click.argument("values", metavar="VALUE...", nargs=-1, required=True)
def dns_set(as_json: bool, name: str, rtype: str, values: tuple[str, ...]) -> int:
    """Replace every TYPE record of NAME by VALUE... (one record per VALUE).

    \b
    A      ADDRESS                                     198.18.1.62
    SRV    "PRIORITY WEIGHT PORT TARGET"               "10 10 5060 sip1.itsp-c.example"
    NAPTR  "ORDER PREFERENCE FLAGS SERVICE REPLACEMENT" "10 10 S SIP+D2U _sip._udp.itsp-c.example"
    """
    dns.parse_values(rtype, list(values))  # a bad value fails before root is needed
    lab.require_root()
    records = dns.set_record(name, rtype, list(values))
    _print_records(records, as_json)
    return 0


@dns_group.command("delete")
@click.argument("name")
@click.argument("rtype", metavar="[TYPE]", required=False)
def dns_delete(name: str, rtype: str | None) -> int:
    """Remove the records of NAME (only those of TYPE, when given)."""
    lab.require_root()
    for rec in dns.delete_record(name, rtype):
        console.print(f"deleted: {escape(rec.describe())}")
    return 0


@dns_group.command("reset")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def dns_reset(as_json: bool) -> int:
    """Back to the lab's default records."""
    lab.require_root()
    _print_records(dns.reset(), as_json)
    return 0
