"""The one Jinja environment every renderer uses."""

from __future__ import annotations

import ipaddress
from functools import cache

import jinja2

from siporch.resources import templates_dir


def _regex_escape_dp(value: str) -> str:
    """Escape a value for a Kamailio db_text column (':' separates columns)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


@cache
def environment() -> jinja2.Environment:
    """Top-level ``templates/``, StrictUndefined: a missing value is an error, not a blank."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
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
