"""The one Jinja environment every renderer uses."""

from __future__ import annotations

import ipaddress
from functools import cache

import jinja2

from siporch.errors import SiporchError
from siporch.model.messages import is_printable
from siporch.resources import templates_dir


def _regex_escape_dp(value: str) -> str:
    """Escape a value for a Kamailio db_text column (':' separates columns)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


class UnsafeValueError(SiporchError):
    """A value about to be written into a config holds a control character or line break.

    Validation refuses those in every field of the model; this is the renderer's own last
    check, so that nothing that slipped past it can add lines to a config.
    """


def _finalize(value: object) -> object:
    """Every ``{{ ... }}`` output passes here: a string with a control character (a line
    break included) is refused; every other value is returned unchanged."""
    if isinstance(value, str) and not value.isprintable() and not is_printable(value):
        # The value is not shown: it may be a secret.
        raise UnsafeValueError(
            "refusing to render a value holding a control character or line break "
            "(validation should have refused it: please report this)"
        )
    return value


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
        finalize=_finalize,
    )
    env.filters["dbtext_escape"] = _regex_escape_dp
    env.filters["ip_network"] = lambda v: ipaddress.ip_network(v, strict=False)
    return env


def render_template(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
