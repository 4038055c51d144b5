"""One row of the results table, and how a benchmark hands its rows and raw figures to the runner.

Each benchmark runs in its own process (a fresh interpreter, moto and environment each time), so
it writes what it measured to a JSON file the runner reads back.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WITHIN = "within budget"
OVER = "OVER BUDGET"


@dataclass(frozen=True)
class Measurement:
    what: str
    figure: str
    # The budget from DESIGN.md section 8 this figure answers, if any.
    budget: str = ""
    verdict: str = ""

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Measurement:
        return cls(**value)


@dataclass
class Outcome:
    """What one benchmark produced: table rows, and raw figures other benchmarks build on
    (the cost estimate reads the call counts and the sandbox's deploy durations)."""

    measurements: list[Measurement] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, what: str, figure: str, budget: str = "", verdict: str = "") -> None:
        self.measurements.append(Measurement(what, figure, budget, verdict))

    def to_json(self) -> dict[str, Any]:
        return {"measurements": [asdict(m) for m in self.measurements], "data": self.data}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Outcome:
        return cls([Measurement.from_json(m) for m in value["measurements"]], dict(value["data"]))


def verdict(within: bool) -> str:
    return WITHIN if within else OVER


def main(run: Callable[[], Outcome]) -> None:
    """The command line of every benchmark module: ``python -m bench.<name> --out FILE``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True, help="where to write the outcome (JSON)")
    arguments = parser.parse_args()
    outcome = run()
    arguments.out.write_text(json.dumps(outcome.to_json(), indent=2, default=str), encoding="utf-8")
