"""Is an AWS API call allowed by a function's role in a packaged template?

Enough of IAM for the permission tests, deliberately strict where it simplifies: a statement with
a ``Condition`` grants nothing (the coordinator's conditions narrow a grant, never widen it),
managed policies attached by a literal ARN grant nothing (their text is not in the template; the
template's own, attached by Ref, do), an explicit ``Deny`` wins.

A call becomes one or more ``Request`` (action, resource ARN) as AWS authorizes it: HeadObject is
``s3:GetObject``, SendMessageBatch is ``sqs:SendMessage``, each item of TransactWriteItems is its
own PutItem/UpdateItem/DeleteItem/ConditionCheckItem, CreateDeployment also needs the deployment
config and the application revision. Where a call names no resource (GetDeployment takes only an
id) the request is for the resource type (``...:deploymentgroup:*``) and matches any statement
naming a resource of that type.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"

# botocore service name -> IAM service prefix, where they differ.
_IAM_PREFIX = {"elbv2": "elasticloadbalancing", "sesv2": "ses", "dynamodbstreams": "dynamodb"}
_SQS_ACTION = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_TRANSACT_ACTION = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
# CodeDeploy calls that name a deployment by id only: authorized on its deployment group.
_BY_DEPLOYMENT_ID = frozenset({"GetDeployment", "BatchGetDeployments"})
# CodeDeploy calls with no resource type in the Service Authorization Reference: only "*"
# authorizes them (StopDeployment scoped to a deployment group is AccessDenied).
_NO_RESOURCE = frozenset(
    {"ListDeploymentTargets", "BatchGetDeploymentTargets", "GetDeploymentTarget", "StopDeployment"}
)
DEFAULT_DEPLOYMENT_CONFIG = "CodeDeployDefault.OneAtATime"


@dataclass(frozen=True)
class Request:
    action: str  # service:Action
    resource: str  # an ARN, "*", or a type-level pattern ending in "*"

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


def _arn(service: str, resource: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def requests_for_call(service: str, operation: str, params: Mapping[str, Any]) -> list[Request]:
    """What IAM checks for one API call (botocore service and operation names, API params)."""
    prefix = _IAM_PREFIX.get(service, service)
    if service in ("dynamodb", "dynamodbstreams"):
        return _dynamodb(operation, params)
    if service == "sqs":
        return _sqs(operation, params)
    if service == "s3":
        return _s3(operation, params)
    if service == "codedeploy":
        return _codedeploy(operation, params)
    if service == "ssm" and "Name" in params:
        return [Request(f"ssm:{operation}", _arn("ssm", f"parameter/{str(params['Name']).lstrip('/')}"))]
    if service == "ssm" and "Names" in params:
        return [
            Request(f"ssm:{operation}", _arn("ssm", f"parameter/{str(name).lstrip('/')}"))
            for name in params["Names"]
        ]
    if service == "secretsmanager" and "SecretId" in params:
        secret = str(params["SecretId"])
        # Secrets Manager appends six random characters to the name in the ARN.
        resource = secret if secret.startswith("arn:") else _arn("secretsmanager", f"secret:{secret}-AbCdEf")
        return [Request(f"secretsmanager:{operation}", resource)]
    if service in ("ses", "sesv2") and operation in ("SendEmail", "SendRawEmail"):
        sender = str(params.get("Source") or params.get("FromEmailAddress") or "")
        address = sender.rsplit("<", 1)[-1].rstrip(">")
        return [Request(f"ses:{operation}", _arn("ses", f"identity/{address}"))]
    if service == "sns" and "TopicArn" in params:
        return [Request(f"sns:{operation}", str(params["TopicArn"]))]
    # Elastic Load Balancing's Describe* and anything not modelled: the action on "*".
    return [Request(f"{prefix}:{operation}", "*")]


def _table_arn(table: str) -> str:
    return table if table.startswith("arn:") else _arn("dynamodb", f"table/{table}")


def _dynamodb(operation: str, params: Mapping[str, Any]) -> list[Request]:
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [Request(f"dynamodb:{operation}", _table_arn(table)) for table in params["RequestItems"]]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        requests = []
        for item in params["TransactItems"]:
            for kind, body in item.items():
                requests.append(Request(f"dynamodb:{_TRANSACT_ACTION[kind]}", _table_arn(body["TableName"])))
        return requests
    if "StreamArn" in params:
        return [Request(f"dynamodb:{operation}", str(params["StreamArn"]))]
    if "TableName" in params:
        resource = _table_arn(str(params["TableName"]))
        if params.get("IndexName"):
            resource = f"{resource}/index/{params['IndexName']}"
        return [Request(f"dynamodb:{operation}", resource)]
    return [Request(f"dynamodb:{operation}", "*")]


def _sqs(operation: str, params: Mapping[str, Any]) -> list[Request]:
    action = f"sqs:{_SQS_ACTION.get(operation, operation)}"
    if "QueueUrl" in params:
        path = urlparse(str(params["QueueUrl"])).path.strip("/").split("/")
        return [Request(action, _arn("sqs", path[-1]))]
    if "QueueName" in params:
        return [Request(action, _arn("sqs", str(params["QueueName"])))]
    return [Request(action, "*")]


def _s3(operation: str, params: Mapping[str, Any]) -> list[Request]:
    bucket = str(params.get("Bucket", ""))
    if operation in ("HeadObject", "GetObject"):
        action = "s3:GetObjectVersion" if params.get("VersionId") else "s3:GetObject"
        return [Request(action, f"arn:{PARTITION}:s3:::{bucket}/{params['Key']}")]
    if operation in ("ListObjects", "ListObjectsV2", "ListObjectVersions"):
        action = "s3:ListBucketVersions" if operation == "ListObjectVersions" else "s3:ListBucket"
        return [Request(action, f"arn:{PARTITION}:s3:::{bucket}")]
    if "Key" in params:
        return [Request(f"s3:{operation}", f"arn:{PARTITION}:s3:::{bucket}/{params['Key']}")]
    return [Request(f"s3:{operation}", f"arn:{PARTITION}:s3:::{bucket}")]


def _codedeploy(operation: str, params: Mapping[str, Any]) -> list[Request]:
    action = f"codedeploy:{operation}"
    application = params.get("applicationName")
    group = params.get("deploymentGroupName")
    if operation in _NO_RESOURCE:
        return [Request(action, "*")]
    if operation in _BY_DEPLOYMENT_ID:
        return [Request(action, _arn("codedeploy", "deploymentgroup:*"))]
    if application and group:
        requests = [Request(action, _arn("codedeploy", f"deploymentgroup:{application}/{group}"))]
        if operation == "CreateDeployment":
            config = params.get("deploymentConfigName") or DEFAULT_DEPLOYMENT_CONFIG
            requests += [
                Request("codedeploy:GetDeploymentConfig", _arn("codedeploy", f"deploymentconfig:{config}")),
                Request(
                    "codedeploy:GetApplicationRevision", _arn("codedeploy", f"application:{application}")
                ),
                Request(
                    "codedeploy:RegisterApplicationRevision", _arn("codedeploy", f"application:{application}")
                ),
            ]
        return requests
    if application:
        return [Request(action, _arn("codedeploy", f"application:{application}"))]
    return [Request(action, "*")]


# --- the template side --------------------------------------------------------------------------


class Unresolvable(ValueError):
    """An intrinsic function or reference this evaluator does not model."""


class Template:
    """A packaged template with its intrinsics resolved for one account and region."""

    def __init__(self, template: Mapping[str, Any], names: Mapping[str, str] | None = None) -> None:
        """``names`` binds logical ids to other physical names (the test world's table and queues),
        so the template's ARNs are those of the resources the calls were made on."""
        self.raw = copy.deepcopy(dict(template))
        self.resources: dict[str, Any] = self.raw.get("Resources", {})
        for logical_id, name in (names or {}).items():
            properties = self.resources[logical_id].setdefault("Properties", {})
            kind = self.resources[logical_id]["Type"]
            key = {"AWS::DynamoDB::Table": "TableName", "AWS::SQS::Queue": "QueueName"}.get(kind)
            if key is None:
                raise Unresolvable(f"cannot rename {logical_id} ({kind})")
            properties[key] = name

    # -- intrinsics --

    def _name(self, logical_id: str) -> str:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise Unresolvable(f"no resource {logical_id}")
        properties = resource.get("Properties", {})
        for key in ("TableName", "QueueName", "FunctionName", "LogGroupName", "Name"):
            if isinstance(properties.get(key), str):
                return str(properties[key])
        return logical_id

    def ref(self, name: str) -> str:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION}
        if name in pseudo:
            return pseudo[name]
        parameter = self.raw.get("Parameters", {}).get(name)
        if parameter is not None:
            return str(parameter.get("Default", ""))
        resource = self.resources.get(name)
        if resource and resource["Type"] == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self._name(name)}"
        return self._name(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise Unresolvable(f"GetAtt of unknown resource {logical_id}")
        kind = resource["Type"]
        name = self._name(logical_id)
        if kind == "AWS::SQS::Queue":
            return {"Arn": _arn("sqs", name), "QueueName": name}[attribute]
        if kind == "AWS::DynamoDB::Table":
            table = _arn("dynamodb", f"table/{name}")
            # The stream label is a timestamp known only once the table exists.
            return {"Arn": table, "StreamArn": f"{table}/stream/*"}[attribute]
        if kind == "AWS::Logs::LogGroup" and attribute == "Arn":
            return _arn("logs", f"log-group:{name}:*")
        if kind in ("AWS::IAM::Role",) and attribute == "Arn":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{logical_id}"
        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function") and attribute == "Arn":
            return _arn("lambda", f"function:{name}")
        if kind == "AWS::Events::Rule" and attribute == "Arn":
            return _arn("events", f"rule/{name}")
        raise Unresolvable(f"GetAtt {logical_id}.{attribute} ({kind})")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return self.ref(str(argument))
            if function == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(logical_id, attribute)
            if function == "Fn::Sub":
                return self._sub(argument)
            if function == "Fn::Join":
                separator, parts = argument
                return str(separator).join(str(self.resolve(part)) for part in parts)
            if function.startswith("Fn::"):
                raise Unresolvable(function)
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        resolved = {name: self.resolve(item) for name, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            body = match.group(1)
            if body.startswith("!"):
                return "${" + body[1:] + "}"
            if body in resolved:
                return str(resolved[body])
            if "." in body and not body.startswith("AWS::"):
                logical_id, attribute = body.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(body)

        return re.sub(r"\$\{([^}]*)\}", replace, text)

    # -- policies --

    def functions(self) -> dict[str, str]:
        """Lambda functions: logical id -> the role's logical id (None if not a role here)."""
        found = {}
        for logical_id, resource in self.resources.items():
            if resource["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
                role = resource.get("Properties", {}).get("Role")
                found[logical_id] = (
                    role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else ""
                )
        return found

    def role_statements(self, role: str) -> list[dict[str, Any]]:
        """Every statement granted to the role: its inline policies and the policies naming it."""
        resource = self.resources.get(role)
        if resource is None or resource["Type"] != "AWS::IAM::Role":
            return []
        documents = [policy["PolicyDocument"] for policy in resource["Properties"].get("Policies", [])]
        # Customer managed policies of this template attached by Ref (a managed policy's Ref is its
        # ARN); one attached by a literal ARN is not in the template and grants nothing here.
        for attached in resource["Properties"].get("ManagedPolicyArns", []):
            policy = self.resources.get(attached.get("Ref", "")) if isinstance(attached, dict) else None
            if policy is not None and policy["Type"] == "AWS::IAM::ManagedPolicy":
                documents.append(policy["Properties"]["PolicyDocument"])
        for other in self.resources.values():
            attaches = other.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
            if attaches and {"Ref": role} in other["Properties"].get("Roles", []):
                documents.append(other["Properties"]["PolicyDocument"])
        statements = []
        for document in documents:
            listed = document["Statement"]
            statements.extend(self.resolve(listed if isinstance(listed, list) else [listed]))
        return list(statements)


def _pattern(glob: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob), flags)


def _listed(value: Any) -> list[str]:
    return [str(item) for item in (value if isinstance(value, list) else [value])]


def action_matches(pattern: str, action: str) -> bool:
    # Action names are case-insensitive; ARNs are not.
    return _pattern(pattern, re.IGNORECASE).fullmatch(action) is not None


def resource_matches(pattern: str, resource: str) -> bool:
    if resource == "*":
        # An action with no resource type is authorized only by a statement on every resource.
        return pattern == "*"
    if "*" not in resource:
        return _pattern(pattern).fullmatch(resource) is not None
    # A type-level request: any statement naming a resource of that type (same fixed prefix).
    fixed = resource.split("*", 1)[0]
    pattern_fixed = re.split(r"[*?]", pattern, maxsplit=1)[0]
    return pattern_fixed.startswith(fixed) or fixed.startswith(pattern_fixed)


def _statement_matches(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        if not any(action_matches(p, request.action) for p in _listed(statement["Action"])):
            return False
    elif any(action_matches(p, request.action) for p in _listed(statement.get("NotAction", []))):
        return False
    if "Resource" in statement:
        return any(resource_matches(p, request.resource) for p in _listed(statement["Resource"]))
    return not any(resource_matches(p, request.resource) for p in _listed(statement.get("NotResource", [])))


def allowed(statements: Sequence[Mapping[str, Any]], request: Request) -> bool:
    matching = [s for s in statements if _statement_matches(s, request)]
    if any(s.get("Effect") == "Deny" for s in matching):
        return False
    return any(s.get("Effect") == "Allow" and not s.get("Condition") for s in matching)


def denied(statements: Sequence[Mapping[str, Any]], requests: Iterable[Request]) -> list[Request]:
    return [request for request in requests if not allowed(statements, request)]


def without_action(template: Mapping[str, Any], role: str, action: str) -> dict[str, Any]:
    """A copy of the template whose role lacks one action (the permission tests' negative case):
    taken out of its inline policies and of the managed policies attached to it."""
    changed = copy.deepcopy(dict(template))
    resources = changed["Resources"]
    properties = resources[role]["Properties"]
    documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
    for attached in properties.get("ManagedPolicyArns", []):
        if isinstance(attached, dict) and attached.get("Ref") in resources:
            documents.append(resources[attached["Ref"]]["Properties"]["PolicyDocument"])
    for document in documents:
        kept = []
        for statement in document["Statement"]:
            actions = [a for a in _listed(statement["Action"]) if a != action]
            if actions:
                kept.append({**statement, "Action": actions})
        document["Statement"] = kept
    return changed
