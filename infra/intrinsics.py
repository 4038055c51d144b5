"""CloudFormation intrinsic functions as the merge template and its policies write them, and ARNs
in the stack's own partition, region and account."""

from __future__ import annotations


def sub(template: str) -> dict[str, str]:
    return {"Fn::Sub": template}


def literal(text: str) -> str:
    """A value from the pipelines file inside ``Fn::Sub``: ``${`` would start a substitution."""
    return text.replace("${", "${!")


def arn(service: str, resource: str, *, regional: bool = True) -> dict[str, str]:
    where = "${AWS::Region}:${AWS::AccountId}" if regional else ":"
    return sub(f"arn:${{AWS::Partition}}:{service}:{where}:{literal(resource)}")


def get_att(logical_id: str, attribute: str = "Arn") -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}
