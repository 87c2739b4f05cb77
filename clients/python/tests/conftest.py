"""Starts a real `mend serve` (binary from $MEND_BIN, default <repo>/target/debug/mend) on a
temporary SQLite file and a free port, once for the whole test session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]


def mend_bin() -> str:
    path = os.environ.get("MEND_BIN") or str(REPO / "target" / "debug" / "mend")
    if not Path(path).exists():
        pytest.exit(f"no mend binary at {path}: run `cargo build -p mend-cli` or set MEND_BIN",
                    returncode=2)
    return path


class Server:
    def __init__(self, url: str, proc: subprocess.Popen[str]) -> None:
        self.url = url
        self.proc = proc


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mend")
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(
        [mend_bin(), "serve", "--database", f"sqlite://{tmp}/mend.db", "--bind",
         "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp,
    )
    assert proc.stdout is not None
    url = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].strip()
            break
    if not url:
        proc.kill()
        log.close()
        sys.stderr.write((tmp / "serve.log").read_text())
        pytest.fail("mend serve did not start")
    httpx.get(url + "/readyz", timeout=10).raise_for_status()
    yield Server(url, proc)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def wait_for(check: Callable[[], object], timeout: float = 20.0, every: float = 0.05) -> None:
    """Waits until `check()` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)
