"""Where chinwag's server spends its CPU on the hot path, as text: `python -m bench.profile`.

Starts the bench's fake model server and `chinwag serve` (scratch database, as `bench.stream` does), samples the
server with py-spy (`pip install py-spy` into the venv; on Linux it needs ptrace, which root has) while clients
stream answers as fast as the fake sends them, and prints the functions with the most self time (a function's own
samples, not its callees', counting only samples that hold the GIL), and the same grouped by package. Proportions,
not absolute times: on a loaded machine they still say where the time goes.

    python -m bench.profile [--api chat_completions|responses] [--streams 4] [--tokens 500] [--rounds 6]
        [--seconds 20] [--top 25] [--turns 0]

`--turns N` first gives each session N earlier exchanges, to profile what a long history costs per message.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop

from bench._stream_chinwag import scratch_database, sign_in, start_chinwag
from bench._stream_client import open_socket, send_message
from bench._stream_common import children, free_port
from bench._stream_floors import set_default_reply


def _self_times(raw: str) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """From py-spy's raw (collapsed) stacks: samples per innermost frame, and per package of that frame."""
    by_function: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frame = stack.split(";")[-1]
        samples = int(count)
        total += samples
        by_function[frame] += samples
        by_package[_package(frame)] += samples
    return by_function, by_package, total


def _package(frame: str) -> str:
    """`send_text (starlette/websockets.py:161)` -> `starlette`; chinwag's own modules by module."""
    where = frame[frame.rfind("(") + 1 :].rstrip(")")
    path = where.split(":")[0]
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0]
    if "/chinwag/" in path:
        return "chinwag/" + path.split("/chinwag/")[-1]
    if "/lib/python" in path:
        return "stdlib/" + path.split("/")[-1]
    return path


async def _drive(args: argparse.Namespace, log_dir: Path) -> str:
    with children(log_dir) as kids:
        port = free_port()
        fake = kids.start("fake", ["-m", "bench._stream_fake", "--port", str(port)], port=port, ready_path="/v1/models")
        async with scratch_database() as dsn:
            server = start_chinwag(kids, database_url=dsn, fake=fake, data_dir=log_dir / "data", api=args.api)
            try:
                api = await sign_in(server)
                sessions = await api.create_sessions(args.streams)
                sockets = [await open_socket(api.ws_url(s)) for s in sessions]
                await set_default_reply(fake.url, tokens=10, delay=0.0)
                for turn in range(args.turns):
                    await asyncio.gather(
                        *(send_message(ws, f"earlier {turn}", protocol="chinwag", timeout=60) for ws in sockets)
                    )
                await set_default_reply(fake.url, tokens=args.tokens, delay=0.0)
                # A warm-up round: models validated for the first time build their schemas, once per process.
                await asyncio.gather(*(send_message(ws, "warm-up", protocol="chinwag", timeout=120) for ws in sockets))
                out = log_dir / "profile.txt"
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--pid",
                        str(server.popen.pid),
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "--gil",  # samples holding the GIL: Python at work, not threads or the loop waiting
                        "--duration",
                        str(args.seconds),
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    await asyncio.sleep(1.0)  # py-spy attaches
                    for round_ in range(args.rounds):
                        if spy.poll() is not None:
                            break
                        await asyncio.gather(
                            *(send_message(ws, f"profile {round_}", protocol="chinwag", timeout=120) for ws in sockets)
                        )
                finally:
                    spy.wait(timeout=args.seconds + 30)
                for ws in sockets:
                    await ws.close()
                return out.read_text() if out.exists() else ""
            finally:
                kids.stop(server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="py-spy profile of chinwag's streaming hot path, as text.")
    parser.add_argument("--api", default="chat_completions", choices=["chat_completions", "responses"])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--turns", type=int, default=0)
    args = parser.parse_args(argv)
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        parser.error("py-spy is not installed in this environment (pip install py-spy)")
    with tempfile.TemporaryDirectory(prefix="chinwag-profile-") as tmp:
        raw = uvloop.run(_drive(args, Path(tmp)))
    by_function, by_package, total = _self_times(raw)
    if not total:
        print("no samples (py-spy could not attach?)")
        return
    print(f"{total} samples; self time, top {args.top} functions:\n")
    print("| share | function |\n| --- | --- |")
    for frame, samples in by_function.most_common(args.top):
        print(f"| {samples / total:.1%} | `{frame}` |")
    print("\nself time by package (chinwag by module):\n")
    print("| share | package |\n| --- | --- |")
    for package, samples in by_package.most_common(15):
        print(f"| {samples / total:.1%} | {package} |")


if __name__ == "__main__":
    main()
