"""A local CodeDeploy agent: it makes moto's CodeDeploy deployments real.

moto plays the CodeDeploy control plane but never moves a deployment out of ``Created``. This
agent watches moto's backend (in this process) for new deployments of the groups it serves and
runs them as CodeDeploy does on EC2 (../shared/reference/aws-facts.md, "CodeDeploy"):

* the revision is downloaded from S3 (the exact object version) and unpacked per instance;
* instances are deployed in batches per the deployment config (HalfAtATime, OneAtATime,
  AllAtOnce), keeping the configured minimum of healthy instances;
* each instance goes through the lifecycle events in AWS's order, running the appspec hook
  scripts for real (ApplicationStop and the block-traffic hooks from the *previous* revision),
  with CodeDeploy's environment variables and timeouts, and BlockTraffic/AllowTraffic driving
  a :class:`TrafficControl` (the local load balancer);
* progress is recorded in moto (instance targets, lifecycle events with diagnostics, the
  deployment overview, the final status and error information), and the deployment's state
  changes are put on moto's EventBridge, so rules route them (e.g. to SQS) as on AWS.

An "instance" is a directory and a port (:class:`LocalInstance`); the app it runs is whatever the
bundle's hooks start. The agent stops those apps again when it stops.

This module is the agent's loop and the lifecycle steps; what they use lives beside it:
``deployment_config`` (batch sizes and the outcome), ``bundle_fetch`` (the revision from S3,
unpacked), ``local_instance``, ``deployment_progress`` (what moto reports while it runs) and
``processes`` (hook scripts and what they leave running); the appspec rules are ``appspec``'s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.events.models import events_backends

from appspec import LIFECYCLE_EVENTS, PREVIOUS_REVISION_HOOKS, AppSpec, AppSpecError, HookScript, file_copies
from sandbox import moto_extensions
from sandbox.bundle_fetch import BundleError, RevisionDownload, S3Revision, unpack
from sandbox.deployment_config import DeploymentConfig
from sandbox.deployment_progress import SKIPPED, SUCCEEDED, DeploymentProgress, Diagnostics, StepOutcome
from sandbox.local_instance import InstalledRevision, LocalInstance
from sandbox.processes import ScriptRunner, group_members, pid_alive, terminate_group, terminate_pid

logger = logging.getLogger(__name__)

LOG_TAIL_BYTES = 4096
EVENT_DETAIL_TYPE = "CodeDeploy Deployment State-change Notification"
EVENT_STATE = {"Succeeded": "SUCCESS", "Failed": "FAILURE", "Stopped": "STOP"}
HEALTH_CONSTRAINTS_MESSAGE = (
    "The overall deployment failed because too many individual instances failed deployment, too few "
    "healthy instances are available for deployment, or some instances in your deployment group are "
    "experiencing problems."
)


class TrafficControl(Protocol):
    """What BlockTraffic and AllowTraffic drive: the local load balancer."""

    def register(self, target_id: str, port: int) -> None: ...

    def deregister(self, target_id: str) -> None: ...

    def wait_drained(self, target_id: str, timeout: float) -> bool: ...

    def wait_healthy(self, target_id: str, timeout: float) -> bool: ...


@dataclass(frozen=True)
class Misbehaviour:
    """What the agent can be told to do wrong, to show the coordinator's watchdog a stuck
    deployment: ``not_polling`` leaves every instance Pending (CodeDeploy lists them; no agent
    starts a lifecycle event), ``hang_in`` keeps the named lifecycle event InProgress, and
    ``fail_download_on`` fails DownloadBundle on those instances as on an instance without S3
    access (the others download and go on, so a batch can hold a failed download and instances
    still at work). The first two last until the deployment is stopped (StopDeployment) or the
    agent stops."""

    not_polling: bool = False
    hang_in: str | None = None
    fail_download_on: frozenset[str] = frozenset()


DOWNLOAD_DENIED_MESSAGE = "Access Denied (the local agent was told to fail the download)"


@dataclass(frozen=True)
class Deployment:
    """What the agent needs of a moto ``DeploymentInfo``."""

    deployment_id: str
    application: str
    group: str
    group_id: str
    revision: S3Revision | None
    config: DeploymentConfig
    file_exists_behavior: str | None
    ignore_application_stop_failures: bool

    @classmethod
    def from_moto(cls, info: Any) -> Deployment:
        return cls(
            deployment_id=info.deployment_id,
            application=info.application_name,
            group=info.deployment_group_name,
            group_id=info.deployment_group.deployment_group_id,
            revision=S3Revision.from_moto(info.revision or {}),
            config=DeploymentConfig.named(str(info.deployment_config_name or "CodeDeployDefault.OneAtATime")),
            file_exists_behavior=info.file_exists_behavior,
            ignore_application_stop_failures=bool(info.ignore_application_stop_failures),
        )

    def environment(self) -> dict[str, str]:
        """CodeDeploy's variables for every hook script of this deployment (but LIFECYCLE_EVENT)."""
        return {
            "DEPLOYMENT_ID": self.deployment_id,
            "APPLICATION_NAME": self.application,
            "DEPLOYMENT_GROUP_NAME": self.group,
            "DEPLOYMENT_GROUP_ID": self.group_id,
            **(self.revision.environment() if self.revision else {}),
        }


def _log_tail(log: Path) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(max(log.stat().st_size - LOG_TAIL_BYTES, 0))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class _InstanceRun:
    """One instance's part of one deployment."""

    deployment: Deployment
    download: RevisionDownload | None
    progress: DeploymentProgress
    instance: LocalInstance
    previous: InstalledRevision | None  # the last successful revision: ApplicationStop's scripts
    current: InstalledRevision | None = None  # set by DownloadBundle

    @property
    def directory(self) -> Path:
        return self.instance.deployment_root / self.deployment.group_id / self.deployment.deployment_id

    @property
    def logs(self) -> Path:
        return self.directory / "logs"


@dataclass
class _Tally:
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0


class CodeDeployAgent:
    """Runs the ``Created`` deployments of the groups it serves on local instances.

    ``groups``: the (application, deployment group) pairs served, None for all. Every served
    group deploys to all ``instances``. ``extra_env`` is added to every hook's environment
    (e.g. shorter health timeouts for tests); hooks otherwise get a minimal environment plus
    CodeDeploy's variables, so the shell the agent was started from cannot leak into them.
    """

    def __init__(  # noqa: PLR0917 - the positional parameters are the agreed interface
        self,
        session: Any,
        instances: Sequence[LocalInstance],
        traffic: TrafficControl | None,
        region: str = "us-east-1",
        poll_interval_s: float = 0.2,
        hook_timeout_cap_s: float = 300.0,
        *,
        groups: Collection[tuple[str, str]] | None = None,
        traffic_timeout_s: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
        account_id: str = DEFAULT_ACCOUNT_ID,
    ) -> None:
        self.instances = list(instances)
        self._traffic = traffic
        self._region = region
        self._poll_interval_s = poll_interval_s
        self._hook_timeout_cap_s = hook_timeout_cap_s
        self._groups = None if groups is None else frozenset(groups)
        self._traffic_timeout_s = traffic_timeout_s
        self._extra_env = dict(extra_env or {})
        self._account_id = account_id
        # Clients are thread-safe; creating them is not, so make it once here.
        self._s3 = session.client("s3", region_name=region)
        self._runner = ScriptRunner()
        self._stopping = threading.Event()
        # One deployment at a time: the instances are shared by every group served.
        self._deploying = threading.Lock()
        self._thread: threading.Thread | None = None
        self._misbehaviour = Misbehaviour()

    def join(self, instance: LocalInstance) -> None:
        """An instance launched into the group (a scale-out): deployments that start from now on
        target it too; one already running does not."""
        self.instances.append(instance)

    def misbehave(self, misbehaviour: Misbehaviour) -> None:
        """From the next lifecycle step on, behave as ``misbehaviour`` says (``Misbehaviour()``:
        behave again)."""
        self._misbehaviour = misbehaviour

    # lifecycle

    def start(self) -> CodeDeployAgent:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="local-codedeploy-agent", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, kill running hooks, end a deployment in flight, and stop every app the
        hooks started: nothing this agent started outlives this call."""
        self._stopping.set()
        self._runner.close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._deploying:  # a deploy_now() in another thread ends too
            for instance in self.instances:
                self._shut_down(instance)

    def __enter__(self) -> CodeDeployAgent:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def deploy_now(self, deployment_id: str) -> str:
        """Run one ``Created`` deployment in the caller's thread; its final status."""
        if not moto_extensions.claim(deployment_id, self._region):
            raise ValueError(f"deployment {deployment_id} is not waiting to be run (status Created)")
        return self._run(deployment_id)

    # polling

    def _poll(self) -> None:
        while not self._stopping.wait(self._poll_interval_s):
            try:
                for deployment_id in self._waiting():
                    if self._stopping.is_set():
                        break
                    if moto_extensions.claim(deployment_id, self._region):
                        self._run(deployment_id)
            except Exception:
                # The thread must survive a bad deployment or a backend reset.
                logger.exception("local CodeDeploy agent: polling failed")

    def _waiting(self) -> list[str]:
        deployments = list(moto_extensions.backend(self._region, self._account_id).deployments.values())
        return [
            info.deployment_id
            for info in sorted(deployments, key=lambda info: info.create_time)
            if info.status == "Created"
            and (self._groups is None or (info.application_name, info.deployment_group_name) in self._groups)
        ]

    # one deployment

    def _run(self, deployment_id: str) -> str:
        with self._deploying:
            info = moto_extensions.backend(self._region, self._account_id).deployments[deployment_id]
            deployment = Deployment.from_moto(info)
            # The instances the deployment targets, fixed when it starts as CodeDeploy fixes them:
            # one that joins later (``join``) is left to the next deployment.
            instances = tuple(self.instances)
            logger.info(
                "deployment %s of %s/%s: %s to %d instance(s)",
                deployment_id,
                deployment.application,
                deployment.group,
                deployment.config.name,
                len(instances),
            )
            self._emit(deployment, "START")
            progress = DeploymentProgress(deployment_id, [i.instance_id for i in instances], self._region)
            try:
                status, code, message = self._deploy(deployment, progress, instances)
            except Exception as error:
                logger.exception("deployment %s: the agent failed", deployment_id)
                status, code, message = "Failed", "AGENT_ISSUE", f"local CodeDeploy agent error: {error}"
            moto_extensions.complete(
                deployment_id, status, error_code=code, error_message=message, region=self._region
            )
            self._emit(deployment, EVENT_STATE[status])
            logger.info("deployment %s: %s %s", deployment_id, status, code or "")
            return status

    def _deploy(
        self, deployment: Deployment, progress: DeploymentProgress, instances: Sequence[LocalInstance]
    ) -> tuple[str, str | None, str | None]:
        """Runs the batches; the final (status, error code, error message)."""
        if not instances:
            return "Failed", "NO_INSTANCES", "The deployment failed because no instances were found."
        if deployment.revision is None:
            self._skip_all(progress, instances)
            return "Failed", "INVALID_REVISION", "The local agent deploys S3 revisions only."
        if self._misbehaviour.not_polling:
            # The instances stay Pending, as CodeDeploy shows them when no agent polls, until
            # someone stops the deployment.
            self._wait_for_stop(deployment)
            self._skip_all(progress, instances)
            return self._interrupted(deployment)
        download = RevisionDownload(self._s3, deployment.revision)
        tally = self._run_batches(deployment, download, progress, instances)
        if self._should_stop(deployment):
            return self._interrupted(deployment)
        if deployment.config.succeeded(len(instances), tally.succeeded, tally.skipped):
            return "Succeeded", None, None
        return "Failed", "HEALTH_CONSTRAINTS", HEALTH_CONSTRAINTS_MESSAGE

    def _run_batches(
        self,
        deployment: Deployment,
        download: RevisionDownload,
        progress: DeploymentProgress,
        instances: Sequence[LocalInstance],
    ) -> _Tally:
        fleet = len(instances)
        untouched = list(instances)
        tally = _Tally()
        while untouched and not self._should_stop(deployment):
            size = deployment.config.next_batch_size(fleet, len(untouched), tally.succeeded, tally.failed)
            if size == 0:
                logger.info(
                    "deployment %s: too few healthy instances left to go on", deployment.deployment_id
                )
                break
            batch, untouched = untouched[:size], untouched[size:]
            runs = [
                _InstanceRun(deployment, download, progress, instance, previous=instance.last_successful)
                for instance in batch
            ]
            with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="codedeploy-instance") as pool:
                results = list(pool.map(self._deploy_instance, runs))
            tally.succeeded += results.count(True)
            tally.failed += results.count(False)
        self._skip_all(progress, untouched)
        tally.skipped = len(untouched)
        return tally

    def _skip_all(self, progress: DeploymentProgress, instances: Sequence[LocalInstance]) -> None:
        for instance in instances:
            progress.set_status(instance.instance_id, "Skipped")

    def _interrupted(self, deployment: Deployment) -> tuple[str, str, str]:
        """The outcome of a deployment a stop request or the agent's own stop cut short."""
        if moto_extensions.stop_requested(deployment.deployment_id, self._region):
            return "Stopped", "MANUAL_STOP", "The deployment was stopped by a StopDeployment request."
        return "Failed", "AGENT_ISSUE", "The local CodeDeploy agent stopped during the deployment."

    def _wait_for_stop(self, deployment: Deployment) -> None:
        while not self._should_stop(deployment):
            self._stopping.wait(self._poll_interval_s)

    def _should_stop(self, deployment: Deployment) -> bool:
        return self._stopping.is_set() or moto_extensions.stop_requested(
            deployment.deployment_id, self._region
        )

    # one instance

    def _deploy_instance(self, run: _InstanceRun) -> bool:
        """The lifecycle events in order, up to the first failure; True if all passed."""
        instance_id = run.instance.instance_id
        run.progress.set_status(instance_id, "InProgress")
        run.logs.mkdir(parents=True, exist_ok=True)
        for name in LIFECYCLE_EVENTS:
            if self._should_stop(run.deployment):
                # Stop at an event boundary, as a stop request does on AWS; the rest is Skipped.
                run.progress.set_status(instance_id, "Failed")
                return False
            run.progress.event_started(instance_id, name)
            if name == self._misbehaviour.hang_in:
                self._wait_for_stop(run.deployment)  # the event stays InProgress meanwhile
                run.progress.event_finished(
                    instance_id,
                    name,
                    StepOutcome.failed(f"{name} was still running when the deployment stopped"),
                )
                run.progress.set_status(instance_id, "Failed")
                return False
            try:
                outcome = self._step(run, name)
            except Exception as error:
                logger.exception(
                    "deployment %s, %s: %s failed", run.deployment.deployment_id, instance_id, name
                )
                outcome = StepOutcome.failed(f"{type(error).__name__}: {error}")
            run.progress.event_finished(instance_id, name, outcome)
            if outcome.status == "Failed":
                logger.warning(
                    "deployment %s, %s: %s failed: %s",
                    run.deployment.deployment_id,
                    instance_id,
                    name,
                    outcome.diagnostics.message if outcome.diagnostics else "",
                )
                run.progress.set_status(instance_id, "Failed")
                return False
        run.instance.last_successful = run.current
        run.instance.save()
        run.progress.set_status(instance_id, "Succeeded")
        return True

    def _step(self, run: _InstanceRun, name: str) -> StepOutcome:
        steps: dict[str, Callable[[_InstanceRun], StepOutcome]] = {
            "BlockTraffic": self._block_traffic,
            "DownloadBundle": self._download_bundle,
            "Install": self._install,
            "AllowTraffic": self._allow_traffic,
        }
        if name in steps:
            return steps[name](run)
        revision = run.previous if name in PREVIOUS_REVISION_HOOKS else run.current
        if name == "ApplicationStart" and run.current is not None:
            # From here on this revision's app may run: it is the one to stop on shutdown.
            run.instance.running = run.current
            run.instance.save()
        outcome = self._run_hook(run, name, revision)
        if (
            outcome.status == "Failed"
            and name in PREVIOUS_REVISION_HOOKS
            and run.deployment.ignore_application_stop_failures
        ):
            # The deployment asked to go on; the diagnostics keep what went wrong.
            return StepOutcome("Succeeded", outcome.diagnostics)
        return outcome

    def _block_traffic(self, run: _InstanceRun) -> StepOutcome:
        if self._traffic is None:
            return SKIPPED
        self._traffic.deregister(run.instance.instance_id)
        if not self._traffic.wait_drained(run.instance.instance_id, self._traffic_timeout_s):
            return StepOutcome.failed(
                f"the instance was not drained within {self._traffic_timeout_s:g} seconds"
            )
        return SUCCEEDED

    def _allow_traffic(self, run: _InstanceRun) -> StepOutcome:
        if self._traffic is None:
            return SKIPPED
        self._traffic.register(run.instance.instance_id, run.instance.port)
        if not self._traffic.wait_healthy(run.instance.instance_id, self._traffic_timeout_s):
            return StepOutcome.failed(
                "the instance did not become healthy in the load balancer within "
                f"{self._traffic_timeout_s:g} seconds"
            )
        return SUCCEEDED

    def _download_bundle(self, run: _InstanceRun) -> StepOutcome:
        revision = run.deployment.revision
        if run.download is None or revision is None:
            return StepOutcome.failed("no S3 revision to download")
        if run.instance.instance_id in self._misbehaviour.fail_download_on:
            return StepOutcome.failed(DOWNLOAD_DENIED_MESSAGE)
        try:
            data = run.download.fetch()
        except Exception as error:  # S3 refusals and transport errors alike fail this instance
            return StepOutcome.failed(f"could not download s3://{revision.bucket}/{revision.key}: {error}")
        archive = run.directory / f"bundle.{revision.bundle_type}"
        archive.write_bytes(data)
        bundle_dir = run.directory / "deployment-archive"
        try:
            unpack(archive, revision.bundle_type, bundle_dir)
            AppSpec.load(bundle_dir)  # an unreadable appspec fails here, as on EC2
        except (BundleError, AppSpecError, zipfile.BadZipFile, tarfile.TarError) as error:
            return StepOutcome.failed(str(error))
        run.current = InstalledRevision(bundle_dir, run.deployment.environment())
        return SUCCEEDED

    def _install(self, run: _InstanceRun) -> StepOutcome:
        """Copies the appspec ``files`` under the instance's ``fs/``. Like the real agent, it
        first removes what the previous install copied, then applies file_exists_behavior to
        anything else in the way."""
        if run.current is None:
            return StepOutcome.failed("no revision was downloaded")
        appspec = run.current.appspec
        behavior = run.deployment.file_exists_behavior or appspec.file_exists_behavior or "DISALLOW"
        root = run.instance.install_root
        try:
            copies = [copy for m in appspec.files for copy in file_copies(run.current.bundle_dir, m, root)]
        except AppSpecError as error:
            return StepOutcome.failed(str(error))
        for relative in run.instance.installed_files:
            (root / relative).unlink(missing_ok=True)
        installed: list[str] = []
        for source, target in copies:
            if target.exists() and behavior == "DISALLOW":
                return StepOutcome.failed(
                    "The deployment failed because a specified file already exists at this location: "
                    f"{target}"
                )
            if target.exists() and behavior == "RETAIN":
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            installed.append(str(target.relative_to(root)))
        run.instance.installed_files = installed
        run.instance.save()
        return SUCCEEDED

    def _run_hook(self, run: _InstanceRun, name: str, revision: InstalledRevision | None) -> StepOutcome:
        """The hook's scripts in order, stopping at the first failure. No revision (a first
        deploy, for the previous-revision hooks) or no scripts: Skipped."""
        if revision is None:
            return SKIPPED
        scripts = revision.appspec.hooks.get(name, ())
        if not scripts:
            return SKIPPED
        log = run.logs / f"{name}.log"
        # Scripts of the previous revision run for *this* deployment: its variables.
        env = self._hook_environment(run.instance, run.deployment.environment(), name)
        for script in scripts:
            outcome = self._run_script(run.instance, revision, script, env, log)
            if outcome.status == "Failed":
                return outcome
        return StepOutcome(
            "Succeeded", Diagnostics("Success", scripts[-1].location, "Succeeded", _log_tail(log))
        )

    def _run_script(
        self,
        instance: LocalInstance,
        revision: InstalledRevision,
        script: HookScript,
        env: Mapping[str, str],
        log: Path,
    ) -> StepOutcome:
        path = revision.bundle_dir / script.location.lstrip("/")
        if not path.is_file():
            return StepOutcome.failed(
                f"Script does not exist at specified location: {path}", "ScriptMissing", script.location
            )
        timeout_s = min(script.timeout_s, self._hook_timeout_cap_s)
        result = self._runner.run(
            path, cwd=revision.bundle_dir, env=env, timeout_s=timeout_s, log=log, sessions=instance.sessions
        )
        tail = _log_tail(log)
        if result.killed:
            return StepOutcome.failed(
                "the local agent stopped while the script ran", "UnknownError", script.location, tail
            )
        if result.timed_out:
            return StepOutcome.failed(
                f"Script at specified location: {script.location} "
                f"failed to complete in {timeout_s:g} seconds",
                "ScriptTimedOut",
                script.location,
                tail,
            )
        if result.exit_code != 0:
            runas = f" run as user {script.runas}" if script.runas else ""
            return StepOutcome.failed(
                f"Script at specified location: {script.location}{runas} "
                f"failed with exit code {result.exit_code}",
                "ScriptFailed",
                script.location,
                tail,
            )
        return SUCCEEDED

    def _hook_environment(
        self, instance: LocalInstance, deployment_env: Mapping[str, str], lifecycle_event: str
    ) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            **self._extra_env,
            **deployment_env,
            **instance.environment(),
            "LIFECYCLE_EVENT": lifecycle_event,
        }

    # events

    def _emit(self, deployment: Deployment, state: str) -> None:
        """The deployment state change, put on moto's default event bus as CodeDeploy does; rules
        route it (to SQS in the sandbox). Delivery is best effort on AWS too: a failure is logged."""
        arn = f"arn:aws:codedeploy:{self._region}:{self._account_id}"
        entry = {
            "Source": "aws.codedeploy",
            "DetailType": EVENT_DETAIL_TYPE,
            "Detail": json.dumps(
                {
                    "deploymentId": deployment.deployment_id,
                    "state": state,
                    "application": deployment.application,
                    "deploymentGroup": deployment.group,
                    "instanceGroupId": deployment.group_id,
                    "region": self._region,
                }
            ),
            "Resources": [
                f"{arn}:application:{deployment.application}",
                f"{arn}:deploymentgroup:{deployment.application}/{deployment.group}",
            ],
        }
        try:
            [result] = events_backends[self._account_id][self._region].put_events([entry])
        except Exception:
            logger.exception("deployment %s: could not put the %s event", deployment.deployment_id, state)
            return
        if result.get("ErrorCode"):
            logger.warning("deployment %s: %s event refused: %s", deployment.deployment_id, state, result)

    # shutdown

    def _shut_down(self, instance: LocalInstance) -> None:
        """ApplicationStop of the running revision, then whatever is still alive: pids from
        pid files under INSTANCE_DIR (if started from this instance's revisions) and the
        sessions of the hooks run here."""
        revision = instance.running or instance.last_successful
        if revision is not None and revision.bundle_dir.is_dir():
            self._application_stop_on_shutdown(instance, revision)
        for pid in self._pids_from_files(instance):
            logger.info("%s: stopping leftover pid %d", instance.instance_id, pid)
            terminate_pid(pid)
        for session in sorted(instance.sessions):
            if group_members(session):
                logger.info("%s: killing leftover process group %d", instance.instance_id, session)
                terminate_group(session)
        instance.sessions.clear()

    def _application_stop_on_shutdown(self, instance: LocalInstance, revision: InstalledRevision) -> None:
        try:
            scripts = revision.appspec.hooks.get("ApplicationStop", ())
        except AppSpecError:
            return
        runner = ScriptRunner()  # the agent's own runner is closed by now
        env = self._hook_environment(instance, revision.environment, "ApplicationStop")
        log = instance.app_dir / "agent-shutdown.log"
        for script in scripts:
            path = revision.bundle_dir / script.location.lstrip("/")
            if path.is_file():
                timeout_s = min(script.timeout_s, self._hook_timeout_cap_s)
                result = runner.run(
                    path,
                    cwd=revision.bundle_dir,
                    env=env,
                    timeout_s=timeout_s,
                    log=log,
                    sessions=instance.sessions,
                )
                if result.exit_code != 0:
                    logger.warning("%s: ApplicationStop on shutdown: %s", instance.instance_id, result)

    def _pids_from_files(self, instance: LocalInstance) -> Iterator[int]:
        for pid_file in sorted(instance.app_dir.glob("*.pid")):
            try:
                pid = int(pid_file.read_text(encoding="utf-8").strip())
            except (OSError, ValueError):
                continue
            if pid != os.getpid() and pid_alive(pid) and self._started_here(instance, pid):
                yield pid

    @staticmethod
    def _started_here(instance: LocalInstance, pid: int) -> bool:
        """A pid file can be stale and its pid reused: only kill a process of one of our hook
        sessions, or one whose command line points into this instance's directory."""
        try:
            if os.getsid(pid) in instance.sessions:
                return True
            command = (
                Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
        except OSError:
            return False
        return str(instance.root) in command
