"""SIPp scenarios shipped with siporch (Record-Route aware)."""

import hashlib
import os
import tempfile
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent

#: Stands for this directory in a scenario that names a file of it (SIPp takes the media
#: file of ``rtp_stream`` as it is written: relative to SIPp's working directory).
SIPP_DIR_MARK = "@SIPP_DIR@"


def scenario(name: str) -> Path:
    """Path of a bundled scenario, e.g. ``scenario("uac_rr")``. A scenario that names a
    file beside it is written once, with this directory filled in, to a private
    directory under the temporary directory; that copy's path is returned."""
    path = SCENARIOS / f"{name}.xml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return path
    if SIPP_DIR_MARK not in text:
        return path
    text = text.replace(SIPP_DIR_MARK, str(SCENARIOS))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    out_dir = Path(tempfile.gettempdir()) / f"siporch-sipp-{os.getuid()}"
    out_dir.mkdir(mode=0o700, exist_ok=True)
    out = out_dir / f"{name}-{digest}.xml"
    if not out.exists():
        tmp = out_dir / f".{out.name}.{os.getpid()}"
        tmp.write_text(text)
        tmp.replace(out)
    return out
