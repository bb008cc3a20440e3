"""Schemathesis generates requests from Corral's own OpenAPI description, valid and not: none
may get a 5xx. It runs against a server of its own, since it revokes and disables at random."""

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from corral.identity.tokens import generate_key
from tests.conftest import BACKENDS, Server, own_database, start_server, stop_server


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    admin_key = generate_key()
    with own_database(request.param, data_dir) as database_url:
        process, url, log_path = start_server(data_dir, database_url, {"CORRAL_ADMIN_KEY": admin_key}, demo=True)
        try:
            yield Server(url, admin_key, database_url, data_dir, log_path, request.param)
        finally:
            stop_server(process)


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    schema.config.base_url = fuzz_server.url
    return schema


def test_no_generated_request_gets_a_server_error(api_schema, fuzz_server):
    auth = {"Authorization": f"Bearer {fuzz_server.admin_key}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def no_server_error(case):
            response = case.call(headers=auth, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text}")
            if response.status_code >= 400:
                assert set(response.json()) == {"error"} and response.json()["error"]["message"]

        no_server_error()
