"""docs/openapi.yaml describes exactly the routes app.py serves, and is a valid OpenAPI 3 document.

``tests/integration/test_api.py`` also checks every answer of its route tests against it.
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from app import app
from chalicelib.domain.api_requests import ListQuery
from chalicelib.domain.release import ReleaseState, Trigger

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
SLACK_ROUTE = "/slack/interactions"


@functools.cache
def document() -> dict[str, Any]:
    # PyYAML comes with Chalice but ships no type stubs.
    yaml = importlib.import_module("yaml")
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def inline(node: Any) -> Any:
    """The node with every local ``$ref`` replaced by what it names (the document has no cycles)."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            target: Any = document()
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return inline(target)
        return {name: inline(value) for name, value in node.items()}
    if isinstance(node, list):
        return [inline(value) for value in node]
    return node


def check_answer(template: str, method: str, status: int, body: Any) -> None:
    """Fail unless the document lists this status for the operation and the body fits its schema."""
    operation = document()["paths"][template][method.lower()]
    assert str(status) in operation["responses"], f"{method} {template} answered {status}, undocumented"
    response = inline(operation["responses"][str(status)])
    schema = response["content"]["application/json"]["schema"]
    OAS30Validator(schema).validate(body)


def test_the_document_is_valid_openapi() -> None:
    validate(document())


def test_the_document_lists_exactly_the_app_routes() -> None:
    documented = {
        (path, method.upper())
        for path, operations in document()["paths"].items()
        for method in operations
        if method in METHODS
    }
    served = {(path, method) for path, methods in app.routes.items() for method in methods}
    assert documented == served


def test_every_operation_needs_sigv4_and_documents_its_refusals() -> None:
    assert document()["security"] == [{"sigv4": []}]
    for path, operations in document()["paths"].items():
        if path == SLACK_ROUTE:
            # Slack signs with the app's signing secret, not SigV4: the one operation without it.
            assert operations["post"]["security"] == []
            assert {"400", "401", "409"} <= set(operations["post"]["responses"])
            continue
        for method, operation in operations.items():
            assert "security" not in operation, f"{method} {path} overrides the SigV4 requirement"
            codes = set(operation["responses"])
            assert "400" in codes
            if re.search(r"\{\w+\}", path):
                assert "404" in codes, (method, path)
            if method == "post":
                assert {"409", "413", "422"} <= codes, (method, path)
                names = {inline(parameter)["name"] for parameter in operation["parameters"]}
                assert "Idempotency-Key" in names


def test_the_release_list_documents_the_parameters_and_values_it_accepts() -> None:
    operation = document()["paths"]["/releases"]["get"]
    assert {parameter["name"] for parameter in operation["parameters"]} == ListQuery.PARAMETERS
    schemas = document()["components"]["schemas"]
    assert schemas["ReleaseState"]["enum"] == [state.value for state in ReleaseState]
    assert schemas["Trigger"]["enum"] == [trigger.value for trigger in Trigger]
