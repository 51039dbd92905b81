"""dk-web's API against its own OpenAPI document, with schemathesis.

The fixture (tools/examples/web-fixture.rs) runs dk-web with three real agents and
prints an API token of ann's for its two sites (`TOKEN dkt_…`, before its `URL` line). Schemathesis reads
the document dk-web serves (/api/v1/openapi.json), generates requests from it and
checks every answer: documented status, content type, headers and body schema, no
5xx, and that the token is really needed (each operation is also sent without it).

Only the reading operations and `stop` (no body; generated ids are unknown: 404)
run here: generated deploy and rollback bodies would start hundreds of real
rollouts, each waiting a discovery window, and fight over the agents' locks for
minutes. Their answers (202, 400, 403, 404, 409, 413) are checked against the same
document by core/tests/web_api.rs, one real rollout each.

Examples are bounded (DK_API_EXAMPLES, default 15 per operation) to stay under a minute.
"""
import os
import re
import subprocess

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

FIXTURE = os.environ.get("DK_WEB_FIXTURE", "target/debug/examples/web-fixture")
EXAMPLES = int(os.environ.get("DK_API_EXAMPLES", "15"))

@pytest.fixture(scope="session")
def fixture():
    proc = subprocess.Popen([FIXTURE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = {}
        while "URL" not in info:  # `KEY VALUE` lines, URL last
            line = proc.stdout.readline()
            assert line, f"the fixture exited ({proc.wait()}) before its URL line; it said {info}"
            key, _, value = line.strip().partition(" ")
            info[key] = value
        assert re.match(r"http://\S+$", info["URL"]) and re.match(r"dkt_\S+$", info.get("TOKEN", "")), "the fixture prints TOKEN and URL lines"
        yield {"url": info["URL"], "token": info["TOKEN"]}
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def api_schema(fixture):
    return schemathesis.openapi.from_url(fixture["url"] + "/api/v1/openapi.json")


def operations(schema):
    """The operations to exercise: every GET, and stop."""
    ops = [r.ok() for r in schema.get_all_operations()]
    return [op for op in ops if op.method.upper() == "GET" or op.path == "/deploys/{id}/stop"]


def test_every_answer_conforms_to_the_document(api_schema, fixture):
    # Hypothesis drives each operation directly (schemathesis's lazy pytest plugin
    # needs pytest < 9): a failure names the operation and the request to replay.
    headers = {"Authorization": "Bearer " + fixture["token"]}
    ops = operations(api_schema)
    # Every GET but the document itself (schemathesis leaves the schema's own URL out), and stop.
    assert len(ops) == 9, " ".join(sorted(f"{op.method} {op.path}" for op in ops))
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def conforms(case):
            case.call_and_validate(headers=headers)

        try:
            conforms()
        except Exception as e:
            raise AssertionError(f"{op.method.upper()} {op.path}: {e}") from e


def test_the_document_describes_every_operation_with_bearer_auth(api_schema):
    raw = api_schema.raw_schema
    assert raw["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": raw["components"]["securitySchemes"]["bearerAuth"]["bearerFormat"]}
    ops = {(m.upper(), p) for p, item in raw["paths"].items() for m in item}
    assert len(ops) == 12, ops
    for path, item in raw["paths"].items():
        for method, op in item.items():
            assert op["responses"], (method, path)
            if path != "/openapi.json":
                assert "401" in op["responses"], (method, path)
