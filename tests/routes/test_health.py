import httpx


async def test_live_and_ready(root_client: httpx.AsyncClient) -> None:
    assert (await root_client.get("/health/live")).json() == {"status": "ok"}
    ready = await root_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
