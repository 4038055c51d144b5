"""The CI examples (action.yml, docs/ci.md) call relco as it is: every command they run is one of
the CLI's click commands, with its own options and the number of arguments it takes, so a renamed
command or option fails here instead of in someone's pipeline."""

from __future__ import annotations

import functools
import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest

from relco.cli import main

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
CI_DOC = ROOT / "docs" / "ci.md"
# `relco` as a command: not part of a path or a file name (".relco/bin", "$RUNNER_TEMP/relco").
_RELCO_CALL = re.compile(r"(?<![\w/.$-])relco[ \t]+([^\n>|;)]+)")
_FENCED = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PIN = re.compile(r"\b(boto3|chalice)==([\w.]+)")


@functools.cache
def action() -> dict[str, Any]:
    # PyYAML comes with Chalice but ships no type stubs.
    yaml = importlib.import_module("yaml")
    loaded: dict[str, Any] = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    return loaded


def relco_calls(script: str) -> list[list[str]]:
    """The arguments of each relco command line in a shell script (comments left out)."""
    commands = "\n".join(line for line in script.splitlines() if not line.strip().startswith(("#", "//")))
    calls = []
    for match in _RELCO_CALL.finditer(commands):
        text = match.group(1).strip()
        try:
            calls.append(shlex.split(text))
        except ValueError:  # the call ends inside a quoted string: `echo "... relco show $id"`
            calls.append(shlex.split(text.rstrip('"')))
    return calls


def resolve(arguments: list[str]) -> str:
    """Fail unless ``relco <arguments>`` names a command with these options and as many arguments
    as it takes; returns the command's path (``bundle push``)."""
    command: click.Command = main
    path: list[str] = []
    remaining = list(arguments)
    positional: list[str] = []
    while remaining:
        token = remaining.pop(0)
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            options = {opt: param for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            assert name in options, f"relco {' '.join(path)}: no option {name} in {sorted(options)}"
            option = options[name]
            if "=" not in token and isinstance(option, click.Option) and not option.is_flag:
                remaining.pop(0)
        elif isinstance(command, click.Group):
            assert token in command.commands, f"relco {' '.join(path)}: no command {token!r}"
            command = command.commands[token]
            path.append(token)
        else:
            positional.append(token)
    assert not isinstance(command, click.Group), f"relco {' '.join(path)} names a group, not a command"
    arguments_taken = [param for param in command.params if isinstance(param, click.Argument)]
    required = [param for param in arguments_taken if param.required]
    assert len(required) <= len(positional) <= len(arguments_taken), (path, positional)
    return " ".join(path)


def test_the_action_is_composite_with_the_inputs_it_uses() -> None:
    document = action()
    assert document["runs"]["using"] == "composite"
    assert set(document["inputs"]) == {"pipeline", "directory", "api-url", "region"}
    assert [name for name, spec in document["inputs"].items() if spec.get("required")] == [
        "pipeline",
        "api-url",
    ]
    text = ACTION.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", text))
    assert used == set(document["inputs"])
    # Composite steps must name their shell.
    assert all(step.get("shell") == "bash" for step in document["runs"]["steps"] if "run" in step)


def test_the_action_pushes_then_watches_with_real_relco_commands() -> None:
    calls = [call for step in action()["runs"]["steps"] for call in relco_calls(step.get("run", ""))]
    assert [resolve(call) for call in calls] == ["bundle push", "show", "watch"]


def test_the_action_installs_the_pinned_versions() -> None:
    pinned = dict(_PIN.findall((ROOT / "requirements-dev.txt").read_text(encoding="utf-8")))
    installed = dict(_PIN.findall(action()["runs"]["steps"][0]["run"]))
    assert installed == pinned
    assert set(installed) == {"boto3", "chalice"}


@pytest.mark.parametrize("system", ["GitHub Actions", "GitLab CI", "Jenkins"])
def test_each_ci_example_pushes_then_watches(system: str) -> None:
    section = CI_DOC.read_text(encoding="utf-8").split(f"## {system}\n", 1)[1].split("\n## ", 1)[0]
    calls = [call for block in _FENCED.findall(section) for call in relco_calls(block)]
    commands = [resolve(call) for call in calls]
    assert commands[-2:] == ["bundle push", "watch"], commands


def test_a_drifted_example_is_caught() -> None:
    with pytest.raises(AssertionError, match="no option --pipline"):
        resolve(["bundle", "push", "dir", "--pipline", "x"])
    with pytest.raises(AssertionError, match="no command 'wait'"):
        resolve(["wait", "rel-1"])
    with pytest.raises(AssertionError):
        resolve(["watch"])  # RELEASE_ID is required
