#!/usr/bin/env python3
"""Print the releases of a siporch host as JSON: {current, releases: [{id, time, manifest}], history}."""

import json
import os
import sys
from datetime import datetime, timezone

root = sys.argv[1] if len(sys.argv) > 1 else "/etc/siporch"
current = ""
link = os.path.join(root, "current")
if os.path.islink(link):
    current = os.path.basename(os.readlink(link).rstrip("/"))
releases = []
base = os.path.join(root, "releases")
for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
    path = os.path.join(base, name)
    if name.startswith(".") or not os.path.isdir(path):
        continue
    manifest = {}
    try:
        with open(os.path.join(path, "manifest.json")) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        pass
    installed = datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)  # noqa: UP017
    releases.append(
        {
            "id": name,
            "installed": installed.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model_hash": manifest.get("model_hash", ""),
            "files": {k: v.get("sha256", "") for k, v in manifest.get("files", {}).items()},
            "reloads": {k: v.get("reload", "") for k, v in manifest.get("files", {}).items()},
        }
    )
history = ""
try:
    with open(os.path.join(root, "history")) as fh:
        history = fh.read()[-200000:]
except OSError:
    pass
print(json.dumps({"current": current, "releases": releases, "history": history}))
