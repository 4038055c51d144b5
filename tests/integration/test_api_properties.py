"""Whatever is sent to any route, the API answers 2xx or 4xx with a JSON body: never a 500.

Hypothesis generates path ids, query strings, headers (Idempotency-Key, Content-Type) and bodies,
from random bytes to near-valid JSON built from the routes' own field names, and sends them
through ``chalice.test.Client`` to the app on moto.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import app
from sandbox import moto_extensions
from tests.integration.conftest import World

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

ROUTES = sorted((path, method) for path, methods in app.routes.items() for method in methods)
FIELDS = ["pipeline", "key", "bucket", "version", "to", "limit", "next"]
PIPELINES = ["api-prod", "web-prod", "shop-prod"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(PIPELINES),
    st.sampled_from(["api/prod/app-1.zip", "api/prod/x.zip", "web/prod/a.tgz", "api/prod/", "x.zip"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.text(max_size=5).map(lambda tail: "\ud800" + tail),
)
near_valid_bodies = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=4).map(
    lambda body: json.dumps(body).encode()
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    json_values.map(lambda value: json.dumps(value).encode()),
    near_valid_bodies,
    st.integers(16_000, 17_000).map(lambda size: b'{"key": "' + b"k" * size + b'"}'),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "idempotency-key": st.one_of(
            st.text(max_size=140), st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True)
        ),
        "content-type": st.sampled_from(
            ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml"]
        ),
        "x-amz-date": st.text(max_size=20),
    },
)
queries = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=8)),
    st.one_of(st.text(max_size=40), st.sampled_from(PIPELINES), st.integers(-5, 500).map(str)),
    max_size=3,
)


def path_params(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True),
        st.text(min_size=1, max_size=300),
    )


@pytest.fixture
def known_ids(world: World) -> list[str]:
    """A pipeline with a verified release and one deploying, so real ids reach every branch."""
    ids = []
    for number in (1, 2):
        upload = world.upload(f"api/prod/app-{number}.zip")
        ids.append(str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"]))
        if number == 1:
            deployment_id = world.release(ids[0]).deployment_id
            assert deployment_id is not None
            moto_extensions.complete(deployment_id, "Succeeded")
            world.codedeploy_event(deployment_id, "SUCCESS")
    return [*ids, *PIPELINES]


@pytest.mark.parametrize(("template", "method"), ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_input_yields_a_500(
    world: World, known_ids: list[str], template: str, method: str, data: Any
) -> None:
    path = re.sub(r"\{[^}]+\}", lambda _: quote(data.draw(path_params(known_ids)), safe=""), template)
    query = data.draw(queries)
    if query:
        path += "?" + urlencode(query)
    response = world.client.http.request(method, path, headers=data.draw(headers), body=data.draw(bodies))

    assert response.status_code < 500, (path, response.body[:500])
    if response.body:
        answer = json.loads(response.body)
        assert isinstance(answer, dict)
