"""The ``AWS::Serverless-2016-10-31`` transform, offline: the CloudFormation that CloudFormation
itself would produce from ``chalice package``'s SAM template, with the pinned aws-sam-translator
(``samtranslator.translator.transform.transform``, as cfn-lint 0.x and SAM's own tests call it).

No AWS call is made: the region comes from a boto3 session built with it (no credentials are
read), and the managed-policy map is empty, because no function here uses SAM's ``Policies``
(each has a ``Role`` of infra/render.py). A template that did would fail the translation with the
policy name, rather than silently reach AWS unchecked.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

REGION = "us-east-1"
# ``aws cloudformation package`` replaces each local CodeUri with the S3 object it uploads; the
# translator accepts only such a URI, so the translation stands in one of that form.
UPLOADED_CODE_URI = "s3://packaged-by-aws-cloudformation-package/deployment.zip"


class _NoManagedPolicies:
    """SAM resolves ``Policies: [AmazonS3ReadOnlyAccess]`` names to ARNs through this loader
    (it would call iam:ListPolicies); nothing here names one."""

    def load(self) -> dict[str, str]:
        return {}


class TranslationError(RuntimeError):
    """The SAM template does not translate; the message is the translator's."""


def translate(template: Mapping[str, Any], region: str = REGION) -> dict[str, Any]:
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException  # type: ignore[import-untyped]
    from samtranslator.parser.parser import Parser  # type: ignore[import-untyped]
    from samtranslator.translator.translator import Translator  # type: ignore[import-untyped]

    uploaded = copy.deepcopy(dict(template))
    for resource in uploaded.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function" and "CodeUri" in resource.get(
            "Properties", {}
        ):
            resource["Properties"]["CodeUri"] = UPLOADED_CODE_URI
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=region))
    try:
        translated: dict[str, Any] = translator.translate(
            uploaded,
            parameter_values={},
            get_managed_policy_map=_NoManagedPolicies().load,
        )
    except InvalidDocumentException as problem:
        causes = "; ".join(str(cause) for cause in problem.causes)
        raise TranslationError(f"SAM translation failed: {causes}") from None
    return translated
