"""Pure renderers: model -> {host: {relative path: bytes}}.

Each daemon module (``kamailio``, ``rtpengine``, ``asterisk``) has
``render(model, host) -> {relpath: text}`` and ``RELOADS``: which reload a changed file
needs. Rendering happens once, on the controller; roles ship the result.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from siporch import gcpause
from siporch.render import files as file_meta

if TYPE_CHECKING:
    from siporch.model.schema import Model

#: Which renderer modules serve which host role, in order.
ROLE_RENDERERS: dict[str, tuple[str, ...]] = {
    "edge": ("kamailio", "rtpengine", "keepalived"),
    "pbx": ("asterisk",),
}


#: Text that several hosts of one release share (e.g. the DID table every edge loads),
#: built once per ``render_release`` call. Outside one, nothing is cached.
_SHARED: ContextVar[dict[str, str] | None] = ContextVar("siporch_render_shared", default=None)


@contextmanager
def _shared_scope() -> Iterator[None]:
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def shared_text(key: str, build: Callable[[], str]) -> str:
    """``build()``, once per release render for each ``key`` (a key must name everything
    the text depends on besides the model)."""
    cache = _SHARED.get()
    if cache is None:
        return build()
    if key not in cache:
        cache[key] = build()
    return cache[key]


#: Where :func:`stored_text` keeps text between renders (``<state>/cache/text``), set by
#: ``render_release(..., store=)``; ``None``: nothing is kept.
_STORE: ContextVar[Path | None] = ContextVar("siporch_render_store", default=None)
#: Entries :func:`stored_text` keeps (the newest by use).
STORE_KEEP = 16


def model_part_json(model: Model, part: str) -> str:
    """``model.<part>`` as JSON (pydantic's JSON mode, every field, defaults included), once
    per release render: the input a :func:`stored_text` key names."""

    def dump() -> str:
        from pydantic import TypeAdapter

        annotation = type(model).model_fields[part].annotation
        assert annotation is not None  # every field of the model is annotated
        return TypeAdapter(annotation).dump_json(getattr(model, part)).decode()

    return shared_text(f"model-json:{part}", dump)


def stored_text(kind: str, inputs: str, build: Callable[[], str]) -> str:
    """``build()``, kept by content between renders (`siporch.cache.cached`): the key hashes
    ``kind``, ``inputs`` (which must hold everything the text depends on besides siporch's
    code and templates) and the hash of siporch's code and templates. A large table that a
    change elsewhere leaves as it was (the DID tables when one trunk's limits change) is
    read back instead of built again. Outside ``render_release(..., store=)``, or when the
    store cannot be read or written, it is built."""
    store = _STORE.get()
    if store is None:
        return build()
    from siporch.cache import cached, code_hash

    h = hashlib.sha256(f"{kind}\0{code_hash()}\0".encode())
    h.update(inputs.encode())
    return cached(store, h.hexdigest(), build, keep=STORE_KEEP)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"siporch.render.{name}")


def render_host(model: Model, host: str) -> dict[str, bytes]:
    """Every file of one host, relative to its release root."""
    files: dict[str, bytes] = {}
    for name in ROLE_RENDERERS[model.hosts[host].role]:
        for path, text in _module(name).render(model, host).items():
            if path in files:
                raise ValueError(f"{name} renders {path} which another renderer also renders")
            files[path] = text.encode("utf-8")
    return dict(sorted(files.items()))


def render_release(model: Model, store: Path | None = None) -> dict[str, dict[str, bytes]]:
    """Every host's files. Same model, same bytes. ``store``: a directory where large
    tables are kept between renders by the hash of their inputs (:func:`stored_text`)."""
    token = _STORE.set(store)
    try:
        with gcpause.paused(), _shared_scope():
            return {host: render_host(model, host) for host in sorted(model.hosts)}
    finally:
        _STORE.reset(token)


def reload_action(role: str, path: str) -> str:
    """The reload a change of ``path`` needs on a host of ``role``."""
    for name in ROLE_RENDERERS[role]:
        for pattern, action in file_meta.RELOADS[name]:
            if fnmatch.fnmatchcase(path, pattern):
                return str(action)
    return "none"


def secret_files(role: str) -> set[str]:
    """Paths that carry secrets (deployed 0640, never shown in diffs)."""
    out: set[str] = set()
    for name in ROLE_RENDERERS[role]:
        out.update(file_meta.SECRET_FILES[name])
    return out
