"""The one Jinja environment every renderer uses."""

from __future__ import annotations

import ipaddress
from functools import cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _regex_escape_dp(value: str) -> str:
    """Escape a value for a Kamailio db_text column (':' separates columns)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


@cache
def environment() -> jinja2.Environment:
    """Top-level ``templates/``, StrictUndefined: a missing value is an error, not a blank."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["dbtext_escape"] = _regex_escape_dp
    env.filters["ip_network"] = lambda v: ipaddress.ip_network(v, strict=False)
    return env


def render_template(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
