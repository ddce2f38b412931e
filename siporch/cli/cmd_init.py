"""siporch init: a starting inventory for one site (edge, PBX, one ITSP trunk, vault)."""

from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path

import click
from rich.markup import escape

from siporch.cli.common import console

HOSTS = """\
# Ansible inventory written by `siporch init`. siporch's roles run every task as root on the
# hosts: connect as root, or as a user with sudo and `ansible_become: true` (below).
all:
  vars:
    ansible_user: {ssh_user}
    # ansible_become: true   # uncomment when ansible_user is not root (passwordless sudo)
  children:
    siporch_edge:
      hosts:
        {edge}:
          ansible_host: {edge_address}
    siporch_pbx:
      hosts:
        {pbx}:
          ansible_host: {pbx_address}
"""

MODEL = """\
# The trunk model (every field: docs/model.md in siporch's documentation).
# One site, one edge (Kamailio + rtpengine), one PBX (Asterisk), one ITSP trunk.
# Replace the addresses, numbers and patterns with yours, then `siporch validate -i {inv}`.
siporch:
  version: 1
  organisation: {organisation}
  domain: {domain}

  sites:
    {site}:
      kind: central
      normalization:
        - {{name: e164, match: '^\\+(\\d{{7,15}})$', replace: '+\\1'}}
        - {{name: international, match: '^00(\\d{{7,15}})$', replace: '+\\1'}}
        - {{name: national, match: '^0(\\d{{6,14}})$', replace: '+{country_code}\\1'}}

  hosts:
    {edge}:
      site: {site}
      role: edge
      address: {edge_address}
      transports:
        - {{protocol: udp, port: 5060}}
    {pbx}:
      site: {site}
      role: pbx
      address: {pbx_address}
      ami:
        user: siporch
        secret: "{{{{ vault_ami_secret }}}}"   # in group_vars/all/vault.yml

  trunks:
    itsp:
      description: The ITSP, IP-authenticated
      site: {site}
      kind: itsp
      peers:
        - {{address: {itsp_address}, port: 5060, transport: udp}}
      auth: {{type: ip}}
      codecs: [pcma, pcmu]
      media: {{mode: anchor}}
      max_channels: 10

  inbound:
    - name: main
      range: {{start: '{did_start}', end: '{did_end}'}}
      destination: {{host: {pbx}, context: from-trunk}}

  routes:
    - name: outbound
      sites: [{site}]
      pattern: '^\\+\\d{{7,15}}$'
      trunks: [itsp]
"""

VAULT = """\
# Secrets of the trunk model. Encrypt this file before you deploy:
#   ansible-vault encrypt {path} --vault-password-file {vault_pass}
# (siporch and ansible-playbook then need the same password file: --vault-password-file,
# ANSIBLE_VAULT_PASSWORD_FILE, or a .vault-pass in the inventory or beside it.)
vault_ami_secret: {ami_secret}
"""

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def _address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IP address") from None


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _NAME.match(value):
        raise click.BadParameter(f"{value!r}: lowercase letters, digits and '-', from a letter")
    return value


def _e164(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"\+[1-9]\d{6,14}", value):
        raise click.BadParameter(f"{value!r} is not an E.164 number like +12025550100")
    return value


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--site", default="main", show_default=True, callback=_name, help="Site name.")
@click.option("--edge", default="edge-1", show_default=True, callback=_name, help="Edge host.")
@click.option(
    "--edge-address", default="192.0.2.10", show_default=True, callback=_address,
    help="SIP address of the edge (its SSH address too).",
)
@click.option("--pbx", default="pbx-1", show_default=True, callback=_name, help="PBX host.")
@click.option(
    "--pbx-address", default="192.0.2.20", show_default=True, callback=_address,
    help="SIP address of the PBX (its SSH address too).",
)
@click.option(
    "--itsp-address", default="203.0.113.10", show_default=True, callback=_address,
    help="Address of the ITSP's SBC.",
)
@click.option("--domain", default="example.com", show_default=True, help="SIP domain.")
@click.option("--organisation", default="Example Corp", show_default=True)
@click.option("--country-code", default="1", show_default=True, help="E.164 country code (the national-number rule of the dial plan).")
@click.option(
    "--did-start", default="+12025550100", show_default=True, callback=_e164,
    help="First number of the DID range routed to the PBX.",
)
@click.option(
    "--did-end", default="+12025550199", show_default=True, callback=_e164,
    help="Last number of the DID range.",
)
@click.option("--ssh-user", default="root", show_default=True, help="ansible_user of the hosts.")
def cli(
    directory: Path,
    site: str,
    edge: str,
    edge_address: str,
    pbx: str,
    pbx_address: str,
    itsp_address: str,
    domain: str,
    organisation: str,
    country_code: str,
    did_start: str,
    did_end: str,
    ssh_user: str,
) -> int:
    """Write a starting inventory into DIRECTORY: one site, an edge, a PBX, one ITSP trunk
    and a vault file with a generated AMI secret. It validates as written; replace the
    documentation addresses (RFC 5737) and numbers with yours.
    """
    if directory.exists() and any(directory.iterdir()):
        console.print(
            f"siporch: {escape(str(directory))} exists and is not empty; nothing was written"
        )
        return 2
    if edge == pbx:
        raise click.BadParameter("the edge and the PBX need different names", param_hint="--pbx")
    if not re.fullmatch(r"[1-9]\d{0,2}", country_code):
        raise click.BadParameter(f"{country_code!r} is not a country code", param_hint="--country-code")
    values = {
        "site": site, "edge": edge, "edge_address": edge_address, "pbx": pbx,
        "pbx_address": pbx_address, "itsp_address": itsp_address, "domain": domain,
        "organisation": organisation, "country_code": country_code, "did_start": did_start,
        "did_end": did_end, "ssh_user": ssh_user, "inv": directory,
    }
    vars_dir = directory / "group_vars" / "all"
    vars_dir.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(HOSTS.format(**values))
    (vars_dir / "siporch.yml").write_text(MODEL.format(**values))
    vault = vars_dir / "vault.yml"
    vault.write_text(
        VAULT.format(
            path=vault, vault_pass=directory / ".vault-pass", ami_secret=secrets.token_hex(16)
        )
    )
    vault.chmod(0o600)
    console.print(f"wrote {escape(str(directory))}: hosts.yml, group_vars/all/siporch.yml, "
                  "group_vars/all/vault.yml (not encrypted yet)", soft_wrap=True)
    console.print(f"next: siporch validate -i {escape(str(directory))}", soft_wrap=True)
    return 0
