"""Asterisk on pbx-central is shared with the site: the site's own endpoint and dialplan,
written by hand into its /etc/asterisk files, survive three deploys (a dialplan reload, a
PJSIP reload, an Asterisk restart) and a rollback, and an inbound call from an ITSP reaches
a context the site owns.

The module holds the controller's deploy lock, deploys copies of the lab inventory, and
leaves pbx-central's site files as it found them and the lab inventory deployed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import callkit as ck
import pytest

from siporch.deploy import runner

pytestmark = pytest.mark.lab

PBX = "pbx-central"
EDGE = "198.18.0.10:5060"
HQ_DID = "2025550100"  # itsp-a's national format of +12025550100 (hq-main)
SITE_ENDPOINT = "site-phone-101"
SITE_PHONES = "site-phones"
SITE_RECEPTION = "site-reception"  # hq-main's destination in this module's models
INCLUDE = "#tryinclude /etc/siporch/current/asterisk/{}"

SITE_PJSIP = f"""
; the site's own phone, written by hand (not by siporch)
[{SITE_ENDPOINT}]
type = aor
max_contacts = 1

[{SITE_ENDPOINT}]
type = endpoint
context = {SITE_PHONES}
aors = {SITE_ENDPOINT}
disallow = all
allow = ulaw
"""

SITE_DIALPLAN = f"""
; the site's own contexts, written by hand (not by siporch)
[{SITE_PHONES}]
exten => 101,1,Dial(PJSIP/{SITE_ENDPOINT},20)
 same => n,Hangup()
include => siporch-outbound

[{SITE_RECEPTION}]
exten => _+.,1,Answer()
 same => n,Set(TIMEOUT(absolute)=600)
 same => n,Echo()
 same => n,Hangup()
"""


def _run(inv: Path, playbook: str = "deploy-trunk.yml", **extra: Any) -> runner.RunResult:
    report = runner.report_path()
    vault = runner.vault_password_file(inv, None)
    cmd = runner.build_command(
        playbook,
        inv,
        vault_file=vault,
        report_file=report,
        # the lab has no registrar behind itsp-b
        extra_vars={"asterisk_pbx_health_registrations": False, **extra},
    )
    try:
        return runner.run(cmd, report)
    finally:
        report.unlink(missing_ok=True)


def _ok(result: runner.RunResult) -> dict[str, Any]:
    assert result.ok, "\n".join(result.output[-60:])
    assert result.report is not None
    report: dict[str, Any] = result.report
    return report


def _reloads(report: dict[str, Any]) -> list[str]:
    host = next(h for h in report["hosts"] if h["host"] == PBX)
    return list(host["reloads"])


def _prepend(path: Path, text: str) -> None:
    """Put ``text`` before everything in the site's file (siporch's block stays last)."""
    path.write_text(text.lstrip("\n") + "\n" + path.read_text())


def _without_siporch_block(text: str) -> str:
    return re.sub(r"; BEGIN siporch.*?\n.*?; END siporch[^\n]*\n", "", text, flags=re.S)


@pytest.fixture(scope="module")
def kit(lab: Any) -> Iterator[ck.Lab]:
    k = ck.Lab(lab)
    with ck.deploy_lock(wait=2400) as token:
        os.environ["SIPORCH_DEPLOY_LOCK"] = token
        etc = lab.root(PBX) / "etc" / "asterisk"
        saved = {name: (etc / name).read_text() for name in ("pjsip.conf", "extensions.conf")}
        try:
            yield k
        finally:
            for name, text in saved.items():
                (etc / name).write_text(text)
            _ok(_run(lab.inventory))
            k.asterisk("module reload res_pjsip.so")
            k.asterisk("dialplan reload")
            os.environ.pop("SIPORCH_DEPLOY_LOCK", None)


@pytest.fixture(scope="module")
def site(lab: Any, kit: ck.Lab) -> dict[str, str]:
    """The site's own endpoint and contexts, written by hand into pbx-central's pjsip.conf
    and extensions.conf (before siporch's block) and reloaded; ``kit`` puts the files back
    at the end. Returns each file's text without siporch's block."""
    etc = lab.root(PBX) / "etc" / "asterisk"
    # The site edits its own files by hand and reloads (the Asterisk may not run yet).
    if f"[{SITE_ENDPOINT}]" not in (etc / "pjsip.conf").read_text():
        _prepend(etc / "pjsip.conf", SITE_PJSIP)
    if f"[{SITE_PHONES}]" not in (etc / "extensions.conf").read_text():
        _prepend(etc / "extensions.conf", SITE_DIALPLAN)
    kit.asterisk("module reload res_pjsip.so")
    kit.asterisk("dialplan reload")
    return {
        name: _without_siporch_block((etc / name).read_text())
        for name in ("pjsip.conf", "extensions.conf")
    }


@pytest.fixture(scope="module")
def models(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _models(lab, tmp_path_factory.mktemp("shared"))


@pytest.fixture
def to_reception(kit: ck.Lab, site: dict[str, str], models: list[Path]) -> None:
    """pbx-central runs a model that hands hq-main to the site's own context (the first
    of ``models``), deployed unless its siporch-inbound already does (as the rollback of
    the test before leaves it)."""
    if f"Goto({SITE_RECEPTION}," not in kit.asterisk("dialplan show siporch-inbound"):
        _ok(_run(models[0]))


def _models(lab: Any, tmp: Path) -> list[Path]:
    """Three models: hq-main to the site's own context, then a PJSIP change (a trunk's
    channel limit), then a new PJSIP transport (an Asterisk restart)."""

    def to_reception(m: dict[str, Any]) -> None:
        for did in m["inbound"]:
            if did["name"] == "hq-main":  # the site's context is on this PBX only
                did["destination"] = {"host": PBX, "context": SITE_RECEPTION}

    def limit(m: dict[str, Any]) -> None:
        m["trunks"]["itsp-a"]["max_channels"] = 31

    def transport(m: dict[str, Any]) -> None:
        m["hosts"][PBX]["transports"] = [
            {"protocol": "udp", "port": 5060},
            {"protocol": "tcp", "port": 5060},
        ]

    out = []
    edits = (to_reception, limit, transport)
    for n in range(len(edits)):
        inv = ck.copy_inventory(lab, tmp / f"m{n}")
        for edit in edits[: n + 1]:
            ck.edit_model(inv, edit)
        out.append(inv)
    return out


def _site_objects_loaded(kit: ck.Lab) -> None:
    ep = kit.asterisk(f"pjsip show endpoint {SITE_ENDPOINT}")
    assert f"Endpoint:  {SITE_ENDPOINT}" in ep, ep
    assert re.search(rf"^\s*context\s*:\s*{SITE_PHONES}\s*$", ep, re.M), ep
    for context in (SITE_PHONES, SITE_RECEPTION):
        shown = kit.asterisk(f"dialplan show {context}")
        assert f"[ Context '{context}' created by 'pbx_config' ]" in shown, shown
    # siporch's objects are loaded next to them
    assert "Endpoint:  itsp-a" in kit.asterisk("pjsip show endpoint itsp-a")
    assert "siporch-inbound" in kit.asterisk("dialplan show siporch-inbound")


def _site_files_intact(lab: Any, written: dict[str, str]) -> None:
    """The site's files hold what the site wrote, plus exactly one siporch block."""
    etc = lab.root(PBX) / "etc" / "asterisk"
    for name, own in (
        ("pjsip.conf", "pjsip_siporch.conf"),
        ("extensions.conf", "extensions_siporch.conf"),
        ("manager.conf", "manager_siporch.conf"),
    ):
        text = (etc / name).read_text()
        assert text.count(INCLUDE.format(own)) == 1, f"{name}:\n{text[-600:]}"
        assert text.count("; BEGIN siporch") == 1, name
        if name in written:
            assert _without_siporch_block(text) == written[name], name


def test_site_config_survives_deploys_and_rollback(
    lab: Any, kit: ck.Lab, site: dict[str, str], models: list[Path]
) -> None:
    written = site
    r1 = _ok(_run(models[0]))  # the dialplan changes (and, from an older layout, a restart)
    _site_objects_loaded(kit)
    _site_files_intact(lab, written)

    r2 = _ok(_run(models[1]))
    assert _reloads(r2) == ["asterisk:pjsip reload"], r2
    _site_objects_loaded(kit)

    r3 = _ok(_run(models[2]))
    assert "asterisk:restart" in _reloads(r3), r3
    _site_objects_loaded(kit)
    assert "siporch-tcp-5060" in kit.asterisk("pjsip show transports")

    back = _ok(_run(models[2], "rollback-trunk.yml"))
    host = next(h for h in back["hosts"] if h["host"] == PBX)
    assert host["current"] == r2["release"], back
    assert "asterisk:restart" in _reloads(back), back
    _site_objects_loaded(kit)
    assert "siporch-tcp-5060" not in kit.asterisk("pjsip show transports")
    _site_files_intact(lab, written)
    assert r1["release"] != r2["release"]

    # drift names none of the site's objects or files
    drift = subprocess.run(
        ["siporch", "drift", "-i", str(models[1]), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    data = json.loads(drift.stdout)
    mentions = [
        d for d in data["drift"] if "site-" in d["subject"] or "/etc/asterisk" in d["message"]
    ]
    assert mentions == [], data["drift"]
    assert data["hosts"][PBX]["pjsip_endpoints"] >= 7, data["hosts"][PBX]  # 6 of siporch + 1


def test_inbound_call_reaches_the_sites_own_context(kit: ck.Lab, to_reception: None) -> None:
    """itsp-a1 -> edge-central -> pbx-central: siporch-inbound hands hq-main to the site's
    own context, which answers."""

    def channels() -> list[list[str]]:
        out = kit.asterisk("core show channels concise")
        return [line.split("!") for line in out.splitlines() if "!" in line]

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(ck.uac, kit, "itsp-a1", EDGE, HQ_DID, duration_ms=5000)
        seen: list[list[str]] = []

        def answered() -> bool:
            seen[:] = [c for c in channels() if "+12025550100" in c]
            return any(c[1] == SITE_RECEPTION and c[4] == "Up" and c[5] == "Echo" for c in seen)

        assert ck.wait_for(answered, 8), f"no channel in {SITE_RECEPTION}'s Echo: {seen}"
        result = call.result(timeout=60)
    assert (result.successful, result.failed) == (1, 0), result.stderr
    chan = next(c for c in seen if c[1] == SITE_RECEPTION)
    assert chan[0].startswith("PJSIP/itsp-a-"), chan
