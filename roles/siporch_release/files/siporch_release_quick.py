#!/usr/bin/env python3
"""A host deployed in one call: checks, the new release made from the running one, switch,
reloads and health gates.

    python3 -c "<siporch_hostlib.py><this file>" < SPEC.json
    python3 - < "<siporch_hostlib.py>SPEC_JSON = '<SPEC>'<this file>"

Run by roles/siporch_release/tasks/quick.yml (from playbooks/tasks/quick_host.yml) for a
host whose plan allows it (a host the release leaves as it is, or a change that runtime
reloads apply), with the text of siporch_hostlib.py first and the spec between them
(action_plugins/siporch_release_quick.py, the second form). SPEC is JSON:

    {"root": "/etc/siporch",
     "checks": [{"name", "argv"}],       every one must exit 0, else nothing is done
     "switch": null | {"id", "manifest" (its text), "kind",
                       "write": [{"path", "data" (base64), "mode", "group"}],
                       "remove": [paths],
                       "tree_checks": [{"name", "argv"} | {"name", "db_text": dir}]}
                   | {"id", "stored": true, "checksum", "kind", "tree_checks"},
     "steps": [{"name", "argv", "if_file", "schema": {"file", "stamp"}}],
                                         in order, once the release is in place
     "gates": [{"name", "argv", "tries", "delay", "in_process", "if_file"}],
                                         together, each retried
     "prune": [ids]}                     removed once the gates have passed

1. The checks (the daemons' installs in place, the daemons running): one that fails
   means the host needs the step by step deploy; the helper prints {"quick": false,
   "why"} and changes nothing.
2. When the release id changes: releases/.<id>.partial is made from the running release
   (`cp -a`, owners and modes kept), the files of "write" written (root, their group and
   mode), those of "remove" removed, the new manifest written; every file is compared with
   the manifest (sha256, mode; nothing more, nothing less), else it is removed and the
   host goes step by step. It is renamed to releases/<id>, the tree checks run (the real
   daemons' checks; a failure removes it and the host goes step by step, where the check
   fails again under its own name), then `current` is switched as switch.yml does it (a
   temporary link renamed over it, one line in `history`).
   A "stored" switch (a rollback) goes to releases/<id> as the host has it: its
   manifest.json must be the one planned with (sha256 "checksum") and every file as it
   says, then the tree checks; else nothing is changed (the release is left as it is) and
   the host goes step by step. Nothing is made or copied.
3. The steps (schemas, reloads, telling Kamailio its release), then the health gates,
   all at once: each is retried until it passes or its tries are spent. A step or a gate
   with "if_file" is skipped (a gate: passed) when that file is missing. A schema step
   ("schema") is skipped when its file is byte for byte the one last applied with success
   to a database that is still there (the stamp its helper wrote: sha256 and database);
   a missing or other stamp runs it. A gate "in_process" is a Python helper (argv[0], with
   a main(argv) as siporch_hostlib's Helper has) run in this process, in the gate's own
   thread, its output captured as its process's would be: no Python started per gate.
4. Releases to prune are removed.

Prints {"quick": true, "switched": bool, "gates": {name: seconds}, "times": {part: seconds},
"skipped": [step names]} on success (the checks, the release made and switched, each step
run, the gates together). A failed
switch, step or gate prints {"quick": true, "switched": bool, "failed": "<name>: <output>",
"step": "<name>", "reason": "<output>"} (of gates that failed, each, "; " between them) and
exits 1 (the playbook's rescue puts the host back and records the step and the reason).
Standard library only.
"""

import base64
import grp
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time

if "run" not in globals():  # run as a file, beside the scaffold
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from siporch_hostlib import run, schema_applied, sha256_file

GATE_TIMEOUT = 300.0


def _argv(item):
    return [str(a) for a in item["argv"]]


def _tail(proc):
    text = ((proc.stderr or "").strip() or (proc.stdout or "").strip()).splitlines()
    return " ".join(text[-6:])[-600:] or f"exit {proc.returncode}"


class NotQuick(Exception):
    """The host needs the step by step deploy; nothing was changed."""


def _group_id(name):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return 0


def _tree(top):
    out = {}
    for base, dirs, files in os.walk(top):
        dirs.sort()
        for name in files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if not stat.S_ISREG(st.st_mode):
                out[rel] = ("", "")
                continue
            out[rel] = (sha256_file(path), f"{stat.S_IMODE(st.st_mode):04o}")
    return out


def _build(root, spec):
    """releases/<id>: the running tree, the changed files written, the others removed,
    checked file by file against the new manifest; then the tree checks."""
    new = spec["id"]
    if not new or "/" in new or new in (".", ".."):
        raise RuntimeError(f"bad release id {new!r}")
    base = os.path.join(root, "releases")
    running = os.path.realpath(os.path.join(root, "current"))
    target = os.path.join(base, new)
    partial = os.path.join(base, "." + new + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    proc = run(["cp", "-a", running, partial], timeout=GATE_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError("copy of the running release: " + _tail(proc))
    os.chmod(partial, 0o700)
    for rel in spec.get("remove", []):
        path = os.path.join(partial, rel)
        if os.path.lexists(path):
            os.unlink(path)
    for item in spec.get("write", []):
        path = os.path.join(partial, item["path"])
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        tmp = path + ".siporch-new"
        with open(tmp, "wb") as fh:
            fh.write(base64.b64decode(item["data"]))
        os.chown(tmp, 0, _group_id(item.get("group") or "root"))
        os.chmod(tmp, int(item["mode"], 8))
        os.replace(tmp, path)
    mpath = os.path.join(partial, "manifest.json")
    with open(mpath + ".siporch-new", "w", encoding="utf-8") as fh:
        fh.write(spec["manifest"])
    os.chown(mpath + ".siporch-new", 0, 0)
    os.chmod(mpath + ".siporch-new", 0o644)
    os.replace(mpath + ".siporch-new", mpath)
    wrong = _differs(partial, json.loads(spec["manifest"]))
    if wrong:
        shutil.rmtree(partial, ignore_errors=True)
        raise NotQuick(
            "the tree made on the host differs from the release: " + ", ".join(wrong[:5])
        )
    if os.path.lexists(target):
        shutil.rmtree(target)  # a different release of the same id (not the running one)
    os.chmod(partial, 0o755)
    os.rename(partial, target)
    _tree_checks(target, spec, remove=True)


def _differs(top, manifest):
    """The files of the tree ``top`` that differ from ``manifest`` (sha256, mode; nothing
    more, nothing less), sorted."""
    want = {
        rel: (meta.get("sha256", ""), meta.get("mode") or "")
        for rel, meta in manifest.get("files", {}).items()
    }
    have = _tree(top)
    have.pop("manifest.json", None)
    return sorted(
        rel
        for rel in set(want) | set(have)
        if rel not in have
        or rel not in want
        or have[rel][0] != want[rel][0]
        or (want[rel][1] and have[rel][1] != want[rel][1])
    )


def _stored(root, spec):
    """releases/<id>, already on the host (a rollback): its manifest.json the one the plan
    was made from (sha256 "checksum"), every file as it says; then the tree checks. Nothing
    is changed: a release that differs is left as it is for the step by step rollback."""
    rid = spec["id"]
    if not rid or "/" in rid or rid in (".", ".."):
        raise RuntimeError(f"bad release id {rid!r}")
    target = os.path.join(root, "releases", rid)
    mpath = os.path.join(target, "manifest.json")
    if not os.path.isdir(target) or os.path.islink(target) or not os.path.isfile(mpath):
        raise NotQuick(f"release {rid} is not on the host")
    if sha256_file(mpath) != spec.get("checksum"):
        raise NotQuick(f"the manifest of release {rid} is not the one planned with")
    with open(mpath, encoding="utf-8") as fh:
        manifest = json.load(fh)
    wrong = _differs(target, manifest)
    if wrong:
        raise NotQuick(
            f"release {rid} on the host differs from its manifest: " + ", ".join(wrong[:5])
        )
    _tree_checks(target, spec, remove=False)


def _tree_checks(target, spec, remove):
    """The tree checks of releases/<id> (``target``): the first that fails raises NotQuick
    (the release removed first when ``remove``: one made by this call)."""
    for item in spec.get("tree_checks", []):
        try:
            if "db_text" in item:  # a directory of the new release
                bad = _db_text_problems(os.path.join(target, item["db_text"]))
                why = "db_text tables: " + "; ".join(bad[:10]) if bad else ""
            else:
                proc = run(_argv(item), timeout=GATE_TIMEOUT)
                why = "" if proc.returncode == 0 else _tail(proc)
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
        if why:
            # the step by step deploy checks it again and fails there, with its own steps
            if remove:
                shutil.rmtree(target, ignore_errors=True)
            raise NotQuick("{}: {}".format(item["name"], why))


_COLUMN = re.compile(r"\w+\((int|double|string|str|datetime|blob)(,(auto|null))*\)$")
_FIELD_SEP = re.compile(r"(?<!\\):")


def _db_text_problems(db_dir):
    """Kamailio's db_text tables in db_dir as the Kamailio helper's check-tree checks them
    (a header of typed columns, as many fields in every row): the tree check of a change
    of Kamailio's tables only, whose configuration is the running one's byte for byte
    (`kamailio -c` parses the configuration; it does not read the tables)."""
    problems = []
    if not os.path.isdir(db_dir):
        return problems
    for name in sorted(os.listdir(db_dir)):
        path = os.path.join(db_dir, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
        if not lines:
            problems.append(f"{name}: empty table file (no header)")
            continue
        columns = lines[0].split()
        problems += [f"{name}: bad column header {c!r}" for c in columns if not _COLUMN.match(c)]
        for number, line in enumerate(lines[1:], start=2):
            fields = len(_FIELD_SEP.split(line))
            if line.strip() and fields != len(columns):
                problems.append(f"{name}:{number}: {fields} fields, header has {len(columns)}")
    return problems


def _switch(root, spec):
    """Point `current` at releases/<id> as switch.yml does."""
    new = spec["id"]
    link = os.path.join(root, "current")
    tmp_link = os.path.join(root, ".current.new")
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink("releases/" + new, tmp_link)
    os.replace(tmp_link, link)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(os.path.join(root, "history"), "a", encoding="utf-8") as fh:
        fh.write("{} {} {}\n".format(stamp, spec.get("kind") or "deploy", new))


def _file_missing(item):
    """Whether a step's or gate's "if_file" is named and missing (it is then skipped)."""
    return bool(item.get("if_file")) and not os.path.isfile(item["if_file"])


def _skip_step(item):
    """Whether a step need not run: its file is missing ("if_file"), or it applies a
    schema ("schema": {"file", "stamp"}) whose file is byte for byte the one last applied
    with success to a database that is still there (its stamp, written by the helper that
    applied it). A missing or other stamp runs it."""
    if _file_missing(item):
        return True
    schema = item.get("schema")
    return bool(schema) and schema_applied(schema["stamp"], schema["file"])


class _ThreadOutput:
    """sys.stdout or sys.stderr while the gates run in this process: what a gate's thread
    writes goes to that gate's buffer, what any other thread writes to the stream."""

    def __init__(self, stream, local, attr):
        self._stream, self._local, self._attr = stream, local, attr

    def write(self, text):
        buf = getattr(self._local, self._attr, None)
        return (buf if buf is not None else self._stream).write(text)

    def flush(self):
        if getattr(self._local, self._attr, None) is None:
            self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


_OUTPUT = threading.local()
_HELPERS = {}
_HELPERS_LOCK = threading.Lock()


def _helper_module(path):
    """The Python helper at ``path`` (siporch_kamailio.py, ...), imported once."""
    with _HELPERS_LOCK:
        if path not in _HELPERS:
            import importlib.util

            name = "siporch_gate_" + re.sub(r"\W", "_", os.path.basename(path)[:-3])
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _HELPERS[path] = module
        return _HELPERS[path]


class _Ran:
    """What a helper run in this process left: as subprocess.run's result, for _tail."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _run_in_process(argv):
    """``argv`` (a Python helper and its arguments) run by the helper's main() in this
    thread, its output captured: as its own process would exit (0, 1, argparse's 2;
    an exception's traceback on stderr and 1)."""
    import io
    import traceback

    out, err = io.StringIO(), io.StringIO()
    _OUTPUT.stdout, _OUTPUT.stderr = out, err
    try:
        try:
            code = _helper_module(argv[0]).main(argv[1:])
        except SystemExit as exc:
            code = exc.code
            if code is not None and not isinstance(code, int):
                err.write(str(code) + "\n")
                code = 1
        except Exception:
            err.write(traceback.format_exc())
            code = 1
    finally:
        _OUTPUT.stdout = _OUTPUT.stderr = None
    return _Ran(code or 0, out.getvalue(), err.getvalue())


def _gate(item, results):
    tries = max(1, int(item.get("tries", 1)))
    delay = float(item.get("delay", 1))
    started = time.monotonic()
    if _file_missing(item):
        results[item["name"]] = (True, "", time.monotonic() - started)
        return
    proc = None
    for attempt in range(tries):
        if attempt:
            time.sleep(delay)
        try:
            if item.get("in_process"):
                proc = _run_in_process(_argv(item))
            else:
                proc = run(_argv(item), timeout=GATE_TIMEOUT)
        except Exception as exc:
            results[item["name"]] = (False, str(exc), time.monotonic() - started)
            return
        if proc.returncode == 0:
            results[item["name"]] = (True, "", time.monotonic() - started)
            return
    results[item["name"]] = (False, _tail(proc), time.monotonic() - started)


def _gates(gates):
    """The gates, all at once, each in a thread of its own (a Python helper's gate,
    "in_process", runs its main() in that thread; any other gate, its command); each
    retried until it passes or its tries are spent. {name: (passed, output, seconds)}."""
    results = {}
    threads = [threading.Thread(target=_gate, args=(item, results), daemon=True) for item in gates]
    saved = sys.stdout, sys.stderr
    sys.stdout = _ThreadOutput(saved[0], _OUTPUT, "stdout")
    sys.stderr = _ThreadOutput(saved[1], _OUTPUT, "stderr")
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + max(
            [GATE_TIMEOUT * max(1, int(g.get("tries", 1))) for g in gates] or [0]
        )
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.stdout, sys.stderr = saved
    return dict(results)


def main():
    text = globals().get("SPEC_JSON")  # the action's program: the spec in its text
    spec = json.loads(text) if text is not None else json.load(sys.stdin)
    root = spec.get("root") or "/etc/siporch"
    times = {}  # seconds each part took: checks, build, switch, steps (by name)
    started = time.monotonic()
    for item in spec.get("checks", []):
        try:
            proc = run(_argv(item))
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(json.dumps({"quick": False, "why": "{}: {}".format(item["name"], exc)}))
            return 0
        if proc.returncode != 0:
            print(json.dumps({"quick": False, "why": item["name"]}))
            return 0
    times["checks"] = round(time.monotonic() - started, 3)
    switched = False

    def failed(step, reason, why=None):
        why = why or f"{step}: {reason}"
        out = {"quick": True, "switched": switched, "failed": why, "step": step, "reason": reason}
        print(json.dumps(out))
        sys.stderr.write(why + "\n")
        return 1

    if spec.get("switch"):
        started = time.monotonic()
        make = _stored if spec["switch"].get("stored") else _build
        try:
            make(root, spec["switch"])
        except NotQuick as exc:
            print(json.dumps({"quick": False, "why": str(exc)}))
            return 0
        except (OSError, RuntimeError) as exc:
            print(json.dumps({"quick": False, "why": f"making the release: {exc}"}))
            return 0
        try:
            _switch(root, spec["switch"])
        except (OSError, RuntimeError) as exc:
            # where it stopped: the link may point at the new release already
            switched = True
            return failed("switch to {}".format(spec["switch"].get("id")), str(exc))
        switched = True
        times["release made, checked, switched"] = round(time.monotonic() - started, 3)
    skipped = []
    for item in spec.get("steps", []):
        started = time.monotonic()
        if _skip_step(item):
            skipped.append(item["name"])
            continue
        try:
            proc = run(_argv(item), timeout=GATE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return failed(item["name"], str(exc))
        if proc.returncode != 0:
            return failed(item["name"], _tail(proc))
        times[item["name"]] = round(time.monotonic() - started, 3)
    started = time.monotonic()
    results = _gates(spec.get("gates", []))
    times["gates"] = round(time.monotonic() - started, 3)
    bad = [(name, why) for name, (ok, why, _) in results.items() if not ok]
    late = f"no result after {time.monotonic() - started:.0f} s"
    bad += [(g["name"], late) for g in spec.get("gates", []) if g["name"] not in results]
    if bad:
        return failed(
            "; ".join(n for n, _ in bad),
            "; ".join(w for _, w in bad),
            "; ".join("{}: {}".format(*f) for f in bad),
        )
    for rid in spec.get("prune", []):
        if rid and "/" not in rid and rid not in (".", ".."):
            shutil.rmtree(os.path.join(root, "releases", rid), ignore_errors=True)
    print(
        json.dumps(
            {
                "quick": True,
                "switched": switched,
                "gates": {name: round(r[2], 3) for name, r in results.items()},
                "times": times,
                "skipped": skipped,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
