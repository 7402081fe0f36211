"""Extraction of uploaded files in separate worker processes, bounded in time and memory.

An uploaded file is untrusted input handed to parsers (PDF, DOCX, HTML, JSON) whose time and memory grow with
what the file says, not with its size: a 31 KiB DOCX can inflate to gigabytes. So the server never parses in its
own process. `ExtractPool` keeps up to `extract_workers` processes, each with a pipe, started on first use; one
file at a time goes to an idle worker, which sniffs its type, extracts the text (itself bounded, see
`file_extract`) and counts its tokens. A worker has an address-space cap (`RLIMIT_AS`, `extract_memory_mib`); one
that passes `extract_timeout_s` is killed and replaced, and the file is kept, marked with the reason. The upload
waits at most about twice the timeout: for an idle worker, then for its answer.

    async with ExtractPool.open(settings) as extractor:
        content_type, extracted, tokens = await extractor.inspect(path, name="report.pdf")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from chinwag.config import Settings
from chinwag.errors import UnsupportedMediaType
from chinwag.services.file_extract import Extracted, sniff_content_type

logger = logging.getLogger(__name__)

_KILL_WAIT_S = 5.0
_START_TIMEOUT_S = 60.0


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection


class ExtractPool:
    """Worker processes for file extraction; owned by the app's lifespan (`open`)."""

    def __init__(self, *, workers: int, timeout_s: float, memory_bytes: int) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._size = workers
        # Forked from a clean fork server (no copy of the server's threads, loop or sockets) that has the parsers
        # imported already: a fresh worker is ready in milliseconds, not the second a spawned interpreter takes.
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["chinwag.services.extract_pool", "chinwag.llm.tokens"])
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._started = 0
        self._closed = False
        self._all: set[_Worker] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[ExtractPool]:
        pool = cls(
            workers=settings.extract_workers,
            timeout_s=settings.extract_timeout_s,
            memory_bytes=settings.extract_memory_mib * 1024 * 1024,
        )
        try:
            yield pool
        finally:
            await pool.aclose()

    async def inspect(self, path: Path, *, name: str) -> tuple[str, Extracted, int]:
        """The file's content type (`UnsupportedMediaType` if not allowed), its text (or why not) and tokens."""
        worker = await self._checkout()
        if worker is None:
            return await self._sniff_only(path, name, "the server was too busy extracting other files")
        healthy = False
        try:
            answer = await asyncio.to_thread(self._ask, worker, str(path), name)
            healthy = answer is not None and answer[0] != "crashed"
        finally:
            if healthy:
                self._idle.put_nowait(worker)
            else:
                self._all.discard(worker)
                self._started -= 1  # the next checkout starts a fresh one in its place
                await asyncio.to_thread(_kill, worker)
        if answer is None:
            logger.warning("extraction of %s passed %.0f s: its worker was killed", name, self.timeout_s)
            return await self._sniff_only(path, name, f"extracting its text took longer than {self.timeout_s:g} s")
        kind, *values = answer
        if kind == "unsupported":
            raise UnsupportedMediaType(values[0])
        if kind == "crashed":
            logger.warning("extraction of %s ended its worker: %s", name, values[0])
            return await self._sniff_only(path, name, "extracting its text needed more memory than a file may use")
        content_type, text, error, tokens = values
        return content_type, Extracted(text, error), tokens

    async def _sniff_only(self, path: Path, name: str, why: str) -> tuple[str, Extracted, int]:
        """The file is kept without text: its type comes from its first bytes alone (bounded work, in a thread)."""
        content_type = await asyncio.to_thread(sniff_content_type, path, name=name, parse_json=False)
        return content_type, Extracted(None, f"not read: {why}"), 0

    async def _checkout(self) -> _Worker | None:
        if self._closed:
            raise RuntimeError("the extraction pool is closed")
        if self._idle.empty() and self._started < self._size:
            self._started += 1
            try:
                return await asyncio.to_thread(self._start)
            except BaseException:
                self._started -= 1
                raise
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._idle.get()
        except TimeoutError:
            return None

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_main, args=(child, self.memory_bytes), name="chinwag-extract", daemon=True
        )
        process.start()
        child.close()
        # Not counted in the extraction timeout: a fresh worker loads the tokenizer before it takes a file.
        if not parent.poll(_START_TIMEOUT_S) or parent.recv() != ("ready",):
            process.kill()
            process.join(_KILL_WAIT_S)
            parent.close()
            raise RuntimeError("an extraction worker did not start")
        worker = _Worker(process=process, conn=parent)
        self._all.add(worker)
        return worker

    def _ask(self, worker: _Worker, path: str, name: str) -> tuple[Any, ...] | None:
        """Blocking (in a thread): one request, its answer; None after the timeout; ("crashed", why) if it died."""
        try:
            worker.conn.send((path, name))
            if not worker.conn.poll(self.timeout_s):
                return None
            answer: tuple[Any, ...] = worker.conn.recv()
            return answer
        except (EOFError, OSError) as exc:
            return ("crashed", f"{type(exc).__name__}: the worker died (exit code {worker.process.exitcode})")

    async def aclose(self) -> None:
        self._closed = True
        workers = list(self._all)
        self._all.clear()

        def stop() -> None:
            for worker in workers:
                with contextlib.suppress(Exception):
                    worker.conn.send(None)
            for worker in workers:
                worker.process.join(1.0)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join(_KILL_WAIT_S)
                worker.conn.close()

        await asyncio.to_thread(stop)


def _kill(worker: _Worker) -> None:
    """Blocking: end a worker that timed out or died."""
    with contextlib.suppress(Exception):
        worker.process.kill()
    worker.process.join(_KILL_WAIT_S)
    worker.conn.close()


def worker_main(conn: Connection, memory_bytes: int) -> None:
    """A worker process: cap its address space, then answer requests until told to stop (None) or the pipe ends."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    from chinwag.llm.tokens import TiktokenCounter
    from chinwag.services.file_extract import extract_text, sniff_content_type

    counter = TiktokenCounter()
    counter.count_text("warm up")  # loads the encoding now, not during the first file's time limit
    conn.send(("ready",))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        path, name = request
        try:
            content_type = sniff_content_type(Path(path), name=name)
        except UnsupportedMediaType as exc:
            conn.send(("unsupported", exc.detail))
            continue
        except MemoryError:
            conn.send(("crashed", "out of memory while sniffing the type"))
            continue
        extracted = extract_text(Path(path), content_type)
        tokens = 0
        if extracted.text:
            try:
                tokens = counter.count_text(extracted.text)
            except MemoryError:
                extracted = Extracted(None, "not read: counting its tokens needed more memory than a file may use")
        conn.send(("ok", content_type, extracted.text, extracted.error, tokens))
