"""Every AWS call a handler makes is allowed by its function's role in the packaged template.

``conftest.handler_calls`` records each call made inside a handler during the session, by function,
with the pipelines file in force; this module runs last (``pytest_collection_modifyitems``) and checks
all of them against the template ``chalice package`` produces with infra's merge template, rendered
for that pipelines file (buckets, groups, secrets, senders, topics) and bound to the suite's table
and queue names. A permission missing from a policy fails here, not on
the first production deploy. Every granted action is also checked against the Service
Authorization Reference (infra/iam_reference.py): a grant IAM would not apply as written (an
action with no resource type scoped to an ARN, a resource of another type, an unknown condition
key) fails here too, though the evaluator of infra/iam.py would have allowed the call.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from app import app
from infra import render, stack
from infra.functions import app_functions
from infra.iam import Request, Template, denied, requests_for_call, without_action
from infra.iam_reference import policy_problems
from infra.package import package
from tests.integration.conftest import BUCKET, PIPELINES_TOML, TABLE, HandlerCall, World

# The suite's resources (conftest.py, sandbox/provision.py) in place of the stage's names.
SUITE_NAMES = {
    render.TABLE: TABLE,
    render.VERIFY_QUEUE: "release-coordinator-verify",
    render.NOTIFY_QUEUE: "release-coordinator-notify.fifo",
    render.NOTIFY_DLQ: "release-coordinator-notify-dlq.fifo",
    stack.SLACK_ACTIONS_QUEUE: "release-coordinator-slack-actions",
}
INTEGRATION_DIR = Path(__file__).parent


class Packages:
    """The packaged template for each pipelines file the suite used (packaged once per text)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._templates: dict[str, dict[str, Any]] = {}

    def for_pipelines(self, text: str) -> dict[str, Any]:
        if text not in self._templates:
            output = self._root / f"package-{len(self._templates)}"
            output.mkdir()
            pipelines = output / "pipelines.toml"
            pipelines.write_text(text, encoding="utf-8")
            self._templates[text] = package("dev", output, pipelines)
        return self._templates[text]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    return Packages(tmp_path_factory.mktemp("packages"))


def _logical_ids() -> dict[str, str]:
    return {function.name: function.logical_id for function in app_functions(app)}


def unallowed(calls: list[HandlerCall], template: dict[str, Any]) -> dict[str, set[str]]:
    """Per function, each call its role does not allow (``GetItem: dynamodb:GetItem on arn:...``)."""
    resolved = Template(template, SUITE_NAMES)
    roles = resolved.functions()
    logical_ids = _logical_ids()
    problems: dict[str, set[str]] = defaultdict(set)
    statements: dict[str, list[dict[str, Any]]] = {}
    checked: set[tuple[str, Request]] = set()
    for call in calls:
        logical_id = logical_ids.get(call.function)
        role = roles.get(logical_id or "")
        if not role:
            problems[call.function].add(f"no role in the template (logical id {logical_id})")
            continue
        if role not in statements:
            statements[role] = resolved.role_statements(role)
        for request in requests_for_call(call.service, call.operation, call.params):
            if (role, request) in checked:
                continue
            checked.add((role, request))
            for missing in denied(statements[role], [request]):
                problems[call.function].add(f"{call.service}.{call.operation}: {missing}")
    return dict(problems)


def _whole_suite_ran(session: pytest.Session) -> bool:
    ran = {item.path for item in session.items}
    suite = {path for path in INTEGRATION_DIR.glob("test_*.py") if path.name != Path(__file__).name}
    return suite <= ran


def test_dropping_any_action_a_handler_needs_fails_the_check(
    world: World, handler_calls: list[HandlerCall], packages: Packages
) -> None:
    """The check has teeth: an upload deployed through on_artifact_event and read back through the
    API, then each action those calls need removed from the role, one at a time."""
    start = len(handler_calls)
    upload = world.upload("api/prod/permissions-v1.zip")
    world.deliver_upload(upload.eventbridge)
    assert world.client.http.get("/releases?pipeline=api-prod").status_code == 200
    calls = handler_calls[start:]
    packaged = packages.for_pipelines(PIPELINES_TOML)
    assert {call.function for call in calls} == {"on_artifact_event", "api_handler"}
    assert any(call.operation == "CreateDeployment" for call in calls), calls
    assert not unallowed(calls, packaged)

    roles = Template(packaged).functions()
    logical_ids = _logical_ids()
    needed = {
        (call.function, request.action)
        for call in calls
        for request in requests_for_call(call.service, call.operation, call.params)
    }
    assert ("on_artifact_event", "s3:GetObjectVersion") in needed  # a versioned bucket: HeadObject by version
    assert BUCKET in str([call.params for call in calls if call.operation == "HeadObject"])
    for function, action in sorted(needed):
        weaker = without_action(packaged, roles[logical_ids[function]], action)
        problems = unallowed(calls, weaker)
        assert any(action in problem for problem in problems.get(function, ())), (
            f"{function} still passes without {action}: the check would miss a removed policy line"
        )


def test_every_call_the_suite_made_inside_a_handler_is_allowed(
    handler_calls: list[HandlerCall], packages: Packages, request: pytest.FixtureRequest
) -> None:
    if not handler_calls:
        pytest.skip("no handler ran in this session: run it with the integration suite (make integration)")
    by_pipelines: dict[str, list[HandlerCall]] = defaultdict(list)
    for call in handler_calls:
        by_pipelines[call.pipelines].append(call)
    problems: dict[str, set[str]] = defaultdict(set)
    for text, calls in by_pipelines.items():
        for function, found in unallowed(calls, packages.for_pipelines(text)).items():
            problems[function] |= found
    assert not problems, "calls the packaged policies do not allow:\n" + "\n".join(
        f"  {function}: {problem}"
        for function, found in sorted(problems.items())
        for problem in sorted(found)
    )
    if _whole_suite_ran(request.session):
        # Every function's permissions were exercised by some test, new ones included.
        untested = sorted(set(_logical_ids()) - {call.function for call in handler_calls})
        assert not untested, f"no integration test made an AWS call through {untested}"


def test_every_grant_of_the_packaged_roles_agrees_with_the_service_authorization_reference(
    handler_calls: list[HandlerCall], packages: Packages
) -> None:
    texts = {PIPELINES_TOML} | {call.pipelines for call in handler_calls}
    problems: dict[str, list[str]] = {}
    for text in sorted(texts):
        resolved = Template(packages.for_pipelines(text), SUITE_NAMES)
        for function, role in sorted(resolved.functions().items()):
            found = policy_problems(resolved.role_statements(role))
            if found:
                problems.setdefault(function, []).extend(found)
    assert not problems, "grants the Service Authorization Reference disagrees with:\n" + "\n".join(
        f"  {function}: {problem}" for function, found in problems.items() for problem in found
    )
