"""Drift comparison logic on real-shaped data: the example model's rendered release,
`sha256sum` output as a host prints it, `dispatcher.list` as Kamailio answers it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siporch import hosts
from siporch.core import HostRead
from siporch.deploy import drift
from siporch.deploy.drift import DispatcherEntry
from siporch.errors import SiporchError
from siporch.model import load_model
from siporch.monitor.kamailio import parse_dispatcher_list
from siporch.release import sha256
from siporch.render import render_release

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
VAULT = REPO / "inventory" / ".vault-pass"
RID = "20261128T110013Z-73172bc5"


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, bytes]]:
    return render_release(load_model(EXAMPLE, VAULT).model)


def hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {p: sha256(b) for p, b in files.items()}


def sha256sum_output(files: dict[str, str]) -> str:
    return "".join(f"{h}  ./{p}\n" for p, h in sorted(files.items()))


def test_probe_output_parsed(rendered: dict[str, dict[str, bytes]]) -> None:
    files = hashes(rendered["edge-central"])
    manifest = {"id": RID, "files": {p: {"sha256": h} for p, h in files.items()}}
    text = (
        f"releases/{RID}\n\n@@siporch@@\n"
        + sha256sum_output({**files, "manifest.json": sha256(b"{}")})
        + "@@siporch@@\n"
        + json.dumps(manifest)
    )
    probe = hosts.parse_host_probe(text)
    assert probe.release == RID
    assert probe.files["kamailio/db/dispatcher"] == files["kamailio/db/dispatcher"]
    assert "manifest.json" in probe.files
    assert probe.manifest == manifest


def test_probe_without_release() -> None:
    probe = hosts.parse_host_probe("\n@@siporch@@\n@@siporch@@\n")
    assert probe == HostRead(None, {})
    assert drift.compare_release("pbx-central", None, RID)[0].kind == drift.RELEASE


def test_probe_garbage_is_an_error() -> None:
    with pytest.raises(SiporchError):
        hosts.parse_host_probe("bash: readlink: command not found\n")


def test_identical_files_no_drift(rendered: dict[str, dict[str, bytes]]) -> None:
    files = hashes(rendered["edge-central"])
    on_host = hosts.parse_sha256sum(sha256sum_output({**files, "manifest.json": "0" * 64}))
    assert drift.compare_files("edge-central", on_host, files, RID) == []


def test_modified_missing_extra_named(rendered: dict[str, dict[str, bytes]]) -> None:
    files = hashes(rendered["edge-central"])
    on_host = dict(files)
    on_host["kamailio/db/dispatcher"] = sha256(b"edited by hand\n")
    del on_host["rtpengine/rtpengine.conf"]
    on_host["kamailio/db/dispatcher.bak"] = sha256(b"x")
    found = drift.compare_files("edge-central", on_host, files, RID)
    lines = [str(d) for d in found]
    assert [d.kind for d in found] == [drift.MODIFIED, drift.EXTRA, drift.MISSING]
    assert lines[0].startswith("edge-central: kamailio/db/dispatcher modified on host (sha256 ")
    assert on_host["kamailio/db/dispatcher"][:12] in lines[0]
    assert files["kamailio/db/dispatcher"][:12] in lines[0]
    assert "kamailio/db/dispatcher.bak" in lines[1]
    assert "rtpengine/rtpengine.conf" in lines[2]


def test_release_mismatch() -> None:
    other = "20261128T120000Z-deadbeef"
    assert drift.compare_release("edge-central", RID, RID) == []
    assert drift.compare_release("edge-central", RID, None) == []
    (d,) = drift.compare_release("edge-central", RID, other)
    assert str(d) == f"edge-central: runs release {RID}, the last deploy was {other}"
    (d,) = drift.compare_release("pbx-central", RID, other, deployed=False)
    assert "other hosts run" in str(d)


def test_fleet_release_is_newest() -> None:
    probes = [
        HostRead("20261128T100000Z-aaaaaaaa", {}),
        HostRead("20261128T110000Z-bbbbbbbb", {}),
        drift.MonitorError("unreachable"),
        HostRead(None, {}),
    ]
    assert drift.fleet_release(probes) == "20261128T110000Z-bbbbbbbb"
    assert drift.fleet_release([]) is None


def test_undeployed_model_change(rendered: dict[str, dict[str, bytes]]) -> None:
    deployed = hashes(rendered["edge-central"])
    assert drift.compare_model("edge-central", deployed, deployed, RID) == []
    now = dict(deployed)
    now["kamailio/db/dispatcher"] = sha256(b"another peer")
    now["kamailio/tls.cfg.new"] = sha256(b"new file")
    found = drift.compare_model("edge-central", now, deployed, RID)
    assert {d.kind for d in found} == {drift.UNDEPLOYED}
    assert [d.subject for d in found] == ["kamailio/db/dispatcher", "kamailio/tls.cfg.new"]
    assert "changed in the model since release" in str(found[0])
    assert "added" in str(found[1])
    assert drift.compare_model("edge-x", None, deployed, RID)[0].kind == drift.UNDEPLOYED
    assert "never deployed" in str(drift.compare_model("edge-x", deployed, None, RID)[0])


def test_dispatcher_table_parsed(rendered: dict[str, dict[str, bytes]]) -> None:
    table = drift.parse_dispatcher_table(rendered["edge-central"][drift.DISPATCHER].decode())
    assert DispatcherEntry(1, "sip:203.0.113.10:5060;transport=udp", "itsp-a") in table
    assert DispatcherEntry(1000004, "sip:192.0.2.20:5060;transport=udp", "pbx-central") in table
    assert DispatcherEntry(10, "sip:itsp-c.example", "itsp-c") in table
    # the PBX group central-pbx: set 3000001, both PBXs
    assert DispatcherEntry(3000001, "sip:192.0.2.21:5060;transport=udp", "pbx-central-2") in table
    assert len(table) == 9
    assert drift.parse_dispatcher_table("") == []
    with pytest.raises(drift.DriftError):
        drift.parse_dispatcher_table("a(int) b(string)\n1:x\n")


def _kamailio_answer(entries: list[DispatcherEntry]) -> dict[str, object]:
    """`dispatcher.list` as Kamailio 6.1 answers it (shape recorded in the lab)."""
    sets: dict[int, list[dict[str, object]]] = {}
    for i, e in enumerate(entries):
        sets.setdefault(e.set_id, []).append(
            {
                "DEST": {
                    "IDX": i,
                    "URI": e.uri,
                    "FLAGS": "AP",
                    "PRIORITY": 1,
                    "ATTRS": {"BODY": "weight=50", "WEIGHT": 50},
                }
            }
        )
    return {
        "NRSETS": len(sets),
        "RECORDS": [{"SET": {"ID": s, "TARGETS": t}} for s, t in sets.items()],
    }


def test_dispatcher_matches_model(rendered: dict[str, dict[str, bytes]]) -> None:
    table = drift.parse_dispatcher_table(rendered["edge-central"][drift.DISPATCHER].decode())
    running = parse_dispatcher_list(_kamailio_answer(table))
    assert (
        drift.compare_dispatcher("edge-central", table, [(t.set_id, t.uri) for t in running]) == []
    )


def test_dispatcher_removed_and_foreign_named(rendered: dict[str, dict[str, bytes]]) -> None:
    table = drift.parse_dispatcher_table(rendered["edge-central"][drift.DISPATCHER].decode())
    running = [e for e in table if "203.0.113.10" not in e.uri]
    running.append(DispatcherEntry(1, "sip:198.51.100.99:5060", ""))
    targets = parse_dispatcher_list(_kamailio_answer(running))
    found = drift.compare_dispatcher("edge-central", table, [(t.set_id, t.uri) for t in targets])
    assert [d.kind for d in found] == [drift.DISPATCHER_KIND] * 2
    assert "sip:203.0.113.10:5060;transport=udp (itsp-a)" in str(found[0])
    assert "not loaded in Kamailio" in str(found[0])
    assert "198.51.100.99" in str(found[1]) and "not in the model" in str(found[1])


def test_dispatcher_recorded_answer() -> None:
    data = json.loads((REPO / "tests/data/ami/kamailio-dispatcher-list.json").read_text())
    targets = parse_dispatcher_list(data.get("result", data))
    found = drift.compare_dispatcher("edge", [], [(t.set_id, t.uri) for t in targets])
    assert len(found) == len(targets) > 0


def test_pjsip_objects_from_rendered_conf(rendered: dict[str, dict[str, bytes]]) -> None:
    objects = drift.parse_pjsip_objects(rendered["pbx-central"][drift.PJSIP].decode())
    assert {"itsp-a", "itsp-b", "pstn-gw", "siporch-edge-edge-central"} <= objects["endpoint"]
    assert "itsp-b-reg" in objects["registration"]
    assert "itsp-a-identify" not in objects["endpoint"]


def test_pjsip_templates() -> None:
    conf = (
        "[trunk-tpl](!)\ntype=endpoint\ncontext=x\n"
        "[a](trunk-tpl)\nallow=ulaw\n"
        "[b]\ntype = endpoint ; comment\n"
        "[b-reg]\ntype=registration\n"
    )
    assert drift.parse_pjsip_objects(conf) == {"endpoint": {"a", "b"}, "registration": {"b-reg"}}


def test_pjsip_compare(rendered: dict[str, dict[str, bytes]]) -> None:
    objects = drift.parse_pjsip_objects(rendered["pbx-central"][drift.PJSIP].decode())
    endpoints = set(objects["endpoint"])
    regs = set(objects["registration"])
    assert drift.compare_pjsip("pbx-central", objects, endpoints, regs) == []
    found = drift.compare_pjsip(
        "pbx-central",
        objects,
        (endpoints - {"itsp-a"}) | {"siporch-edge-gone", "phone-101"},
        {"itsp-a-site-reg"},
    )
    lines = [str(d) for d in found]
    assert "pbx-central: PJSIP endpoint itsp-a of the model is not loaded" in lines
    assert "pbx-central: PJSIP endpoint siporch-edge-gone is loaded but not in the model" in lines
    # the site's own phone and registration share the Asterisk: not drift
    assert not [line for line in lines if "phone-101" in line or "site-reg" in line]
    assert "pbx-central: PJSIP registration itsp-b-reg of the model is not loaded" in lines


def test_report_exit_codes() -> None:
    report = drift.DriftReport(None, "host")
    assert report.exit_code == 0
    report.drift.append(drift.Drift("edge-central", drift.MODIFIED, "x", "x modified"))
    assert report.exit_code == 1
    report.errors.append("pbx-central: SSH failed")
    assert report.exit_code == 2
    data = report.to_dict()
    assert data["schema"] == drift.SCHEMA and data["exit_code"] == 2
    assert data["drift"][0]["host"] == "edge-central"


def test_probe_command_is_read_only() -> None:
    cmd = hosts.probe_command()
    assert "readlink /etc/siporch/current" in cmd and "sha256sum" in cmd
    for word in ("rm ", "mv ", ">", "tee"):
        assert word not in cmd.replace("2>/dev/null", "")


def test_cli_missing_inventory(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from siporch.cli.cmd_drift import cli

    result = CliRunner().invoke(cli, ["-i", str(tmp_path / "nope")], standalone_mode=False)
    assert result.return_value == 2
    assert "not found" in " ".join(result.output.split())  # wrapped at the console width
