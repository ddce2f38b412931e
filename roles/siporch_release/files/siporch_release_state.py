#!/usr/bin/env python3
"""Print in one JSON document what a deploy reads of a siporch host's releases.

    siporch_release_state.py [--stored] ROOT [TARGET_ID [FILE...]]

{"current": id or "", "manifest": the current release's manifest or {}, "releases": [ids],
 "systemd": bool, "target": {"exists", "checksum" (sha256 of its manifest.json), "files":
 [{path, checksum, mode}] of every file under releases/TARGET_ID}}. The files are hashed
only when TARGET_ID is the release the host runs or already has (a redeploy of it restores
what was changed by hand); "current_files" are the same hashes of the running release
when TARGET_ID is another (null otherwise). "installed": {FILE: sha256 or ""} of each FILE (the daemons'
helpers the roles install). With --stored (a rollback: its target is chosen from the
history this prints), "stored": {id: {"manifest", "checksum"}} of every release on the
host (each manifest and the sha256 of its manifest.json) and "current_files" of the
running release whatever TARGET_ID is. Run by the siporch_release role (discover.yml: the action
siporch_release_read, as `python3 -` with the text on stdin; prune.yml: `python3 -c`), the
text of siporch_hostlib.py (the helpers' scaffold) first: one SSH
round trip instead of a stat, slurp, find and stat per host, before anything is installed.
Standard library only.
"""

import hashlib
import json
import os
import stat
import sys

if "sha256_file" not in globals():  # run as a file, beside the scaffold
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from siporch_hostlib import emit_json, sha256_file

sha256 = sha256_file


def tree(top):
    """Every regular file under top, like ansible.builtin.find (recurse, hidden, sha256)."""
    out = []
    for base, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(base, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append(
                {"path": path, "checksum": sha256(path), "mode": f"{stat.S_IMODE(st.st_mode):04o}"}
            )
    return out


def _manifest(path):
    """A release's manifest.json and its sha256 (({}, "") when unreadable)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return json.loads(data.decode("utf-8")), hashlib.sha256(data).hexdigest()
    except (OSError, ValueError):
        return {}, ""


def main(argv):
    argv = list(argv)
    stored = len(argv) > 1 and argv[1] == "--stored"
    if stored:
        del argv[1]
    root = argv[1] if len(argv) > 1 else "/etc/siporch"
    target = argv[2] if len(argv) > 2 else ""
    link = os.path.join(root, "current")
    current = ""
    manifest = {}
    if os.path.islink(link):
        current = os.path.basename(os.readlink(link).rstrip("/"))
        try:
            with open(os.path.join(link, "manifest.json"), encoding="utf-8") as fh:
                manifest = json.load(fh)
        except (OSError, ValueError):
            manifest = {}
    base = os.path.join(root, "releases")
    releases = sorted(
        name
        for name in (os.listdir(base) if os.path.isdir(base) else [])
        if name[:1].isdigit() and os.path.isdir(os.path.join(base, name))
    )
    found = {"exists": False, "checksum": "", "files": None}
    if target and "/" not in target and target not in (".", ".."):
        tdir = os.path.join(base, target)
        mfile = os.path.join(tdir, "manifest.json")
        if os.path.isfile(mfile):
            found["exists"] = True
            found["checksum"] = sha256(mfile)
            found["files"] = tree(tdir)
    current_files = None
    if (
        (stored or (target and current != target))
        and current
        and os.path.isdir(os.path.join(base, current))
    ):
        current_files = tree(os.path.join(base, current))
    installed = {}
    for path in argv[3:]:
        try:
            installed[path] = sha256(path)
        except OSError:
            installed[path] = ""
    # the end of the history file (one line per switch; a cut first line is skipped by
    # siporch.core.release_stack), for the rollback target
    history = ""
    try:
        with open(os.path.join(root, "history"), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            history = fh.read().decode("utf-8", "replace")
    except OSError:
        pass
    out = {
        "current": current,
        "history": history,
        "manifest": manifest,
        "releases": releases,
        "systemd": os.path.isdir("/run/systemd/system"),
        "target": found,
        "current_files": current_files,
        "installed": installed,
    }
    if stored:
        out["stored"] = {}
        for rid in releases:
            manifest_of, checksum = _manifest(os.path.join(base, rid, "manifest.json"))
            out["stored"][rid] = {"manifest": manifest_of, "checksum": checksum}
    emit_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
