"""Shared fixtures of Berth's test suite.

The helpers (the ``BerthServer`` process wrapper, raw HTTP calls, the model
zoo) live in ``tests/e2e/berth_e2e.py``; this file turns them into fixtures
and makes sure every server started by a test is stopped, and its log shown
when a test fails.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

import berth_e2e  # noqa: E402
from berth_e2e import BerthServer, ModelZoo, free_port, start_server  # noqa: E402,F401

# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> ModelZoo:
    """Framework models trained once per session (see ``berth_e2e.ModelZoo``)."""
    return ModelZoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def berth_server(tmp_path: Path) -> Iterator[Callable[..., BerthServer]]:
    """A factory: ``berth_server(target, *flags, wait_for=..., env=...)``
    starts ``berth serve`` for the current test; every server it started is
    stopped at teardown (SIGTERM, then SIGKILL of the process group)."""
    started: list[BerthServer] = []

    def start(target: Any, *flags: str, **kw: Any) -> BerthServer:
        kw.setdefault("label", f"berth{len(started)}")
        server = start_server(target, tmp_path / "servers", *flags, **kw)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., BerthServer]]:
    """Like ``berth_server`` but the servers live for the whole module."""
    started: list[BerthServer] = []
    workdir = tmp_path_factory.mktemp("module-servers")

    def start(target: Any, *flags: str, **kw: Any) -> BerthServer:
        kw.setdefault("label", f"berth{len(started)}")
        server = start_server(target, workdir, *flags, **kw)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


# -------------------------------------------------------------------- hooks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: takes more than ~20 s on a 2-core machine, e.g. builds or compiles "
        "(deselect with -m 'not slow')",
    )
    config.addinivalue_line("markers", "unit: in tests/unit, no server (applied by folder)")
    config.addinivalue_line("markers", "e2e: in tests/e2e, a real server over real sockets (applied by folder)")
    config.addinivalue_line(
        "markers",
        "smoke: a few end-to-end tests that together cover REST JSON and binary tensors, "
        "gRPC, metrics and a crashing worker (`make test-fast` runs them with the unit tests)",
    )


_FOLDER_MARKS = {"unit": pytest.mark.unit, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test `unit` or `e2e` by the folder it lives in, so that
    `-m unit` and `-m e2e` select by folder without a mark in each file."""
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = item.path.resolve().relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        mark = _FOLDER_MARKS.get(folder)
        if mark is not None:
            item.add_marker(mark)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED_AT] = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    since = item.stash.get(_STARTED_AT, 0.0)
    for server in berth_e2e.ALL_SERVERS:
        # Servers alive during this test: still open, or closed after it began.
        relevant = server.closed_at is None or server.closed_at >= since
        if relevant:
            rc = server.proc.poll() if server.proc else None
            state = "running" if rc is None else f"exited {rc}"
            report.sections.append(
                (
                    f"berth server log (port {server.port}, pid {server.proc.pid if server.proc else '?'}, {state})",
                    server.log_tail(),
                )
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    berth_e2e.close_all_servers()


_STARTED_AT = pytest.StashKey[float]()
