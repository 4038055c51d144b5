"""The packaged stack within AWS's quotas at 1, 20 and 100 pipelines (docs/quotas.md lists each
quota and its source). Each pipeline has a bucket, an application, a group, a deployment config, a
Slack token, a webhook secret and an email sender of its own: the most the pipelines file can make
the policies, rules and permissions grow. Each size is packaged, translated and linted as
``make package`` does it (the quotas' unit checks are in tests/unit/test_quotas.py)."""

from __future__ import annotations

import json

import pytest

from infra import quotas
from infra.package import package, translate_and_lint


def pipelines_toml(count: int) -> str:
    blocks = []
    for n in range(count):
        blocks.append(
            f"""
[[pipeline]]
name = "service-{n:03d}-production"
bucket = "acme-release-artifacts-service-{n:03d}"
prefix = "bundles/service-{n:03d}/production/"
application = "service-{n:03d}"
deployment_group = "service-{n:03d}-production-fleet"
deployment_config = "Custom.Service{n:03d}.HalfAtATime"

[[pipeline.notify]]
kind = "slack"
channel = "#deploys-service-{n:03d}"
token_parameter = "/release-coordinator/service-{n:03d}/slack-token"

[[pipeline.notify]]
kind = "webhook"
url_secret = "release-coordinator/service-{n:03d}/webhook-url"
signing_key_parameter = "/release-coordinator/service-{n:03d}/signing-key"

[[pipeline.notify]]
kind = "email"
sender = "deploys@service-{n:03d}.example.com"
to = ["team-{n:03d}@example.com"]
"""
        )
    return "".join(blocks)


@pytest.fixture(scope="module", params=[1, 20, 100], ids=lambda count: f"{count}-pipelines")
def measured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> quotas.Measured:
    count = int(request.param)
    output = tmp_path_factory.mktemp(f"quotas-{count}")
    pipelines = output / "pipelines.toml"
    pipelines.write_text(pipelines_toml(count), encoding="utf-8")
    package("prod", output, pipelines)
    sam = output / "package" / "sam.json"
    translated = json.loads(translate_and_lint(sam.parent).read_text(encoding="utf-8"))
    result = quotas.measure(translated, sam.stat().st_size)
    print(
        f"\n{count} pipelines: largest inline policy {max(result.role_inline_chars.values())} chars, "
        f"largest managed policy {max(result.managed_policy_chars.values(), default=0)} chars, "
        f"most managed policies on a role {max(result.managed_policies_per_role.values())}, "
        f"largest Lambda resource policy {max(result.lambda_policy_bytes.values())} bytes, "
        f"template {result.template_bytes} bytes, {result.resources} resources, "
        f"{result.event_rules} rules"
    )
    return result


@pytest.mark.timeout(600)
def test_the_stack_is_within_every_quota_that_applies(measured: quotas.Measured) -> None:
    assert not measured.problems(), "\n".join(measured.problems())


def test_the_measurements_see_what_they_measure(measured: quotas.Measured) -> None:
    """Each figure counts something (a check over nothing cannot fail)."""
    assert len(measured.role_inline_chars) == 8  # one role per function
    assert min(measured.role_inline_chars.values()) > 100
    assert measured.managed_policy_chars
    assert measured.lambda_policy_bytes["OnArtifactEvent"] > 100
    assert measured.event_rules >= 3  # artifacts, CodeDeploy's (Chalice) and the schedule
    assert measured.resources > 50
