"""A local "EC2 instance" of the sandbox's CodeDeploy agent: a directory and a port, with the
revision unpacked on it and the state that survives an agent restart."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appspec import AppSpec


@dataclass(frozen=True)
class InstalledRevision:
    """A revision unpacked on an instance, with the hook environment of the deployment that
    installed it (its ApplicationStop may run later, from another deployment or on shutdown)."""

    bundle_dir: Path
    environment: Mapping[str, str]

    @property
    def appspec(self) -> AppSpec:
        return AppSpec.load(self.bundle_dir)

    def as_json(self) -> dict[str, Any]:
        return {"bundle_dir": str(self.bundle_dir), "environment": dict(self.environment)}

    @classmethod
    def from_json(cls, value: Any) -> InstalledRevision | None:
        if not isinstance(value, dict):
            return None
        return cls(Path(value["bundle_dir"]), dict(value.get("environment", {})))


class LocalInstance:
    """One "EC2 instance": a directory and a port.

    Under ``root``: ``deployment-root/<group id>/<deployment id>/`` holds each deployment's
    archive, unpacked revision (``deployment-archive``) and hook logs, as on EC2; ``app/`` is
    the ``INSTANCE_DIR`` the app keeps its pid file and logs in, the same for every revision (the
    next ApplicationStop finds the running app through it); ``fs/`` is where Install copies the
    appspec ``files`` (their destinations re-rooted here); ``state.json`` remembers the last
    successful and the running revision across agent restarts.
    """

    def __init__(self, instance_id: str, port: int, root: Path) -> None:
        self.instance_id = instance_id
        self.port = port
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.app_dir.mkdir(exist_ok=True)
        # Sessions (process groups) of the hook scripts run here: anything they left running
        # (the app) is in one of them, which is how stop() finds stragglers.
        self.sessions: set[int] = set()
        self._lock = threading.Lock()
        state = self._load_state()
        self.last_successful = InstalledRevision.from_json(state.get("last_successful"))
        self.running = InstalledRevision.from_json(state.get("running"))
        self.installed_files: list[str] = list(state.get("installed_files", []))

    def __repr__(self) -> str:
        return f"LocalInstance({self.instance_id!r}, port={self.port}, root={str(self.root)!r})"

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

    @property
    def deployment_root(self) -> Path:
        return self.root / "deployment-root"

    @property
    def install_root(self) -> Path:
        return self.root / "fs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def environment(self) -> dict[str, str]:
        """The local-demo contract (bundles/local-demo/README.md): where the app listens and
        keeps its state."""
        return {"PORT": str(self.port), "INSTANCE_DIR": str(self.app_dir), "INSTANCE_NAME": self.instance_id}

    def save(self) -> None:
        state = {
            "last_successful": self.last_successful.as_json() if self.last_successful else None,
            "running": self.running.as_json() if self.running else None,
            "installed_files": self.installed_files,
        }
        with self._lock:
            temporary = self.state_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(state, indent=2), encoding="utf-8")
            temporary.replace(self.state_file)

    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}
