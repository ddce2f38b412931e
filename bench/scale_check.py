"""Render a generated model of N trunks and check the edge with the real ``kamailio -c``.

    python bench/scale_check.py --trunks 100000 [--out DIR]

The model is validated straight from data (``Model.model_validate``, as
``bench/genmodel.py`` builds it), not read through ansible-core: at 100,000 trunks the
Ansible reader alone needs more memory than a shared 24 GB machine should give one
benchmark. Prints the time of each step, peak RSS, the shared and private memory sizes
computed from the edge's tables (``kamailio.env``), each table's rows, and the result of
``kamailio -c -m SHM -M PKG`` on the rendered edge-central tree (``-c`` parses the
configuration and loads the modules; it does not load the tables).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.genmodel import generate  # noqa: E402
from siporch.model.schema import Model  # noqa: E402
from siporch.render import render_release  # noqa: E402
from siporch.render.kamailio import render as render_edge  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trunks", type=int, default=100_000)
    ap.add_argument("--out", type=Path, help="Keep the edge tree here (default: a temp dir).")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="siporch-scale-"))
    t = time.perf_counter()
    data = generate(args.trunks)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    model = Model.model_validate(data)
    t_val = time.perf_counter() - t
    t = time.perf_counter()
    files = render_release(model)
    t_render = time.perf_counter() - t
    root = out / "edge-central"
    edge = render_edge(model, "edge-central", root=str(root))  # tables read from here
    for rel, text in edge.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "run").mkdir(exist_ok=True)
    env = dict(line.split("=", 1) for line in edge["kamailio/kamailio.env"].split())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mb = sum(len(b) for h in files.values() for b in h.values()) / 1e6
    print(f"trunks: {args.trunks:,}")
    print(f"generate {t_gen:.1f} s, validate {t_val:.1f} s, render (all hosts) {t_render:.1f} s")
    print(f"rendered: {mb:.0f} MB; peak RSS {peak:.0f} MB")
    print(f"kamailio.env: SHM_MB={env['SHM_MB']} PKG_MB={env['PKG_MB']}")
    rows = {p.rsplit("/", 1)[1]: t.count("\n") - 1 for p, t in edge.items() if "/db/" in p}
    print("rows:", ", ".join(f"{k} {v:,}" for k, v in sorted(rows.items())))
    kamailio = shutil.which("kamailio")
    if kamailio is None:
        print("kamailio -c: not run (kamailio is not installed)")
        return 0
    cmd = [kamailio, "-c", "-f", str(root / "kamailio" / "kamailio.cfg")]
    cmd += ["-m", env["SHM_MB"], "-M", env["PKG_MB"]]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    ok = done.returncode == 0 and "config file ok" in done.stdout + done.stderr
    took = time.perf_counter() - t
    print(
        f"kamailio -c -m {env['SHM_MB']} -M {env['PKG_MB']}: {'ok' if ok else 'FAILED'} ({took:.1f} s)"
    )
    if not ok:
        print((done.stdout + done.stderr)[-3000:])
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
