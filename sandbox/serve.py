"""``relco sandbox up``: keep the sandbox running for hands-on use until SIGINT or SIGTERM."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from sandbox.runtime import Sandbox


def _environment_lines(ready: dict[str, object]) -> str:
    """The sandbox's emulator accepts any credentials, but the CLI signs its requests: give it some,
    and send every AWS call to the emulator, never to a real account."""
    return "\n".join(
        [
            f"  export RELCO_API_URL={ready['api_url']}",
            f"  export AWS_ENDPOINT_URL={ready['aws_endpoint_url']}",
            "  export AWS_ACCESS_KEY_ID=sandbox AWS_SECRET_ACCESS_KEY=sandbox AWS_DEFAULT_REGION=us-east-1",
        ]
    )


def serve(
    *, as_json: bool, instances: int = 2, on_ready: Callable[[str], Mapping[str, object]] | None = None
) -> int:
    """``on_ready`` gets the API's URL once the sandbox serves; what it answers joins the ready line
    (``relco sandbox up`` starts the dashboard there: the sandbox knows nothing of the CLI)."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="relco-sandbox-") as workdir,
            Sandbox(Path(workdir), instances=instances) as sandbox,
        ):
            assert sandbox.endpoints is not None
            # A first release, so the load balancer serves something from the start.
            first = sandbox.deploy("1.0.0")
            ready = {
                **sandbox.endpoints.to_dict(),
                "first_release": {"id": first.id, "state": first.state.value},
                **(on_ready(sandbox.endpoints.api_url) if on_ready else {}),
            }
            if as_json:
                print(json.dumps(ready), flush=True)
            else:
                print("Sandbox ready (Ctrl-C stops it):", flush=True)
                for name, value in ready.items():
                    print(f"  {name}: {value}", flush=True)
                print("\nTo use relco and the AWS CLI against it, in another shell:", flush=True)
                print(_environment_lines(ready), flush=True)
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
