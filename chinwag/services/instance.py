"""This process's instance id, the owner of its runs in PostgreSQL, kept in the data dir across restarts.

Ids live in `<data_dir>/instances/<n>.id`; a process takes the first file it can lock (`flock`, held as long as it
lives: the kernel drops it when the process dies, even by SIGKILL). A process holding id N therefore knows that any
run still 'running' under N was left by a dead process that held N before it, and ends those at once at start-up
rather than waiting for their lease to expire. Several workers on one data dir take different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_SLOTS = 64


@contextlib.contextmanager
def claim_instance_id(data_dir: Path, *, slots: int = MAX_SLOTS) -> Iterator[str]:
    """Lock the first free id file under `data_dir/instances` and yield its id (made on first use); with every
    file taken, or the data dir not writable, a fresh id that no later process will know."""
    folder = data_dir / "instances"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("no instance ids in %s (%s): runs left by a crash wait for their lease", folder, exc)
        yield uuid.uuid4().hex
        return
    for n in range(slots):
        fd = os.open(folder / f"{n}.id", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            instance_id = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            if not instance_id:
                instance_id = uuid.uuid4().hex
                os.pwrite(fd, instance_id.encode("ascii"), 0)
                os.fsync(fd)
            yield instance_id
        finally:
            os.close(fd)  # drops the lock
        return
    logger.warning("all %d instance ids in %s are taken: runs left by a crash wait for their lease", slots, folder)
    yield uuid.uuid4().hex
