"""keepalived on the edges of an active-standby pair: VRRP for the site's floating address.

One VRRP instance per pair (``sites.<site>.edges``), unicast between the two edges' own
addresses (no multicast needed on the segment), both starting as BACKUP without
preemption (the first edge listed has the higher priority at an election; an edge that
comes back does not take the address back from one that carries calls). Each edge checks
its own Kamailio and rtpengine every second: when either is gone, the instance goes to
FAULT, and the other edge owns the address within about a second more (advert_int 1). A
restart a deploy planned (marked under /run/siporch for a few seconds, see the
keepalived_vip role's ``siporch_vrrp.sh``) keeps the address.
Every change of VRRP state tells the edge's Kamailio whether it holds the address
(``notify_*``: ``$shv(vipheld)``; an edge without it answers new calls with 503), and the
edge that takes the address over reloads its dispatcher: its probes left from the floating
address it did not hold, so their answers never reached it.
"""

from __future__ import annotations

from siporch.errors import SiporchError
from siporch.model.schema import Model
from siporch.render import files as file_meta
from siporch.render.env import render_template
from siporch.render.kamailio import DEFAULT_RUN_DIR

#: The control socket kamailio.cfg opens (ctl module), for kamcmd in the notify scripts.
CTL_SOCKET = f"unix:{DEFAULT_RUN_DIR}/kamailio_ctl"

#: keepalived's check and notify script (installed by the keepalived_vip role,
#: ``keepalived_vip_helper``).
VRRP_HELPER = "/usr/local/lib/siporch/siporch_vrrp.sh"

#: glob of a rendered path -> reload action; keepalived re-reads its config on SIGHUP
#: without giving up the address.
RELOADS: list[tuple[str, str]] = file_meta.RELOADS["keepalived"]

SECRET_FILES: list[str] = file_meta.SECRET_FILES["keepalived"]

#: VRRP priorities of the first and the second edge of a pair.
PRIORITIES = (150, 100)


class KeepalivedRenderError(SiporchError):
    """The model cannot be rendered into a keepalived configuration."""


def render(model: Model, host: str) -> dict[str, str]:
    """``keepalived/keepalived.conf`` of an edge of an active-standby pair; nothing for
    any other host."""
    h = model.hosts[host]
    if h.role != "edge":
        raise KeepalivedRenderError(f"host {host} is not an edge host")
    pair = model.edge_pair(host)
    if pair is None or pair.mode != "active-standby" or pair.vip is None:
        return {}
    index = pair.hosts.index(host)
    peers = [str(model.hosts[e].address) for e in pair.hosts if e != host]
    return {
        "keepalived/keepalived.conf": render_template(
            "keepalived/keepalived.conf.j2",
            host=host,
            site=h.site,
            instance=f"siporch_{h.site.replace('-', '_')}",
            interface=pair.interface,
            vrrp_id=pair.vrrp_id,
            priority=PRIORITIES[min(index, len(PRIORITIES) - 1)],
            source=str(h.address),
            peers=peers,
            vip=f"{pair.vip}/{pair.vip.max_prefixlen}",
            helper=VRRP_HELPER,
            ctl_socket=CTL_SOCKET,
        )
    }
