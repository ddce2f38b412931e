"""Hold the controller's deploy lock while the hosts are inspected: no other deploy or
rollback switches them in between."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def exclusive() -> Iterator[None]:
    spec = importlib.util.spec_from_file_location(
        "deploy_lock", REPO / "playbooks" / "files" / "deploy_lock.py"
    )
    assert spec and spec.loader
    lock_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_mod)
    lock = Path("/tmp/siporch-deploy.lock")
    token = lock_mod.acquire(lock, 1200, os.getpid())
    os.environ["SIPORCH_DEPLOY_LOCK"] = token
    try:
        yield
    finally:
        os.environ.pop("SIPORCH_DEPLOY_LOCK", None)
        lock_mod.release(lock, token)
