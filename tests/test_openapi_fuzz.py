"""schemathesis on the app's own OpenAPI: every operation, signed in as a real user with real ids (a session, a
file, an API key of theirs), answers no 5xx, shows no traceback, and conforms to what the schema declares (status,
content type, body). Bounded: a fixed small number of examples per operation, derandomized."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chinwag.config import Settings
from chinwag.main import create_app
from tests.conftest import RunningServer, UserFactory

EXAMPLES_PER_OPERATION = 8
PUBLIC_AUTH = ("register", "login", "refresh", "logout")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(base_url: str, token: str, ids: dict[str, str]) -> list[str]:
    """Run in a thread: the server lives on the test's event loop, which stays free to serve."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the app's own OpenAPI has an invalid operation: {result}"
        operations.append(result.ok())
    # Deleting goes last, so the other operations meet the real resources first.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            for name in list(case.path_parameters or {}):
                if name in ids:
                    case.path_parameters[name] = ids[name]
            response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            assert "Traceback" not in response.text, response.text[:500]
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    return failures


async def test_every_operation_survives_fuzzing(server: RunningServer, user_factory: UserFactory) -> None:
    user = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=30) as client:
        session_id = (await client.post("/sessions", json={"title": "fuzzed"})).json()["id"]
        file_id = (
            await client.post(
                f"/sessions/{session_id}/files", files={"file": ("notes.txt", b"some notes", "text/plain")}
            )
        ).json()["id"]
        key_id = (await client.post("/auth/api-keys", json={"name": "fuzzed"})).json()["id"]
    ids = {"session_id": session_id, "file_id": file_id, "key_id": key_id}
    failures = await asyncio.to_thread(fuzz, server.url, user.access_token, ids)
    assert failures == [], "\n\n".join(failures)


def test_every_route_declares_its_errors_and_the_bearer_scheme(settings: Settings) -> None:
    spec = create_app(settings).openapi()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token (from /auth/login) or an API key (`cw_...`).",
    }
    error_ref = "#/components/schemas/ErrorBody"
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["detail", "code"]
    public = {"/health/live", "/health/ready", "/api/v1/config", "/api/v1/schema/websocket", "/asyncapi.json"}
    public |= {f"/api/v1/auth/{p}" for p in PUBLIC_AUTH}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            if path.startswith("/health"):
                continue
            errors = {code: answer for code, answer in operation["responses"].items() if code >= "400"}
            for code in ("400", "413", "429", "503"):
                assert errors[code]["content"]["application/json"]["schema"]["$ref"] == error_ref, where
            if path not in public:
                assert operation.get("security") == [{"HTTPBearer": []}], where
                assert "401" in errors, where
