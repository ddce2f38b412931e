"""`siporch lab` argument handling and errors, without touching the machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from siporch.cli import main
from siporch.errors import LabError
from siporch.lab import impair
from siporch.lab.spec import host_by_name


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)


@pytest.mark.parametrize(
    "args",
    [
        ["lab", "up"],
        ["lab", "down"],
        ["lab", "status"],
        ["lab", "shell", "pbx-central"],
        ["lab", "impair", "edge-central", "pbx-central", "--delay", "200ms"],
    ],
)
def test_not_root_is_a_clear_error_with_exit_2(
    args: list[str], not_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert "the lab needs root" in err
    assert "Traceback" not in err + out


def test_lab_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["lab", "--help"], capsys)
    assert code == 0
    for sub in ("up", "down", "status", "shell", "impair"):
        assert sub in out


def test_unknown_host_for_shell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    code, _, err = run_cli(["lab", "shell", "no-such-host", "--", "true"], capsys)
    assert code == 2
    assert "no lab host named 'no-such-host'" in err and "pbx-central" in err


def test_impair_needs_two_hosts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    code, _, err = run_cli(["lab", "impair", "edge-central", "--delay", "10ms"], capsys)
    assert code == 2 and "two hosts" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--delay", "soon"], "bad delay"),
        (["--loss", "150%"], "out of range"),
        (["--loss", "lots"], "bad loss"),
        (["--partition", "--delay", "10ms"], "cannot be combined"),
        ([], "say what to do"),
        (["--clear", "--delay", "10ms"], "cannot be combined"),
    ],
)
def test_impair_bad_options_are_clear_errors(
    extra: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: object,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("SIPORCH_LAB_STATE", str(tmp_path))
    code, out, err = run_cli(["lab", "impair", "edge-central", "pbx-central", *extra], capsys)
    assert code == 2, out + err
    assert message in err


def test_impair_unknown_host(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("SIPORCH_LAB_STATE", str(tmp_path))
    code, _, err = run_cli(["lab", "impair", "edge-central", "mars", "--delay", "1ms"], capsys)
    assert code == 2 and "no lab host named 'mars'" in err


@pytest.mark.parametrize(
    ("text", "ms"),
    [("200ms", 200.0), ("200", 200.0), ("1.5s", 1500.0), ("500us", 0.5), (" 20 ms ", 20.0)],
)
def test_parse_delay(text: str, ms: float) -> None:
    assert impair.parse_delay(text) == ms


@pytest.mark.parametrize("text", ["", "ms", "-5ms", "0ms", "2m", "61s"])
def test_parse_delay_rejects(text: str) -> None:
    with pytest.raises(LabError):
        impair.parse_delay(text)


@pytest.mark.parametrize(
    ("text", "pct"), [("30%", 30.0), ("30", 30.0), ("0.5%", 0.5), ("100%", 100.0)]
)
def test_parse_loss(text: str, pct: float) -> None:
    assert impair.parse_loss(text) == pct


@pytest.mark.parametrize("text", ["0%", "101%", "-1%", "x"])
def test_parse_loss_rejects(text: str) -> None:
    with pytest.raises(LabError):
        impair.parse_loss(text)


def test_impairment_directions_and_description() -> None:
    both = impair.Impairment("a", "b", delay_ms=200)
    assert both.directions() == [("a", "b"), ("b", "a")]
    one = impair.Impairment("a", "b", loss_percent=30, one_way=True)
    assert one.directions() == [("a", "b")]
    assert one.describe() == "a -> b: loss 30%"
    assert impair.Impairment("a", "b", partition=True).describe() == "a <-> b: partition"


def test_console_entry_point_maps_not_root_to_exit_2() -> None:
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
        code = (
            "import os, sys; os.geteuid = lambda: 1000; "
            "from siporch.cli import main; main(['lab', 'status'])"
        )
    else:
        code = "from siporch.cli import main; main(['lab', 'status'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "the lab needs root" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["controller", "pbx-central", "--delay", "10ms"], "only --partition"),
        (["pbx-central", "controller", "--loss", "5%"], "only --partition"),
        (["pbx-central", "controller", "--partition", "--one-way"], "machine's firewall"),
        (["controller", "controller", "--partition"], "two different hosts"),
    ],
)
def test_impair_controller_only_partitions(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: object,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("SIPORCH_LAB_STATE", str(tmp_path))
    code, out, err = run_cli(["lab", "impair", *args], capsys)
    assert code == 2, out + err
    assert message in err and "Traceback" not in err


def test_controller_partition_drops_the_controller_in_the_host_only() -> None:
    items = [
        impair.Impairment("controller", "pbx-central", partition=True),
        impair.Impairment("edge-central", "edge-branch", delay_ms=20),
    ]
    assert impair.partition_rules("pbx-central", items) == [
        "-A SIPORCH-LAB-IN -s 198.18.0.1/32 -j DROP"
    ]
    # No rule anywhere else: the controller side is the machine, never touched.
    for host in ("edge-central", "edge-branch", "controller"):
        assert impair.partition_rules(host, items) == []


def test_host_partition_drops_every_address_of_the_peer() -> None:
    items = [impair.Impairment("edge-central", "pbx-central", partition=True)]
    for host, peer in (("pbx-central", "edge-central"), ("edge-central", "pbx-central")):
        addresses = host_by_name(peer).addresses  # type: ignore[union-attr]
        assert impair.partition_rules(host, items) == [
            f"-A SIPORCH-LAB-IN -s {a}/32 -j DROP" for a in addresses
        ]
