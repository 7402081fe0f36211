"""`/metrics` of `chinwag serve --workers 2`: whichever worker answers the scrape reports every worker's counts."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.routes.process_support import chinwag_serve


async def _scrape(port: int) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
        return (await c.get("/metrics")).text


def _count(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_two_workers_report_one_sum(database_dsn: str, redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {
        "CHINWAG_DATABASE_URL": database_dsn,
        "CHINWAG_REDIS_URL": redis_url,
        "CHINWAG_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "CHINWAG_METRICS": "true",
    }
    stale = data_dir / "metrics"
    stale.mkdir(parents=True)
    (stale / "counter_99999999.db").write_bytes(b"left by an earlier run")
    # A generous wait for two workers to start on a loaded machine: not a speed check.
    async with chinwag_serve(port=port, data_dir=data_dir, env=env, args=["--workers", "2"], start_timeout_s=240):
        assert not (stale / "counter_99999999.db").exists()  # emptied at start
        # Both workers are up once the pools of two report (each samples its own at start).
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c, asyncio.timeout(240):
            while _count((await c.get("/metrics")).text, "chinwag_db_pool_connections", state="max") != 20:
                await asyncio.sleep(0.2)
        before = _count((await _scrape(port)), "chinwag_http_requests_total", route="/api/v1/config", status="200")
        assert before == 0
        sent = 40
        # New connections each time, so both workers take some of them.
        for _ in range(sent):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                assert (await c.get("/api/v1/config")).status_code == 200
        for _ in range(3):  # several scrapes, likely answered by different workers: each sees the whole sum
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                text = (await c.get("/metrics")).text
            assert _count(text, "chinwag_http_requests_total", route="/api/v1/config", status="200") == sent
    assert any(stale.iterdir())  # the workers wrote their values there
