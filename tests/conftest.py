"""Settings for every suite that make moto worlds and boto3 sessions cheap to create; neither
changes what a test sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.loaders
import pytest


@pytest.fixture(scope="session", autouse=True)
def moto_ec2_without_public_images() -> Iterator[None]:
    """moto's EC2 backend otherwise loads about 1,300 public AMIs, each with a volume, whenever it
    starts: about a second per moto world. Instances here are launched from a made-up image id,
    which moto accepts without them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        yield


@pytest.fixture(scope="session", autouse=True)
def botocore_data_files_parsed_once() -> Iterator[None]:
    """botocore parses a service's JSON model files once per session, and the suites make several
    sessions per test (each moto world's, and the app's after every ``bootstrap.reset()``): the
    same files parsed hundreds of times. One parse per file for the test process: the files do not
    change, and botocore already shares the parsed data among all clients of a session, which
    only read it (merging ``sdk-extras`` into a model gives the same model each time)."""
    parse = botocore.loaders.JSONFileLoader.load_file
    parsed: dict[str, Any] = {}

    def load_file(loader: botocore.loaders.JSONFileLoader, file_path: str) -> Any:
        if file_path not in parsed:
            parsed[file_path] = parse(loader, file_path)
        return parsed[file_path]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.loaders.JSONFileLoader, "load_file", load_file)
        yield
