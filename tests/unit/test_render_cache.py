"""The controller's cache (siporch.cache) and hard-linked releases (siporch.release).

A cached run must produce exactly what an uncached one does; any change of an input
must reach the output; releases store a file unchanged since the previous release once.
"""

from __future__ import annotations

import difflib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from siporch import cache
from siporch.core import _unified
from siporch.model import load_model
from siporch.release import build_release, state_dir

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example"
MODEL = Path("group_vars") / "all" / "siporch.yml"


@pytest.fixture
def inv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example inventory (with its vault password) in a project of its own."""
    monkeypatch.delenv("SIPORCH_STATE", raising=False)
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    shutil.copytree(EXAMPLE, tmp_path / "inv")
    shutil.copy(EXAMPLE.parent / ".vault-pass", tmp_path / ".vault-pass")
    return tmp_path / "inv"


def tree(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p == root / "manifest.json":  # the only file with the time of writing
                m = json.loads(data)
                m.pop("created")
                data = json.dumps(m, sort_keys=True).encode()
            out[str(p.relative_to(root))] = data
    return out


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode for p in root.rglob("*")}


def change_trunk(inv: Path) -> None:
    path = inv / MODEL
    text = path.read_text()
    assert "max_channels: 60" in text
    path.write_text(text.replace("max_channels: 60", "max_channels: 61", 1))


def test_cached_release_is_byte_identical_to_uncached(
    inv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, "0")
    plain = build_release(load_model(inv), tmp_path / "plain", "r1")
    assert not (state_dir(inv) / "cache").exists()
    monkeypatch.delenv(cache.CACHE_ENV)
    cold = build_release(cache.load_model(inv), tmp_path / "cold", "r1")  # fills the cache
    assert sorted(p.name for p in (state_dir(inv) / "cache").iterdir()) == [
        "model", "render", "sanitized", "text"
    ]  # fmt: skip
    warm_loaded = cache.load_model(inv)
    assert type(warm_loaded).__name__ == "CachedLoadedModel"
    warm = build_release(warm_loaded, tmp_path / "warm", "r1")  # everything from the cache
    assert tree(plain.path) == tree(cold.path) == tree(warm.path)
    assert modes(plain.path) == modes(cold.path) == modes(warm.path)
    assert warm_loaded.model_hash == load_model(inv).model_hash
    assert warm_loaded.model == load_model(inv).model  # read from the cache on first use


def test_any_input_change_reaches_the_output(inv: Path, tmp_path: Path) -> None:
    first = cache.load_model(inv)
    change_trunk(inv)
    second = cache.load_model(inv)
    assert second.model_hash != first.model_hash
    assert second.model_hash == load_model(inv).model_hash
    assert any(t.max_channels == 61 for t in second.model.trunks.values())
    a = build_release(first, tmp_path / "a", "r1")
    b = build_release(second, tmp_path / "b", "r1")
    assert tree(a.path) != tree(b.path)


def test_key_covers_vault_password_environment_and_code(
    inv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_dir(inv)
    password = inv.parent / ".vault-pass"
    key = cache.model_key((inv,), password, None, state)
    assert key is not None and key == cache.model_key((inv,), password, None, state)
    password.write_text(password.read_text() + "x")
    assert cache.model_key((inv,), password, None, state) != key
    monkeypatch.setenv("ANSIBLE_JINJA2_NATIVE", "1")
    assert cache.model_key((inv,), password, None, state) not in (key, None)
    assert cache.model_key((inv,), password, {"edge": "x"}, state) != cache.model_key(
        (inv,), password, None, state
    )
    assert cache.render_key("a" * 64) != cache.render_key("b" * 64)


@pytest.mark.parametrize(
    "template",
    ["{{ lookup('env', 'HOME') }}", "{{ now() }}", "{% if true %}x{% endif %}", "{{ a | b }}"],
)
def test_templates_reading_elsewhere_are_never_cached(inv: Path, template: str) -> None:
    (inv / "group_vars" / "all" / "extra.yml").write_text(f'extra: "{template}"\n')
    assert cache.model_key((inv,), None, None, state_dir(inv)) is None


def test_executable_inventory_file_is_never_cached(inv: Path) -> None:
    script = inv / "dynamic.sh"
    script.write_text("#!/bin/sh\necho '{}'\n")
    script.chmod(0o755)
    assert cache.model_key((inv,), None, None, state_dir(inv)) is None


def test_damaged_entry_is_rebuilt(inv: Path) -> None:
    cache.load_model(inv)
    for entry in (state_dir(inv) / "cache" / "model").glob("*.pickle"):
        entry.write_bytes(b"not a pickle")
    loaded = cache.load_model(inv)
    assert loaded.model == load_model(inv).model


def test_stored_tables_follow_their_inputs(inv: Path, tmp_path: Path) -> None:
    """The DID tables kept between renders (siporch.render.stored_text): a render with the
    store is byte for byte the render without, after each change of what the tables are
    computed from (a range, a destination, a DID added or removed, the trunks' ids, a PBX
    group's hosts), whether the entry was there before or not; a change elsewhere (a trunk's
    channel limit) reads them back."""
    import dataclasses

    from siporch.render import render_release
    from siporch.render.asterisk import DidView

    # the PBX's DIDs are kept as these fields, in this order
    assert [f.name for f in dataclasses.fields(DidView)] == [
        "name", "comment", "context", "patterns", "regex"
    ]  # fmt: skip
    store = tmp_path / "store"
    model = load_model(inv).model
    pbx = next(n for n, h in model.hosts.items() if h.role == "pbx")

    def same(m: object) -> None:
        for _ in range(2):  # the first may build the entries, the second reads them
            assert render_release(m, store=store) == render_release(m)  # type: ignore[arg-type]

    same(model)
    kept = sorted(store.iterdir())
    assert len(kept) == 3  # the edges' table (shared) and each PBX's DIDs
    trunk = next(iter(model.trunks))
    limits = model.model_copy(
        update={
            "trunks": {
                **model.trunks,
                trunk: model.trunks[trunk].model_copy(update={"max_channels": 7}),
            }
        }
    )
    same(limits)
    assert sorted(store.iterdir()) == kept  # read back, not built again
    first = model.inbound[0]
    assert first.range is not None
    moved = first.model_copy(
        update={"range": first.range.model_copy(update={"end": first.range.end[:-1] + "8"})}
    )
    same(model.model_copy(update={"inbound": [moved, *model.inbound[1:]]}))
    to_trunk = first.model_copy(update={"destination": model.inbound[1].destination.model_copy()})
    same(model.model_copy(update={"inbound": [to_trunk, *model.inbound[1:]]}))
    same(model.model_copy(update={"inbound": model.inbound[1:]}))
    same(model.model_copy(update={"inbound": [*model.inbound, moved]}))
    renumbered = {
        n: t.model_copy(update={"id": 900 + i}) for i, (n, t) in enumerate(model.trunks.items())
    }
    same(model.model_copy(update={"trunks": renumbered}))
    groups = {g: grp.model_copy(update={"hosts": [pbx]}) for g, grp in model.pbx_groups.items()}
    same(model.model_copy(update={"pbx_groups": groups}))
    for entry in store.iterdir():  # private, as the rest of the cache
        assert entry.stat().st_mode & 0o077 == 0


def test_a_release_that_keeps_the_numbering_keeps_the_cached_model(inv: Path) -> None:
    """The first release of an inventory records its trunk ids: the model loaded before it
    is still the model (the same ids), so the next command reads it from the cache; ids
    that the releases (here: the hosts) give otherwise are never served from an entry made
    with others."""
    from siporch.model.numbering import trunk_ids
    from siporch.release import ids_from_hosts

    first = cache.load_model(inv)
    build_release(first)  # the first release, in the inventory's state directory
    again = cache.load_model(inv)
    assert type(again).__name__ == "CachedLoadedModel"
    assert again.model_hash == first.model_hash
    plain = dict(again.facts.trunk_ids)
    free = sorted(n for n, t in load_model(inv).model.trunks.items() if t.id is None)
    assert len(free) >= 2
    swapped = {free[0]: plain[free[1]], free[1]: plain[free[0]]}  # what the hosts run
    with ids_from_hosts(swapped):
        cached = cache.load_model(inv)
        fresh = load_model(inv)
        assert cached.facts.trunk_ids == trunk_ids(fresh.model) != plain
        assert cached.model_hash == fresh.model_hash
        assert cached.model == fresh.model
    back = cache.load_model(inv)
    assert back.facts.trunk_ids == plain and back.model_hash == first.model_hash


def test_cache_directory_is_private(inv: Path, tmp_path: Path) -> None:
    build_release(cache.load_model(inv), tmp_path / "out", "r1")
    root = state_dir(inv) / "cache"
    assert root.stat().st_mode & 0o777 == 0o700
    for p in root.rglob("*"):
        assert p.stat().st_mode & 0o077 == 0, p


def test_facts_of_a_cached_model_are_the_models(inv: Path) -> None:
    cache.load_model(inv)
    warm = cache.load_model(inv)
    assert warm.facts == cache.facts_of(load_model(inv).model)
    assert warm._model is None  # the facts did not read the model


def test_releases_hard_link_unchanged_files(inv: Path, tmp_path: Path) -> None:
    out = tmp_path / "releases"
    first = build_release(cache.load_model(inv), out, "r1")
    change_trunk(inv)
    second = build_release(cache.load_model(inv), out, "r2")
    linked, written = [], []
    for p in sorted(second.path.rglob("*")):
        rel = p.relative_to(second.path)
        if not p.is_file() or rel.name == "manifest.json" or str(rel) == "model.json":
            continue
        old = first.path / rel
        same = old.exists() and old.stat().st_ino == p.stat().st_ino
        (linked if same else written).append(str(rel))
        if same:
            assert old.read_bytes() == p.read_bytes()
        else:
            assert not old.exists() or old.read_bytes() != p.read_bytes()
    assert linked and written  # a one-trunk change rewrites few files
    assert len(written) < len(linked)
    secret = second.path / "pbx-central" / "asterisk" / "pjsip_siporch.conf"
    assert secret.stat().st_mode & 0o777 == 0o600
    # a release without its predecessor keeps every file (pruning unlinks one name)
    uncached = tree(second.path)
    shutil.rmtree(first.path)
    assert tree(second.path) == uncached


def test_cli_validate_render_diff_with_and_without_cache(inv: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SIPORCH_STATE", None)

    def run(*args: str, cached: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "siporch", *args, "-i", str(inv)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, cache.CACHE_ENV: "1" if cached else "0"},
            check=False,
        )

    outputs = {}
    for cached in (False, True, True):
        v = run("validate", "--json", cached=cached)
        assert v.returncode == 0, v.stderr
        outputs.setdefault("validate", set()).add(v.stdout)
    assert len(outputs["validate"]) == 1
    r = run("render", "--json")
    rid = json.loads(r.stdout)["id"]
    for cached in (False, True):
        d = run("diff", "--against", rid, cached=cached)
        assert d.returncode == 0 and "no changes" in d.stdout, d.stdout + d.stderr
    change_trunk(inv)
    changed = [run("diff", "--against", rid, cached=c) for c in (False, True, True)]
    assert {d.returncode for d in changed} == {1}
    assert len({d.stdout for d in changed}) == 1
    assert "+++ candidate/" in changed[0].stdout


# ------------------------------------------------------------- diffs of large tables


def _apply(a: list[str], diff: str) -> list[str]:
    """``a`` patched with a unified diff (checking every context and removed line)."""
    lines = diff.splitlines(keepends=True)[2:]
    out: list[str] = []
    pos = i = 0
    while i < len(lines):
        m = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", lines[i])
        assert m, lines[i]
        start = int(m.group(1)) - 1 if int(m.group(2) or 1) else int(m.group(1))
        out += a[pos:start]
        pos, i = start, i + 1
        while i < len(lines) and not lines[i].startswith("@@"):
            kind, body = lines[i][0], lines[i][1:]
            if kind in " -":
                assert a[pos] == body
                pos += 1
            if kind in " +":
                out.append(body)
            i += 1
    return out + a[pos:]


def test_unified_diff_is_a_valid_patch() -> None:
    rng = random.Random(13)
    for _ in range(2000):
        a = [f"l{rng.randint(0, 8)}\n" for _ in range(rng.randint(0, 60))]
        b = list(a)
        for _ in range(rng.randint(0, 5)):
            k = rng.randint(0, len(b))
            op = rng.choice("idr")
            if op == "i":
                b.insert(k, f"x{rng.randint(0, 8)}\n")
            elif k < len(b):
                if op == "d":
                    del b[k]
                else:
                    b[k] = f"l{rng.randint(0, 8)}\n"
        text = "".join(_unified(a, b, "old/f", "new/f"))
        assert (text == "") == (a == b)
        if a != b:
            assert text.startswith("--- old/f\n+++ new/f\n@@ ")
            assert _apply(a, text) == b


def test_unified_diff_of_a_large_table_is_difflibs() -> None:
    a = [f"{i}:trunk-{i:05d}:30\n" for i in range(100_000)]
    b = list(a)
    b[54_321] = "54321:trunk-54321:31\n"
    text = "".join(_unified(a, b, "o", "n"))  # compares 7 lines, not 100,000
    assert text == "".join(
        difflib.unified_diff(a[54_000:55_000], b[54_000:55_000], "o", "n")
    ).replace("@@ -319,7 +319,7 @@", "@@ -54319,7 +54319,7 @@")


def test_secret_values_are_every_secret_of_the_schema(inv: Path) -> None:
    from pydantic import BaseModel, SecretStr

    from siporch.core import model_secrets
    from siporch.model.schema import Model

    found: set[str] = set()

    def visit(cls: type[BaseModel], seen: set[type]) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for name, f in cls.model_fields.items():
            for tp in _types(f.annotation):
                if tp is SecretStr:
                    found.add(f"{cls.__name__}.{name}")
                elif isinstance(tp, type) and issubclass(tp, BaseModel):
                    visit(tp, seen)

    visit(Model, set())
    # the fields cache.secret_values (and model_hash) read: a new secret field needs both
    assert found == {
        "Ami.secret",
        "RegisterAuth.password",
        "OutboundCredentials.password",
        "RecordsPostgresql.password",
    }
    model = load_model(inv).model
    assert set(cache.secret_values(model)) == set(model_secrets(model))
    assert cache.secret_values(model)


def _types(tp: object) -> list[object]:
    import typing

    args = typing.get_args(tp)
    return [tp] if not args else [t for a in args for t in _types(a)]


# ------------------------------------------- the cached path and what sends it back


def _reencrypt_vault(inv: Path) -> None:
    """vault.yml encrypted again with the same password (same secrets, other bytes)."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    path = inv / "group_vars" / "all" / "vault.yml"
    secret = VaultSecret((inv.parent / ".vault-pass").read_bytes().strip())
    lib = VaultLib([("default", secret)])
    plain = lib.decrypt(path.read_bytes())
    path.write_bytes(lib.encrypt(plain, secret))


def _group_vars_file(inv: Path) -> None:
    (inv / "group_vars" / "siporch_edge.yml").write_text("edge_note: kept by the operator\n")


def _host_vars_file(inv: Path) -> None:
    (inv / "host_vars").mkdir(exist_ok=True)
    (inv / "host_vars" / "edge-1.yml").write_text("host_note: 1\n")


def _model_file(inv: Path) -> None:
    change_trunk(inv)


def _vault_password(inv: Path) -> None:
    password = inv.parent / ".vault-pass"  # a wrong one: the full read must say so
    password.write_text(password.read_text().strip() + "x\n")


CHANGES = {
    "model file": _model_file,
    "vault file": _reencrypt_vault,
    "vault password file": _vault_password,
    "group_vars file": _group_vars_file,
    "host_vars file": _host_vars_file,
}


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Each full read of an inventory (loader.load_model) from now on, one entry each."""
    from siporch.model import loader

    reads: list[object] = []
    real = loader.load_model

    def counted(*args: object, **kwargs: object) -> object:
        reads.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "load_model", counted)
    return reads


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_the_cached_path_falls_back_when_an_inventory_input_changes(
    inv: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged inventory is answered from the cache without reading the model; any
    change of a file Ansible reads for it (the model, the vault, its password file, a
    group_vars or host_vars file) reads the inventory again."""
    from siporch.errors import ModelError
    from siporch.model import loader

    real = loader.load_model
    reads = _count_reads(monkeypatch)
    cache.load_model(inv)
    assert len(reads) == 1
    hit = cache.load_model(inv)
    assert type(hit).__name__ == "CachedLoadedModel" and len(reads) == 1
    CHANGES[change](inv)
    if change == "vault password file":
        with pytest.raises(ModelError):
            cache.load_model(inv)
        assert len(reads) == 2
        return
    again = cache.load_model(inv)
    assert len(reads) == 2, "a changed input must be read again"
    monkeypatch.setenv(cache.CACHE_ENV, "0")
    assert again.model_hash == real(inv).model_hash
    assert cache.load_model(inv).model_hash == again.model_hash


@pytest.mark.parametrize("change", ["version", "template", "code"])
def test_the_cached_path_falls_back_when_siporch_changes(
    inv: Path, change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another siporch version, template or source file: the model is read again and
    every host rendered again (the cache's keys hash all three)."""
    from siporch import resources
    from siporch.release import cached_render

    templates = tmp_path / "templates"
    shutil.copytree(resources.templates_dir(), templates)
    monkeypatch.setattr(resources, "templates_dir", lambda: templates)
    cache.code_hash.cache_clear()
    try:
        first = cache.load_model(inv)
        files = cached_render(first)
        assert type(cache.load_model(inv)).__name__ == "CachedLoadedModel"
        before = (cache.code_hash(), cache.render_key(first.model_hash))
        if change == "version":
            monkeypatch.setattr(cache, "__version__", cache.__version__ + ".post1")
        elif change == "template":
            some = sorted(p for p in templates.rglob("*") if p.is_file())[0]
            some.write_bytes(some.read_bytes() + b"\n")
        else:  # a source file of siporch: a copy of the package with one file changed
            monkeypatch.setattr(cache, "__file__", str(_copy_of_siporch(tmp_path) / "cache.py"))
        cache.code_hash.cache_clear()
        assert cache.code_hash() != before[0]
        assert cache.render_key(first.model_hash) != before[1]
        reads = _count_reads(monkeypatch)
        again = cache.load_model(inv)
        assert len(reads) == 1, "another siporch must read the inventory again"
        assert again.model_hash == first.model_hash
        assert cached_render(again) == files  # rendered again: same model, same templates
    finally:
        cache.code_hash.cache_clear()


def _copy_of_siporch(tmp_path: Path) -> Path:
    """A copy of siporch's sources with one file changed."""
    src = Path(cache.__file__).resolve().parent
    dest = tmp_path / "siporch-copy" / "siporch"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "errors.py").write_text((dest / "errors.py").read_text() + "\n# changed\n")
    return dest


def test_an_unchanged_diff_reads_no_model(inv: Path) -> None:
    """``diff`` of an unchanged inventory answers from the cache: it imports neither the
    schema (pydantic), ansible-core nor the renderers (Jinja), and says what the full
    path says."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SIPORCH_STATE", None)
    script = (
        "import json, sys\n"
        "from siporch.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'ansible', 'jinja2') or m in ('siporch.model.schema', "
        "'siporch.model.loader', 'siporch.render.kamailio', 'siporch.render.asterisk'))\n"
        "print(json.dumps([code, heavy]), file=sys.stderr)\n"
    )

    def run(*args: str, cached: bool = True) -> tuple[str, int, list[str]]:
        done = subprocess.run(
            [sys.executable, "-c", script, *args, "-i", str(inv)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, cache.CACHE_ENV: "1" if cached else "0"},
            check=False,
        )
        code, heavy = json.loads(done.stderr.strip().splitlines()[-1])
        return done.stdout, code, heavy

    out, _, _ = run("render", "--json")
    rid = json.loads(out)["id"]
    uncached = run("diff", "--against", rid, cached=False)
    assert uncached[1] == 0 and "no changes" in uncached[0]
    for args in (["diff", "--against", rid], ["diff", "--against", rid, "--json"]):
        full = run(*args, cached=False)
        fast = run(*args)
        assert fast[:2] == full[:2]
        assert fast[2] == [], f"{args}: imported {fast[2]}"
    change_trunk(inv)
    changed = run("diff", "--against", rid)
    assert changed[1] == 1 and "+++ candidate/" in changed[0]
    assert changed[:2] == run("diff", "--against", rid, cached=False)[:2]
