"""The fenced blocks of docs/deploy.md, read from the document itself: what the deploy-guide test
runs and what the CLI tests check relco against (CI's policy)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})
# Fences may be indented (a block inside a list item): its lines lose the fence's indentation.
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<language>[\w+-]*)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    heading: str  # the nearest heading above the block
    language: str  # the fence's info string ("" when none)
    text: str

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "")

    @property
    def identifier(self) -> str:
        """Stable while the block's section and first command stay: `heading | first line`."""
        return f"{self.heading} | {self.first_line}"


def blocks(markdown: str) -> list[Block]:
    """Every fenced block (CommonMark: a closing fence of the same character, at least as long)."""
    found: list[Block] = []
    heading = ""
    fence: str | None = None
    language = ""
    indent = ""
    lines: list[str] = []
    for line in markdown.splitlines():
        if fence is None:
            opening = _FENCE.match(line)
            if opening:
                fence, language, indent, lines = opening["fence"], opening["language"], opening["indent"], []
                continue
            title = _HEADING.match(line)
            if title:
                heading = title["title"]
        elif line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            found.append(Block(heading, language, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line.removeprefix(indent))
    if fence is not None:
        raise ValueError(f"unclosed {fence} block under {heading!r}")
    return found


def guide_blocks() -> list[Block]:
    return blocks(GUIDE.read_text(encoding="utf-8"))


def shell_blocks() -> list[Block]:
    return [block for block in guide_blocks() if block.language in SHELL_LANGUAGES]


def guide_json(section: str) -> list[dict[str, Any]]:
    """The JSON blocks under the guide's heading that starts with ``section``."""
    return [
        json.loads(block.text)
        for block in guide_blocks()
        if block.language == "json" and block.heading.startswith(section)
    ]


def ci_policy() -> dict[str, Any]:
    """The policy the guide tells readers to attach to CI's role (section 5)."""
    policies = guide_json("5. Granting CI permission")
    assert len(policies) == 1, f"expected one JSON policy in section 5 of {GUIDE}, found {len(policies)}"
    return policies[0]


def instance_profile_statement() -> dict[str, Any]:
    """The statement the guide gives the CodeDeploy agent's instance profile (section 0)."""
    statements = [doc for doc in guide_json("0. What you need") if doc.get("Sid") == "DownloadBundles"]
    assert len(statements) == 1, f"expected the DownloadBundles statement in section 0 of {GUIDE}"
    return statements[0]
