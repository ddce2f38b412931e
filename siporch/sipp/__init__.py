"""SIPp scenarios shipped with siporch (Record-Route aware)."""

from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent


def scenario(name: str) -> Path:
    """Path of a bundled scenario, e.g. ``scenario("uac_rr")``."""
    return SCENARIOS / f"{name}.xml"
