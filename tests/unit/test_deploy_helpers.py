"""The host-side helpers of the roles, run on the controller against real files and,
where installed, the real daemons (kamailio -c, rtpengine's own option parser)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import threading
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(role: str, name: str) -> ModuleType:
    path = REPO / "roles" / role / "files" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kam = _load("kamailio_edge", "siporch_kamailio")
rtp = _load("rtpengine_media", "siporch_rtpengine")
ast = _load("asterisk_pbx", "siporch_asterisk")

CFG = """#!KAMAILIO
#!define RPC_DGRAM "unix:/run/kamailio/kamailio_rpc.sock"
#!define DBURL "text:///etc/siporch/current/kamailio/db"
listen=udp:127.0.0.1:25060
loadmodule "jsonrpcs.so"
loadmodule "sl.so"
loadmodule "db_text.so"
loadmodule "dispatcher.so"
modparam("jsonrpcs", "transport", 0)
modparam("jsonrpcs", "dgram_socket", RPC_DGRAM)
modparam("dispatcher", "db_url", DBURL)
request_route { sl_send_reply("200", "OK"); }
"""
DISPATCHER = (
    "id(int,auto) setid(int) destination(string) flags(int) priority(int) "
    "attrs(string,null) description(string)\n"
    "1:1:sip\\:198.18.1.10\\:5060:0:1::itsp-a\n"
    "2:1:sip\\:198.18.1.11\\:5060:0:2::itsp-a\n"
)


def _tree(tmp: Path, cfg: str = CFG, dispatcher: str = DISPATCHER) -> Path:
    release = tmp / "release"
    (release / "kamailio" / "db").mkdir(parents=True)
    (release / "kamailio" / "kamailio.cfg").write_text(cfg)
    (release / "kamailio" / "db" / "dispatcher").write_text(dispatcher)
    (release / "kamailio" / "db" / "version").write_text(
        "table_name(string) table_version(int)\ndispatcher:4\n"
    )
    return release


def test_rpc_endpoint_resolves_defines(tmp_path: Path) -> None:
    release = _tree(tmp_path)
    kind, address = kam.rpc_endpoint(release / "kamailio" / "kamailio.cfg")
    assert (kind, address) == ("unix", "/run/kamailio/kamailio_rpc.sock")
    udp = CFG.replace('"unix:/run/kamailio/kamailio_rpc.sock"', '"udp:127.0.0.1:8090"')
    (release / "kamailio" / "kamailio.cfg").write_text(udp)
    assert kam.rpc_endpoint(release / "kamailio" / "kamailio.cfg") == ("udp", "127.0.0.1:8090")


def test_destinations_from_db_text(tmp_path: Path) -> None:
    release = _tree(tmp_path)
    assert kam._destinations(release / "kamailio" / "db" / "dispatcher") == {
        "sip:198.18.1.10:5060",
        "sip:198.18.1.11:5060",
    }
    loaded = {
        "RECORDS": [
            {
                "SET": {
                    "ID": 1,
                    "TARGETS": [{"DEST": {"URI": "sip:198.18.1.10:5060", "FLAGS": "AP"}}],
                }
            }
        ]
    }
    assert kam._loaded_destinations(loaded) == {"sip:198.18.1.10:5060": "AP"}


def test_db_text_problems(tmp_path: Path) -> None:
    release = _tree(tmp_path, dispatcher=DISPATCHER + "3:1:sip\\:x\n")
    problems = kam._db_text_problems(release / "kamailio" / "db")
    assert problems == ["dispatcher:4: 3 fields, header has 7"]


@pytest.mark.skipif(shutil.which("kamailio") is None, reason="kamailio is not installed")
def test_check_tree_with_kamailio(tmp_path: Path) -> None:
    assert "ok" in kam.check_tree(_tree(tmp_path / "good"), "kamailio")
    bad_cfg = CFG.replace('sl_send_reply("200", "OK");', "no_such_function();")
    with pytest.raises(kam.Failure, match="kamailio -c failed"):
        kam.check_tree(_tree(tmp_path / "bad", cfg=bad_cfg), "kamailio")
    with pytest.raises(kam.Failure, match="db_text"):
        kam.check_tree(_tree(tmp_path / "baddb", dispatcher=DISPATCHER + "9:9\n"), "kamailio")


def test_options_probe_on_loopback() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(5)

    def answer() -> None:
        data, peer = server.recvfrom(65535)
        call_id = next(ln for ln in data.decode().split("\r\n") if ln.startswith("Call-ID:"))
        server.sendto(f"SIP/2.0 200 OK\r\n{call_id}\r\nContent-Length: 0\r\n\r\n".encode(), peer)

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        assert kam.options("127.0.0.1", port, 2.0, 1) == f"OPTIONS sip:127.0.0.1:{port}: 200 OK"
    finally:
        thread.join()
        server.close()
    with pytest.raises(kam.Failure, match="no answer"):
        kam.options("127.0.0.1", port, 0.2, 2)


def test_bencode_round_trip() -> None:
    value = {"command": "statistics", "list": [1, b"x", {"a": -3}]}
    decoded, end = rtp.bdecode(rtp.bencode(value))
    assert end == len(rtp.bencode(value))
    assert decoded == {"command": b"statistics", "list": [1, b"x", {"a": -3}]}


@pytest.mark.skipif(shutil.which("rtpengine") is None, reason="rtpengine is not installed")
def test_rtpengine_check(tmp_path: Path) -> None:
    conf = tmp_path / "rtpengine" / "rtpengine.conf"
    conf.parent.mkdir()
    conf.write_text("[rtpengine]\ntable = -1\ninterface = 127.0.0.1\nlisten-ng = 127.0.0.1:22222\n")
    assert "accepts" in rtp.check_tree(tmp_path, "rtpengine")
    conf.write_text(conf.read_text() + "no-such-option = 1\n")
    with pytest.raises(rtp.Failure, match="no-such-option"):
        rtp.check_tree(tmp_path, "rtpengine")
    conf.write_text("[rtpengine]\ntable = -1\ninterface = 127.0.0.1\nport-min = many\n")
    with pytest.raises(rtp.Failure, match="rejected"):
        rtp.check_tree(tmp_path, "rtpengine")


def _asterisk_tree(tmp: Path) -> Path:
    """The example's rendered siporch files of pbx-central, as a release directory."""
    from siporch.model import load_model
    from siporch.render import asterisk as render_asterisk

    model = load_model(REPO / "inventory" / "example").model
    release = tmp / "release"
    for rel, text in render_asterisk.render(model, "pbx-central").items():
        (release / rel).parent.mkdir(parents=True, exist_ok=True)
        (release / rel).write_text(text)
    return release


def _site_etc(tmp: Path, includes: bool = True) -> Path:
    """A site's own /etc/asterisk: a phone, its dialplan with the DID contexts, AMI and RTP
    settings, and (with ``includes``) the lines the deploy adds."""
    etc = tmp / "etc-asterisk"
    (etc / "manager.d").mkdir(parents=True)
    (etc / "pjsip.conf").write_text(
        "[site-udp]\ntype = transport\nprotocol = udp\nbind = 10.0.0.1:5060\n"
        "[phone-101](!)\ntype = endpoint\n[phone-101-ep](phone-101)\ncontext = phones ; x\n"
    )
    (etc / "extensions.conf").write_text(
        "[general]\nstatic = yes\n[phones]\nexten => 101,1,Dial(PJSIP/phone-101-ep)\n"
        "[from-trunk]\nexten => _+.,1,Goto(phones,101,1)\n"
        "[from-trunk-branch]\nexten => _+.,1,Answer()\n"
    )
    (etc / "manager.conf").write_text(
        '[general]\nenabled = no\n#include "manager.d/*.conf"\n'
    )
    (etc / "manager.d" / "ops.conf").write_text("[ops]\nsecret = x\n")
    if includes:
        for site, own in ast.SITE_INCLUDES.items():
            with (etc / site).open("a") as fh:
                fh.write(f"; BEGIN siporch\n#tryinclude /etc/siporch/current/asterisk/{own}\n")
    return etc


def test_asterisk_check_tree(tmp_path: Path) -> None:
    release = _asterisk_tree(tmp_path)
    assert "5 siporch file(s)" in ast.check_tree(release)
    (release / "asterisk" / "pjsip_siporch.conf").write_text(
        "#include missing.conf\n[x]\ntype = bogus\n"
    )
    with pytest.raises(ast.Failure) as err:
        ast.check_tree(release)
    assert "missing.conf does not exist" in str(err.value)
    assert "unknown type 'bogus'" in str(err.value)


def test_asterisk_check_with_the_sites_configs(tmp_path: Path) -> None:
    """The combined config: the site's files with their include lines pointing at the
    release under check (globs included), and what siporch's files rely on."""
    release = _asterisk_tree(tmp_path)
    etc = _site_etc(tmp_path)
    assert "with the site's configs" in ast.check_tree(release, etc)


def test_asterisk_check_needs_the_include_lines(tmp_path: Path) -> None:
    release = _asterisk_tree(tmp_path)
    etc = _site_etc(tmp_path, includes=False)
    with pytest.raises(ast.Failure) as err:
        ast.check_tree(release, etc)
    for name in ("pjsip", "extensions", "manager"):
        assert f"does not include /etc/siporch/current/asterisk/{name}_siporch.conf" in str(
            err.value
        )


@pytest.mark.parametrize(
    ("site_file", "text", "message"),
    [
        ("pjsip.conf", "[itsp-a]\ntype = endpoint\n", "[itsp-a] (type=endpoint) is also one"),
        ("pjsip.conf", "[g]\ntype = global\n", "2 type=global objects"),
        ("extensions.conf", "[siporch-outbound]\nexten => 1,1,Hangup()\n", "belongs to siporch"),
        ("manager.conf", "[siporch]\nsecret = other\n", "AMI user [siporch] is siporch's"),
    ],
)
def test_asterisk_check_refuses_clashes(
    tmp_path: Path, site_file: str, text: str, message: str
) -> None:
    release = _asterisk_tree(tmp_path)
    etc = _site_etc(tmp_path)
    path = etc / site_file
    path.write_text(text + path.read_text())
    with pytest.raises(ast.Failure, match=re.escape(message)):
        ast.check_tree(release, etc)


def test_asterisk_check_needs_the_did_contexts_and_general(tmp_path: Path) -> None:
    release = _asterisk_tree(tmp_path)
    etc = _site_etc(tmp_path)
    ext = etc / "extensions.conf"
    ext.write_text(ext.read_text().replace("[from-trunk-branch]", "[other]"))
    mgr = etc / "manager.conf"
    mgr.write_text(mgr.read_text().replace("[general]\n", ""))
    with pytest.raises(ast.Failure) as err:
        ast.check_tree(release, etc)
    assert "DID destination context [from-trunk-branch] is not in the site's dialplan" in str(
        err.value
    )
    assert "from-trunk]" not in str(err.value).replace("from-trunk-branch]", "")
    assert "manager.conf: no [general] section, which manager_siporch.conf adds to" in str(
        err.value
    )


def test_asterisk_manager_credentials(tmp_path: Path) -> None:
    release = _asterisk_tree(tmp_path)
    assert ast._manager(release / "asterisk" / "manager_siporch.conf") == (
        "192.0.2.20",
        5038,
        "siporch",
        "ami-example-secret",
    )


def test_reload_filters() -> None:
    path = REPO / "roles" / "siporch_release" / "filter_plugins" / "siporch_release.py"
    spec = importlib.util.spec_from_file_location("siporch_release_filters", path)
    assert spec and spec.loader
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    filters = plugin.FilterModule().filters()
    old = {
        "files": {
            "kamailio/kamailio.cfg": {"sha256": "a", "reload": "kamailio:restart"},
            "kamailio/db/dispatcher": {"sha256": "b", "reload": "kamailio:dispatcher.reload"},
            "asterisk/pjsip_siporch.conf": {"sha256": "c", "reload": "asterisk:pjsip reload"},
        }
    }
    new = {
        "files": {
            **old["files"],
            "kamailio/db/dispatcher": {**old["files"]["kamailio/db/dispatcher"], "sha256": "x"},
        }
    }
    assert filters["siporch_reload_actions"](new, old) == ["kamailio:dispatcher.reload"]
    assert filters["siporch_reload_actions"](old, old) == []
    assert filters["siporch_changed_files"](new, old) == {"kamailio/db/dispatcher": "modified"}
    assert filters["siporch_daemons"](new) == ["asterisk", "kamailio"]


def test_set_release_reads_the_manifest_and_never_fails(tmp_path: Path) -> None:
    """`set-release` names the release of the config's own tree; with no Kamailio (or no
    records variable) it says so and still exits 0: it is a label, never a failed run."""
    release = tmp_path / "releases" / "20260101T000000Z-aaaaaaaa"
    (release / "kamailio").mkdir(parents=True)
    (release / "kamailio" / "kamailio.cfg").write_text(
        CFG + f'modparam("jsonrpcs", "dgram_socket", "{tmp_path}/absent.sock")\n'
    )
    (release / "manifest.json").write_text('{"id": "20260101T000000Z-aaaaaaaa"}')
    current = tmp_path / "current"
    current.symlink_to(release)
    cfg = current / "kamailio" / "kamailio.cfg"
    assert kam.set_release(cfg).startswith("release not set: ")
    assert kam.main(["--cfg", str(cfg), "set-release"]) == 0
    (release / "manifest.json").unlink()
    assert "no manifest" in kam.set_release(cfg)


def test_asterisk_cdr_init_prepares_the_table_asterisk_takes(tmp_path: Path) -> None:
    """cdr-init: the table in cdr_sqlite3_custom's own layout (an id, then the mapping's
    columns: Asterisk 22.10 refuses a table whose data columns differ), indexes, and the
    retention trigger of the rendered days; run again, it keeps the rows."""
    import sqlite3

    from siporch.render import asterisk as render_asterisk

    release = _asterisk_tree(tmp_path)
    conf = release / "asterisk" / render_asterisk.CDR_FILE
    db = tmp_path / "pbx-records" / "cdr.db"
    db.parent.mkdir()
    conf.write_text(
        conf.read_text()
        .replace(render_asterisk.CDR_DB, str(db))
        .replace("siporch-retention-days: 90", "siporch-retention-days: 1")
    )
    assert "table siporch_cdr ready (1 days)" in ast.cdr_init(release)
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(siporch_cdr)")]
    assert cols == ["id", *render_asterisk.CDR_COLUMNS]
    import time

    now = time.time()
    con.execute("INSERT INTO siporch_cdr (callid, start) VALUES ('old', ?)", (str(now - 2 * 86400),))
    con.execute("INSERT INTO siporch_cdr (callid, start) VALUES ('new', ?)", (str(now),))
    con.commit()
    assert [r[0] for r in con.execute("SELECT callid FROM siporch_cdr")] == ["new"]
    con.close()
    ast.cdr_init(release)
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT callid FROM siporch_cdr")] == ["new"]
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert {"siporch_cdr_callid", "siporch_cdr_start", "siporch_cdr_retention"} <= names
    con.close()
    conf.write_text(conf.read_text().replace("siporch-retention-days: 1", "siporch-retention-days: 0"))
    assert "no retention" in ast.cdr_init(release)
    con = sqlite3.connect(db)
    assert "siporch_cdr_retention" not in {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    con.close()
    (release / "asterisk" / render_asterisk.CDR_FILE).unlink()
    assert "none" in ast.cdr_init(release)


def _registration_table(state: str) -> str:
    return (
        " <Registration/ServerURI..............................>  <Auth....>  <Status.......>\n"
        "==========================================================================================\n"
        f" itsp-b-reg/sip:198.18.1.30:5061;transport=tls          itsp-b-auth  {state}\n"
    )


def test_registration_gate_sends_register_again_while_not_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A REGISTER the gate sent and that was lost is sent again every NUDGE_EVERY_S seconds,
    not once: the gate ends Registered instead of waiting out Asterisk's retry timer."""
    states = iter(["Unregistered", "Unregistered", "Unregistered", "Unregistered", "Registered"])
    sent: list[float] = []
    clock = [0.0]

    def cli(_conf: Path, command: str) -> str:
        if command == "pjsip show registrations":
            return _registration_table(next(states))
        assert command == "pjsip send register itsp-b-reg", command
        sent.append(clock[0])
        return ""

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(ast, "_cli", cli)
    monkeypatch.setattr(ast.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ast.time, "sleep", sleep)
    monkeypatch.setattr(ast, "NUDGE_EVERY_S", 2.0)
    assert ast.registrations(Path("/etc/asterisk/asterisk.conf"), 20) == (
        "1 outbound registration(s) Registered"
    )
    assert sent == [0.0, 2.0]  # at once, then 2 s later; not at every 1 s poll


def test_registration_gate_leaves_a_register_asterisk_has_scheduled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As Asterisk 22 does in the lab: `pjsip send register` unregisters a registration
    and schedules its REGISTER some 5-6 s later; another send before then starts that over.
    The gate nudges the one whose retry is far off (exp. 293s) and then leaves it to
    Asterisk's own attempt (exp. 5s ... 1s), which registers it."""
    clock = [0.0]
    reg: dict[str, float | str] = {"state": "Rejected", "at": 293.0}
    sent: list[float] = []

    def cli(_conf: Path, command: str) -> str:
        if reg["state"] != "Registered" and clock[0] >= float(reg["at"]):
            reg["state"] = "Registered"
        if command == "pjsip show registrations":
            left = max(1, int(float(reg["at"]) - clock[0]))
            return _registration_table(f"{reg['state']}        (exp. {left}s)")
        assert command == "pjsip send register itsp-b-reg", command
        sent.append(clock[0])
        reg.update(state="Unregistered", at=clock[0] + 6.0)
        return ""

    monkeypatch.setattr(ast, "_cli", cli)
    monkeypatch.setattr(ast.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ast.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s + 0.1))
    assert ast.registrations(Path("/etc/asterisk/asterisk.conf"), 20) == (
        "1 outbound registration(s) Registered"
    )
    assert sent == [0.0]
    assert ast._next_attempt("(exp. 293s)") == 293 and ast._next_attempt("") is None


def test_registration_gate_sends_one_whose_scheduled_attempt_never_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registration that shows an attempt due soon (exp. 3s) but stays Unregistered (its
    countdown starts over, no REGISTER leaves) is left to Asterisk for a while only: the
    gate sends one after NUDGE_IF_LATER_S + NUDGE_EVERY_S seconds, which registers it."""
    clock = [0.0]
    sent: list[float] = []

    def cli(_conf: Path, command: str) -> str:
        if command == "pjsip show registrations":
            state = "Registered" if sent else "Unregistered     (exp. 3s)"
            return _registration_table(state)
        sent.append(clock[0])
        return ""

    monkeypatch.setattr(ast, "_cli", cli)
    monkeypatch.setattr(ast.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ast.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    assert "Registered" in ast.registrations(Path("/etc/asterisk/asterisk.conf"), 30)
    assert len(sent) == 1 and 15.0 <= sent[0] <= 20.0, sent


def test_registration_gate_fails_naming_the_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(
        ast,
        "_cli",
        lambda _c, cmd: _registration_table("Rejected") if cmd.startswith("pjsip show") else "",
    )
    monkeypatch.setattr(ast.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ast.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    with pytest.raises(ast.Failure, match=r"not Registered after 5s: itsp-b-reg/sip:.*: Rejected"):
        ast.registrations(Path("/etc/asterisk/asterisk.conf"), 5)


def test_registration_gate_restarts_a_registration_asterisk_no_longer_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After `pjsip send unregister`, Asterisk 22 answers `pjsip send register NAME` with
    "Unable to retrieve registration": the gate sends every registration again (`pjsip
    send register *all`, once), which starts it."""
    registered = [False]
    commands: list[str] = []
    clock = [0.0]

    def cli(_conf: Path, command: str) -> str:
        commands.append(command)
        if command == "pjsip show registrations":
            return _registration_table("Registered" if registered[0] else "Unregistered")
        if command == "pjsip send register itsp-b-reg":
            return "Unable to retrieve registration itsp-b-reg\n"
        assert command == "pjsip send register *all", command
        registered[0] = True
        return "Re-register all queued\n"

    monkeypatch.setattr(ast, "_cli", cli)
    monkeypatch.setattr(ast.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ast.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    assert "Registered" in ast.registrations(Path("/etc/asterisk/asterisk.conf"), 20)
    assert commands.count("pjsip send register *all") == 1


def test_registration_gate_waits_for_the_registration_through_each_edge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trunk of an active-active site registers once per edge: the gate waits for each
    of them (the one through edge-central-2 nudged until Registered), not for any."""
    states = iter(["Rejected", "Rejected", "Registered"])
    sent: list[str] = []
    clock = [0.0]

    def cli(_conf: Path, command: str) -> str:
        if command == "pjsip show registrations":
            table = _registration_table("Registered").replace(
                "itsp-b-reg/", "itsp-b-reg-edge-central/"
            )
            return table + (
                " itsp-b-reg-edge-central-2/sip:198.18.1.30:5061;transport=tls "
                f"itsp-b-auth  {next(states)}\n"
            )
        sent.append(command)
        return ""

    monkeypatch.setattr(ast, "_cli", cli)
    monkeypatch.setattr(ast.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ast.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(ast, "NUDGE_EVERY_S", 1.0)
    assert ast.registrations(Path("/etc/asterisk/asterisk.conf"), 20) == (
        "2 outbound registration(s) Registered"
    )
    assert sent == ["pjsip send register itsp-b-reg-edge-central-2"] * 2


def test_schema_helpers_stamp_what_they_applied(tmp_path: Path) -> None:
    """records-init and cdr-init with --stamp: the stamp says which schema (its sha256)
    was applied to which database, once it was with success; cleared first, so a failed
    run leaves none (the quick deploy then runs it again)."""
    import hashlib
    import json

    from siporch.render import asterisk as render_asterisk

    sql = tmp_path / "records.sql"
    sql.write_text("CREATE TABLE IF NOT EXISTS acc (id INTEGER PRIMARY KEY, callid TEXT);\n")
    db, stamp = tmp_path / "records" / "records.sqlite", tmp_path / "schema" / "kamailio.json"
    kam.records_init(db, sql, "", str(stamp))
    assert json.loads(stamp.read_text()) == {
        "sha256": hashlib.sha256(sql.read_bytes()).hexdigest(),
        "db": str(db),
    }
    sql.write_text("CREATE TABLE broken (;\n")
    with pytest.raises(Exception, match="syntax error"):
        kam.records_init(db, sql, "", str(stamp))
    assert not stamp.exists()

    release = _asterisk_tree(tmp_path / "pbx")
    conf = release / "asterisk" / render_asterisk.CDR_FILE
    cdr = tmp_path / "pbx-records" / "cdr.db"
    cdr.parent.mkdir()
    conf.write_text(conf.read_text().replace(render_asterisk.CDR_DB, str(cdr)))
    stamp = tmp_path / "schema" / "asterisk.json"
    ast.cdr_init(release, str(stamp))
    assert json.loads(stamp.read_text()) == {
        "sha256": hashlib.sha256(conf.read_bytes()).hexdigest(),
        "db": str(cdr),
    }
    conf.unlink()
    assert "none" in ast.cdr_init(release, str(stamp))
    assert not stamp.exists()


def test_pair_gate(tmp_path: Path) -> None:
    """The pair's gate (siporch_kamailio.py pair-gate): a peer edge that does not answer
    SIP is not waited for; the pair's Redis must answer PING within the wait."""
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(CFG)
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))  # bound, not listening: refused
    port = silent.getsockname()[1]
    try:
        assert kam.pair_gate(cfg, 0, "", ["127.0.0.254"]).startswith("pair: 0 peer edge(s)")
        with pytest.raises(kam.Failure, match=f"Redis 127.0.0.1:{port} does not answer"):
            kam.pair_gate(cfg, 0, f"127.0.0.1:{port}", [])
    finally:
        silent.close()
    redis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    redis.bind(("127.0.0.1", 0))
    redis.listen(1)
    port = redis.getsockname()[1]

    def pong() -> None:
        conn, _ = redis.accept()
        with conn:
            assert conn.recv(16) == b"PING\r\n"
            conn.sendall(b"+PONG\r\n")

    thread = threading.Thread(target=pong)
    thread.start()
    try:
        assert "Redis 127.0.0.1" in kam.pair_gate(cfg, 5, f"127.0.0.1:{port}", [])
    finally:
        thread.join()
        redis.close()


def test_pair_gate_leaves_a_peer_without_dmq_alone(tmp_path: Path) -> None:
    """A peer edge that answers SIP but whose DMQ port is closed runs a release without
    the pair (a site that gets its pair in this deploy, the peer's turn not come yet): it
    is not waited for on the bus. One whose DMQ port listens is, and fails the gate when
    it is not on it."""
    release = tmp_path / "kamailio"
    release.mkdir()
    cfg = release / "kamailio.cfg"
    cfg.write_text(CFG)
    peer = "127.0.0.77"
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sip.bind((peer, 5060))
    except OSError:
        sip.close()
        pytest.skip(f"{peer}:5060 is in use")
    stop = threading.Event()

    def answer() -> None:
        sip.settimeout(0.1)
        while not stop.is_set():
            try:
                data, addr = sip.recvfrom(65535)
            except TimeoutError:
                continue
            call_id = [x for x in data.decode().split("\r\n") if x.startswith("Call-ID:")]
            sip.sendto(("SIP/2.0 200 OK\r\n" + call_id[0] + "\r\n\r\n").encode(), addr)

    thread = threading.Thread(target=answer)
    thread.start()
    dmq = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dmq.bind((peer, 0))
    port = dmq.getsockname()[1]
    try:
        (release / "host.cfg").write_text(f"#!define DMQ_PORT {port}\n")
        with pytest.raises(kam.Failure, match=f"edge {peer} is not on the DMQ bus"):
            kam.pair_gate(cfg, 0, "", [peer])  # its DMQ port listens: waited for
        dmq.close()  # now closed: a peer whose release has no pair yet
        assert kam.pair_gate(cfg, 0, "", [peer]).startswith("pair: 0 peer edge(s)")
        assert kam._dmq_port(cfg) == port
        (release / "host.cfg").write_text("#!define WITH_RECORDS\n")
        assert kam._dmq_port(cfg) is None
    finally:
        stop.set()
        thread.join()
        sip.close()
        dmq.close()


def test_rtpengine_redis_target_reads_rtpengines_form() -> None:
    """``redis = [PW@]HOST:PORT/DB`` as rtpengine reads it (the guard asks the databases it
    follows whether a foreign session's call is still there)."""
    assert rtp._redis_target("198.18.0.30:6379/1") == (None, "198.18.0.30", 6379)
    assert rtp._redis_target("s3cr@t@[2001:db8::1]:6380/2") == ("s3cr@t", "2001:db8::1", 6380)
