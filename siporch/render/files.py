"""What the renderers' files need besides their text: the reload a change of each file
needs on its host and the files that carry secrets, per renderer (each renderer module
names its own as ``RELOADS`` and ``SECRET_FILES``). Kept apart from the renderers, which
need the schema and Jinja: a plan built from cached files (an unchanged ``diff``) imports
only this."""

from __future__ import annotations

PJSIP_FILE = "pjsip_siporch.conf"
TRANSPORTS_FILE = "pjsip_siporch_transports.conf"
EXTENSIONS_FILE = "extensions_siporch.conf"
MANAGER_FILE = "manager_siporch.conf"
CDR_FILE = "cdr_sqlite3_custom_siporch.conf"

#: renderer -> [(glob of a rendered path, reload action)]; the first match wins.
RELOADS: dict[str, list[tuple[str, str]]] = {
    "kamailio": [
        ("kamailio/kamailio.cfg", "kamailio:restart"),
        ("kamailio/host.cfg", "kamailio:restart"),
        ("kamailio/kamailio.env", "kamailio:restart"),
        ("kamailio/records.sql", "kamailio:restart"),
        ("kamailio/records-pg.sql", "kamailio:restart"),
        ("kamailio/tls.cfg", "kamailio:tls.reload"),
        ("kamailio/db/dispatcher", "kamailio:dispatcher.reload"),
        ("kamailio/db/address", "kamailio:permissions.addressReload"),
        ("kamailio/db/dialplan", "kamailio:dialplan.reload"),
        ("kamailio/db/trunks", "kamailio:htable.reload:trunks"),
        ("kamailio/db/routes", "kamailio:htable.reload:routes"),
        ("kamailio/db/dids", "kamailio:htable.reload:dids"),
        ("kamailio/db/security", "kamailio:htable.reload:security"),
        ("kamailio/db/credentials", "kamailio:htable.reload:creds"),
        ("kamailio/db/version", "none"),
    ],
    "asterisk": [
        # PJSIP transports are not reloadable (allow_reload=no): a change needs a restart.
        (f"asterisk/{TRANSPORTS_FILE}", "asterisk:restart"),
        (f"asterisk/{PJSIP_FILE}", "asterisk:pjsip reload"),
        (f"asterisk/{EXTENSIONS_FILE}", "asterisk:dialplan reload"),
        (f"asterisk/{MANAGER_FILE}", "asterisk:manager reload"),
        (f"asterisk/{CDR_FILE}", "asterisk:cdr reload"),
        ("asterisk/*", "asterisk:restart"),
    ],
    "rtpengine": [("rtpengine/rtpengine.conf", "rtpengine:restart")],
    # keepalived re-reads its config on SIGHUP without giving up the address
    "keepalived": [("keepalived/keepalived.conf", "keepalived:reload")],
}

#: renderer -> files that carry secrets: deployed with mode 0640, never shown in diffs.
SECRET_FILES: dict[str, list[str]] = {
    "kamailio": ["kamailio/db/credentials"],
    "asterisk": [f"asterisk/{PJSIP_FILE}", f"asterisk/{MANAGER_FILE}"],
    "rtpengine": [],
    "keepalived": [],
}
