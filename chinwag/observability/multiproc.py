"""Prometheus' multi-process mode, chosen by `chinwag serve` before anything imports `prometheus_client` (it reads
`PROMETHEUS_MULTIPROC_DIR` once, at import). This module must never import it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """For `chinwag serve`, before any worker starts: an empty `data_dir/metrics` named in the environment (the
    workers inherit it). Files a previous run left would add its counts to this one's."""
    path = data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def multiprocess_dir() -> str | None:
    """The folder every worker writes its values to, or None (one process: values in memory)."""
    return os.environ.get(MULTIPROC_ENV) or None
