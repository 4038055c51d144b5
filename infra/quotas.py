"""The AWS quotas a packaged template must stay within, measured on it (docs/quotas.md lists each
with its source). Sizes are measured with ARNs as long as any region and partition make them, so
a template within them here is within them in every region.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.iam import ACCOUNT, PARTITION, REGION, Template

# IAM user guide, "IAM and AWS STS quotas": "Role policy size cannot exceed 10,240 characters"
# (all inline policies of a role together), "Managed policy size cannot exceed 6,144 characters",
# "Managed policies attached to an IAM role: 10" (default, raisable to 20); "IAM does not count
# white space when calculating the size of a policy against these limits".
ROLE_INLINE_POLICY_CHARS = 10_240
MANAGED_POLICY_CHARS = 6_144
MANAGED_POLICIES_PER_ROLE = 10
# Lambda developer guide, "Lambda quotas": function resource-based policy, 20 KB.
LAMBDA_RESOURCE_POLICY_BYTES = 20 * 1024
# CloudFormation user guide, "CloudFormation quotas": template body 51,200 bytes in a request,
# 1 MB from S3; 500 resources per stack.
TEMPLATE_BODY_INLINE_BYTES = 51_200
TEMPLATE_BODY_S3_BYTES = 1_000_000
RESOURCES_PER_STACK = 500
# EventBridge user guide, "Amazon EventBridge quotas": 300 rules per event bus (default).
RULES_PER_EVENT_BUS = 300

# The longest names a region and a partition have (ap-southeast-5 and its peers; aws-us-gov).
LONGEST_REGION = "ap-southeast-5"
LONGEST_PARTITION = "aws-us-gov"
_WHITE_SPACE = re.compile(r"\s")


def policy_size(document: Mapping[str, Any], template: Mapping[str, Any] | None = None) -> int:
    """IAM's count of a policy's characters (white space not counted), its intrinsics resolved
    against ``template`` and padded to the longest region and partition."""
    resolved = Template(template or {"Resources": {}}).resolve(dict(document))
    text = json.dumps(resolved, separators=(",", ":"))
    padding = text.count(f":{REGION}:") * (len(LONGEST_REGION) - len(REGION))
    padding += text.count(f"arn:{PARTITION}:") * (len(LONGEST_PARTITION) - len(PARTITION))
    return len(_WHITE_SPACE.sub("", text)) + padding


def _of_type(template: Mapping[str, Any], *kinds: str) -> dict[str, Any]:
    return {name: body for name, body in template["Resources"].items() if body["Type"] in kinds}


def _target(value: Any) -> str | None:
    """The logical id a Ref or GetAtt names."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        attribute = value["Fn::GetAtt"]
        return str(attribute[0] if isinstance(attribute, list) else attribute.split(".")[0])
    return None


@dataclass(frozen=True)
class Measured:
    """One packaged template against the quotas that apply to it."""

    role_inline_chars: dict[str, int]  # role -> its inline policies together
    managed_policy_chars: dict[str, int]
    managed_policies_per_role: dict[str, int]
    lambda_policy_bytes: dict[str, int]  # function -> its resource-based policy
    template_bytes: int  # the SAM template as packaged (what is uploaded)
    resources: int  # after the SAM transform: what the stack holds
    event_rules: int  # on the default bus, after the transform

    def problems(self) -> list[str]:
        found = [
            f"role {role}: inline policies {chars} chars > {ROLE_INLINE_POLICY_CHARS}"
            for role, chars in self.role_inline_chars.items()
            if chars > ROLE_INLINE_POLICY_CHARS
        ]
        found += [
            f"managed policy {name}: {chars} chars > {MANAGED_POLICY_CHARS}"
            for name, chars in self.managed_policy_chars.items()
            if chars > MANAGED_POLICY_CHARS
        ]
        found += [
            f"role {role}: {count} managed policies > {MANAGED_POLICIES_PER_ROLE}"
            for role, count in self.managed_policies_per_role.items()
            if count > MANAGED_POLICIES_PER_ROLE
        ]
        found += [
            f"function {function}: resource-based policy {size} bytes > {LAMBDA_RESOURCE_POLICY_BYTES}"
            for function, size in self.lambda_policy_bytes.items()
            if size > LAMBDA_RESOURCE_POLICY_BYTES
        ]
        if self.template_bytes > TEMPLATE_BODY_S3_BYTES:
            found.append(f"template {self.template_bytes} bytes > {TEMPLATE_BODY_S3_BYTES} (from S3)")
        if self.resources > RESOURCES_PER_STACK:
            found.append(f"{self.resources} resources > {RESOURCES_PER_STACK} per stack")
        if self.event_rules > RULES_PER_EVENT_BUS:
            found.append(f"{self.event_rules} EventBridge rules > {RULES_PER_EVENT_BUS} per bus")
        return found


def _lambda_statement(permission: Mapping[str, Any], function_arn: str) -> dict[str, Any]:
    """The statement Lambda stores for an AddPermission (as GetPolicy shows it), with a Sid as
    long as CloudFormation's generated ones (stack name, logical id and a random suffix)."""
    properties = permission["Properties"]
    condition: dict[str, Any] = {}
    if "SourceAccount" in properties:
        condition["StringEquals"] = {"AWS:SourceAccount": properties["SourceAccount"]}
    if "SourceArn" in properties:
        condition["ArnLike"] = {"AWS:SourceArn": properties["SourceArn"]}
    statement: dict[str, Any] = {
        "Sid": "x" * 128,
        "Effect": "Allow",
        "Principal": {"Service": properties["Principal"]},
        "Action": properties["Action"],
        "Resource": function_arn,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def measure(translated: Mapping[str, Any], sam_bytes: int) -> Measured:
    """``translated``: the SAM transform (infra/sam.py) of the template ``chalice package`` wrote,
    which is ``sam_bytes`` long."""
    resolved = Template(translated)
    roles = _of_type(translated, "AWS::IAM::Role")
    managed = _of_type(translated, "AWS::IAM::ManagedPolicy")
    inline = {
        role: sum(
            policy_size(policy["PolicyDocument"], translated)
            for policy in body["Properties"].get("Policies", [])
        )
        for role, body in roles.items()
    }
    managed_chars = {
        name: policy_size(body["Properties"]["PolicyDocument"], translated) for name, body in managed.items()
    }
    attached = {role: len(body["Properties"].get("ManagedPolicyArns", [])) for role, body in roles.items()}
    policies: dict[str, list[dict[str, Any]]] = {}
    for function in _of_type(translated, "AWS::Lambda::Function"):
        function_arn = f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{function}"
        policies[function] = []
        for permission in _of_type(translated, "AWS::Lambda::Permission").values():
            if _target(permission["Properties"]["FunctionName"]) == function:
                policies[function].append(resolved.resolve(_lambda_statement(permission, function_arn)))
    lambda_bytes = {
        function: policy_size({"Version": "2012-10-17", "Id": "default", "Statement": statements})
        for function, statements in policies.items()
    }
    rules = [
        body
        for body in _of_type(translated, "AWS::Events::Rule").values()
        if "EventBusName" not in body["Properties"]
    ]
    return Measured(
        role_inline_chars=inline,
        managed_policy_chars=managed_chars,
        managed_policies_per_role=attached,
        lambda_policy_bytes=lambda_bytes,
        template_bytes=sam_bytes,
        resources=len(translated["Resources"]),
        event_rules=len(rules),
    )
