"""The zero-downtime receipt end to end: the sandbox's load balancer publishes what it serves to
moto's CloudWatch (PutMetricData under the ALB's dimensions, sandbox.load_balancer), and the
receipt the coordinator reads when the release ends counts the same requests as the traffic
generator sent.

"Agrees" means equal: the generator's requests all fall inside the receipt's rollout window (it
starts after CodeDeploy created the deployment, and the window begins at that minute) and none of
its own run outside it, nothing else sends requests through this load balancer, and the test
waits for the publisher's last round before the release can end. Were the traffic still running
when the release ended, the receipt could miss at most the requests of the last publishing round
(``PUBLISH_EVERY_S``): that is the "so far" the summary says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib import bootstrap
from chalicelib.domain.release import ReleaseState
from sandbox.runtime import STAGING, Sandbox
from sandbox.traffic import SteadyTraffic
from tests.e2e.test_demo import processes_under


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    workdir = tmp_path_factory.mktemp("receipt")
    with Sandbox(workdir) as running:
        yield running
    assert processes_under(workdir) == []


@pytest.mark.timeout(300)
def test_the_receipt_counts_what_the_traffic_generator_sent(sandbox: Sandbox) -> None:
    assert sandbox.endpoints is not None
    first = sandbox.deploy("1.0.0")
    assert first.state is ReleaseState.SUCCEEDED, first.reason

    release_id = sandbox.upload("2.0.0")
    sandbox.wait_for(release_id, lambda release: release.deployment_id is not None, "its deployment")
    traffic = SteadyTraffic(sandbox.endpoints.lb_url + "/", rate_per_s=20.0, concurrency=4).start()
    sandbox.wait_for(release_id, lambda release: release.state is not ReleaseState.DEPLOYING, "verification")
    report = traffic.stop()
    sandbox.fleets[STAGING].metrics.flush()
    ended = sandbox.wait_terminal(release_id)

    assert ended.state is ReleaseState.SUCCEEDED, ended.reason
    receipt = dict(bootstrap.wiring().store.history(release_id)[-1].detail["receipt"])
    print(f"\nreceipt: {receipt['summary']}; the generator sent {report.sent}, {report.failed} failed")
    assert report.sent > 0
    assert receipt["requests"] == report.sent
    assert receipt["elb_5xx"] + receipt["target_5xx"] == report.failed == 0
    assert receipt["summary"].startswith(f"0 load-balancer errors in {report.sent:,} requests during rollout")
    assert receipt["slowest_p90_ms"] is not None
