"""cfn-lint on the packaged template for dev and prod and on its translation to CloudFormation
(aws-sam-translator), as ``make package`` runs them; a template that does not translate fails the
package. What the template must mean is checked in tests/unit/test_template.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.package import TRANSLATED, PackageError, package, translate_and_lint
from tests.unit.test_template import PIPELINES_TOML

Packaged = tuple[dict[str, Any], Path]  # the SAM template and where it was written


@pytest.fixture(scope="module")
def package_stage(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Packaged]:
    """Packages a stage for the test file's pipelines on first use (chalice package is slow)."""
    root = tmp_path_factory.mktemp("lint")
    pipelines = root / "pipelines.toml"
    pipelines.write_text(PIPELINES_TOML, encoding="utf-8")
    packaged: dict[str, Packaged] = {}

    def of(stage: str) -> Packaged:
        if stage not in packaged:
            output = root / stage
            output.mkdir()
            packaged[stage] = (package(stage, output, pipelines), output / "package" / "sam.json")
        return packaged[stage]

    return of


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_sam_template_and_its_translation_pass_cfn_lint(
    package_stage: Callable[[str], Packaged], stage: str
) -> None:
    _, sam = package_stage(stage)
    translated = translate_and_lint(sam.parent)
    assert translated == sam.parent / TRANSLATED
    resources = json.loads(translated.read_text(encoding="utf-8"))["Resources"]
    # The transform ran: no SAM type is left, and each function is a plain Lambda function.
    assert not [name for name, body in resources.items() if body["Type"].startswith("AWS::Serverless::")]
    assert {name for name, body in resources.items() if body["Type"] == "AWS::Lambda::Function"} >= {
        "OnArtifactEvent",
        "APIHandler",
    }


def test_a_template_that_does_not_translate_fails_the_package(
    package_stage: Callable[[str], Packaged], tmp_path: Path
) -> None:
    """cfn-lint 1.x accepts this SAM template (it checks SAM's schema only); the translation does
    not: an SQS event whose queue is not an ARN. The stage does not matter here: dev's template."""
    template, _ = package_stage("dev")
    broken = json.loads(json.dumps(template))
    events = broken["Resources"]["OnVerifyMessage"]["Properties"]["Events"]
    for event in events.values():
        event["Properties"]["Queue"] = {"Ref": "NoSuchQueue"}
    (tmp_path / "sam.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(PackageError, match="NoSuchQueue"):
        translate_and_lint(tmp_path)
