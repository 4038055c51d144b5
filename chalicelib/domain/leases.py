"""How long a claim on a piece of work is held before another worker may take it over.

Two kinds of claim share it: a release's start (``start_claimed_at``: the worker that will call
CreateDeployment) and a notification's delivery (the delivery log). Either claim is taken over
only when its worker must be dead, so the lease outlives the slowest live worker:

- a delivery at its worst: two Slack calls through every timeout and retry, and the store calls
  around them (``infra.sizing.notification_worst_s``, 115 s);
- a start at its worst: it is part of one event's work, bounded by the event's AWS-call budget
  (``infra.sizing.AWS_CALLS_PER_EVENT`` calls of ``AWS_CALL_S``, 66 s).

tests/unit/test_leases.py holds the lease to both. A longer lease only delays the takeover of a
dead worker's claim; reconcile runs every 5 minutes, so a claim abandoned by a dead worker is
restarted by the first or second run after it.
"""

from __future__ import annotations

from datetime import timedelta

CLAIM_LEASE = timedelta(minutes=3)
