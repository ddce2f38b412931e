"""rtpengine on edge hosts: the media relay Kamailio anchors calls through.

One interface (the host address, advertised as ``public_address`` when set), the ng control
protocol on 127.0.0.1 only, the model's port range, userspace forwarding (``table = -1``,
no kernel module), no recording. The option names hold for rtpengine 10.5 (Debian 12) and
rtpengine 26 (Debian sid).
"""

from __future__ import annotations

from siporch.errors import SiporchError
from siporch.model.schema import Model
from siporch.render import files as file_meta
from siporch.render.env import render_template

#: glob of a rendered path -> reload action; the first match wins.
RELOADS: list[tuple[str, str]] = file_meta.RELOADS["rtpengine"]

#: rtpengine's files carry no secrets.
SECRET_FILES: list[str] = file_meta.SECRET_FILES["rtpengine"]


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
    pair = model.edge_pair(host)
    if pair is not None and pair.vip is not None:
        # an active-standby pair: media on the floating address, bound on both edges
        interface = str(pair.vip)
    redis: dict[str, object] | None = None
    if pair is not None and pair.redis is not None:
        server = pair.redis.address
        hostport = f"[{server}]" if server.version == 6 else str(server)
        index = pair.hosts.index(host)
        redis = {
            "server": f"{hostport}:{pair.redis.port}",
            # database n+1 for the n-th edge of the pair (0 is left to others)
            "db": index + 1,
            "subscribe": [i + 1 for i in range(len(pair.hosts)) if i != index],
            "peers": pair.hosts,
            "vip": pair.vip is not None,
        }
    settings = h.rtpengine
    return {
        "rtpengine/rtpengine.conf": render_template(
            "rtpengine/rtpengine.conf.j2",
            host=host,
            site=h.site,
            interface=interface,
            advertised=h.public_address is not None,
            redis=redis,
            ng_port=settings.ng_port,
            port_min=settings.port_min,
            port_max=settings.port_max,
        )
    }
