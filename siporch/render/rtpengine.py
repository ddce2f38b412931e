"""rtpengine on edge hosts: the media relay Kamailio anchors calls through.

One interface (the host address, advertised as ``public_address`` when set), the ng control
protocol on 127.0.0.1 only, the model's port range, userspace forwarding (``table = -1``,
no kernel module), no recording. The option names hold for rtpengine 10.5 (Debian 12) and
rtpengine 26 (Debian sid).
"""

from __future__ import annotations

from siporch.errors import SiporchError
from siporch.model.schema import Model
from siporch.render.env import render_template

#: glob of a rendered path -> reload action; the first match wins.
RELOADS: list[tuple[str, str]] = [("rtpengine/rtpengine.conf", "rtpengine:restart")]

#: rtpengine's files carry no secrets.
SECRET_FILES: list[str] = []


class RtpengineRenderError(SiporchError):
    """The model cannot be rendered into an rtpengine configuration."""


def render(model: Model, host: str) -> dict[str, str]:
    """The rtpengine files of an edge host, relative to its release root."""
    h = model.hosts[host]
    if h.role != "edge":
        raise RtpengineRenderError(f"host {host} is not an edge host")
    interface = str(h.address)
    if h.public_address is not None:
        interface += f"!{h.public_address}"
    settings = h.rtpengine
    return {
        "rtpengine/rtpengine.conf": render_template(
            "rtpengine/rtpengine.conf.j2",
            host=host,
            site=h.site,
            interface=interface,
            advertised=h.public_address is not None,
            ng_port=settings.ng_port,
            port_min=settings.port_min,
            port_max=settings.port_max,
        )
    }
