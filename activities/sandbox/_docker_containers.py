"""The Docker backend's blocking side: containers and runtime directories.

Every call here talks to the Docker daemon (or the file system) and blocks, so
`DockerSandbox` runs each in a thread, off the event loop. A container is named
after its sandbox and labelled with what it is for (task, sandbox, worktree,
role, owner): a running one is reused only while all of that still holds.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount, Ulimit

from activities.sandbox._agent_link import AGENT_ARGV, RUN_MOUNT, listen, remove_directory
from activities.sandbox._base import (
    MAX_OPEN_FILES,
    SANDBOX_ENV,
    WORKSPACE,
    SandboxUnavailable,
    mirror_mounts,
    resolve_worktree,
    writable,
)
from activities.sandbox._owner import hand_over, sandbox_identity
from switchboard.contracts import SandboxSpec
from switchboard.settings import Settings

LABEL_TASK = "switchboard.task"
LABEL_SANDBOX = "switchboard.sandbox"
LABEL_WORKTREE = "switchboard.worktree"
LABEL_ROLE = "switchboard.role"
LABEL_OWNER = "switchboard.owner"
TMPFS_SIZE = "512m"
OOM_REPORT_SECONDS = 5
"""How long a container whose agent was lost may take to stop (and report an OOM kill)."""
RUNTIME_DIR = "sandbox-run"
"""Under the data directory: one short-lived directory per container launch."""


class Containers:
    """The containers and runtime directories of one `DockerSandbox` (blocking calls).

    Args:
        settings: image and limits.
        client: the Docker client.
        runtime: where the runtime directories of launches go.
        seccomp: Switchboard's seccomp program (BPF) every container's agent loads onto
            itself, on top of the daemon's own profile.
    """

    def __init__(
        self, settings: Settings, client: docker.DockerClient, runtime: Path, seccomp: bytes
    ) -> None:
        self._settings = settings
        self._client = client
        self.runtime = runtime
        self._seccomp = seccomp
        self.daemon_profile = "not checked yet"
        """The daemon's seccomp profile as `docker info` names it (`default`, `builtin`)."""

    def check(self) -> None:
        """The daemon answers, applies a seccomp profile, and the sandbox image exists."""
        try:
            self._client.ping()
            self.daemon_profile = daemon_seccomp(self._client.info())
            self._client.images.get(self._settings.sandbox_image)
        except ImageNotFound as exc:
            raise SandboxUnavailable(
                f"the sandbox image {self._settings.sandbox_image} is missing; build it with "
                "infra/sandbox/build-image.sh (offline) or infra/sandbox/Dockerfile"
            ) from exc
        except (DockerException, OSError) as exc:
            raise SandboxUnavailable(f"no Docker daemon answers: {exc}") from exc

    def task_ids(self) -> set[str]:
        """Tasks with a container or a runtime directory here."""
        try:
            containers = self._client.containers.list(
                all=True, filters={"label": LABEL_TASK}, ignore_removed=True
            )
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker failed: {exc}") from exc
        tasks = {c.labels[LABEL_TASK] for c in containers if c.labels.get(LABEL_TASK)}
        return tasks | {task_of(s) for s in self.runtime_dirs()}

    def launch(
        self,
        spec: SandboxSpec,
        labels: dict[str, str],
        directory: Path,
        *,
        hand_over_first: bool = True,
    ) -> socket.socket:
        """Make the runtime directory and start the container; the listening socket.

        `hand_over_first`: give a writable worktree to the sandbox uid first (files
        host-side git wrote since), unless the caller just did.
        """
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)  # other users: keep out
        if hand_over_first and writable(spec.role):
            hand_over(Path(labels[LABEL_WORKTREE]), self._settings)
        listener = listen(directory, self._seccomp)
        try:
            self._create(spec, labels, directory)
        except BaseException:
            listener.close()
            remove_directory(directory)
            raise
        return listener

    def _create(self, spec: SandboxSpec, labels: dict[str, str], directory: Path) -> None:
        api = self._client.api
        try:
            host_config = api.create_host_config(**self._host_config(spec, labels, directory))
            for attempt in (1, 2):
                try:
                    created = api.create_container(
                        self._settings.sandbox_image,
                        name=container_name(spec.sandbox_id),
                        entrypoint=AGENT_ARGV,  # PID 1 is the agent: no docker-init
                        user=labels[LABEL_OWNER],  # the agent and its commands
                        working_dir=WORKSPACE,
                        environment=SANDBOX_ENV,
                        hostname="sandbox",
                        labels=labels,
                        host_config=host_config,
                        detach=True,
                        use_config_proxy=False,  # no proxy variables from the host's config
                    )
                except APIError as exc:
                    if exc.status_code != 409 or attempt == 2:
                        raise
                    # A container of an earlier agent (lost, stopped, another role): redo it.
                    self.remove_container(spec.sandbox_id)
                    continue
                api.start(created["Id"])
                return
        except DockerException as exc:
            raise SandboxUnavailable(f"cannot start the sandbox container: {exc}") from exc

    def _host_config(
        self, spec: SandboxSpec, labels: dict[str, str], directory: Path
    ) -> dict[str, object]:
        """The container's isolation and limits, as `create_host_config` arguments."""
        worktree = Path(labels[LABEL_WORKTREE])
        mounts = [
            Mount(mirror, mirror, type="bind", read_only=True) for mirror in mirror_mounts(spec)
        ]
        mounts.append(
            Mount(WORKSPACE, str(worktree), type="bind", read_only=not writable(spec.role))
        )
        dot_git = worktree / ".git"
        if dot_git.exists() and not dot_git.is_symlink():
            mounts.append(Mount(f"{WORKSPACE}/.git", str(dot_git), type="bind", read_only=True))
        mounts.append(Mount(RUN_MOUNT, str(directory), type="bind", read_only=True))
        s = self._settings
        memory = f"{s.sandbox_memory_mb}m"
        return {
            "network_mode": "none",
            "cap_drop": ["ALL"],
            # No seccomp= here: the daemon's default profile applies (check() made sure
            # there is one), and the agent stacks Switchboard's filter on it.
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE},mode=1777"},
            "mounts": mounts,
            "mem_limit": memory,
            "memswap_limit": memory,
            "nano_cpus": int(s.sandbox_cpus * 1e9),
            # A container weighs on the CPU as the worker that starts it (its niceness).
            "cpu_shares": cpu_shares(os.getpriority(os.PRIO_PROCESS, 0)),
            "pids_limit": s.sandbox_pids_limit,
            "ulimits": [
                Ulimit(name="fsize", soft=s.sandbox_file_bytes, hard=s.sandbox_file_bytes),
                Ulimit(name="nofile", soft=MAX_OPEN_FILES, hard=MAX_OPEN_FILES),
                Ulimit(name="core", soft=0, hard=0),
            ],
        }

    def not_running(self, sandbox_id: str) -> str | None:
        """Why the container does not run (with the agent's last words), or None."""
        try:
            container = self._client.containers.get(container_name(sandbox_id))
            if container.status == "running":
                return None
            logs = container.logs(tail=5).decode(errors="replace").strip()
        except NotFound:
            return "the container is gone"
        except DockerException as exc:
            return f"Docker failed: {exc}"
        code = container.attrs.get("State", {}).get("ExitCode")
        return f"the container exited ({code}): {logs or 'no output'}"

    def oom_killed(self, sandbox_id: str) -> bool:
        """Whether the OOM killer struck the container (once it has stopped: the agent is gone)."""
        name = container_name(sandbox_id)
        try:
            # Docker records the OOM event a moment after the agent's connection drops.
            self._client.api.wait(name, timeout=OOM_REPORT_SECONDS)
            state = self._client.api.inspect_container(name)["State"]
        except (DockerException, OSError):  # requests errors are OSErrors
            return False
        return bool(state.get("OOMKilled"))

    def kill(self, sandbox_id: str) -> None:
        """SIGKILL the container's PID 1, which ends its PID namespace."""
        try:
            self._client.api.kill(container_name(sandbox_id))
        except APIError as exc:
            if exc.status_code not in (404, 409):  # gone, or not running any more
                raise SandboxUnavailable(f"Docker failed: {exc}") from exc
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker failed: {exc}") from exc

    def remove_container(self, sandbox_id: str) -> None:
        with contextlib.suppress(NotFound):
            try:
                self._client.api.remove_container(container_name(sandbox_id), force=True)
            except DockerException as exc:
                raise SandboxUnavailable(f"Docker failed: {exc}") from exc

    def remove(self, filters: dict[str, str], sandboxes: Callable[[str], bool]) -> None:
        """Remove the containers `filters` match and the runtime directories of `sandboxes`."""
        try:
            containers = self._client.containers.list(
                all=True, filters=filters, ignore_removed=True
            )
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker failed: {exc}") from exc
        for container in containers:
            with contextlib.suppress(NotFound):
                container.remove(force=True)
        for sandbox_id, directory in self.runtime_dirs().items():
            if sandboxes(sandbox_id):
                remove_directory(directory)

    def runtime_dirs(self) -> dict[str, Path]:
        """Runtime directories left by launches (of a worker that died mid-start), by sandbox."""
        try:
            entries = list(self.runtime.iterdir())
        except OSError:
            return {}
        return {entry.name.rpartition(".")[0]: entry for entry in entries}


def daemon_seccomp(info: dict[str, object]) -> str:
    """The seccomp profile the daemon gives a container that names none.

    Raises:
        SandboxUnavailable: the daemon applies none (no seccomp support, or its default
            set to `unconfined`): a container would get Switchboard's filter alone.
    """
    options = info.get("SecurityOptions")
    for option in options if isinstance(options, list) else []:
        fields = dict(part.partition("=")[::2] for part in str(option).split(","))
        if fields.get("name") == "seccomp":
            profile = fields.get("profile", "default")
            if profile != "unconfined":
                return profile
    raise SandboxUnavailable(
        "the Docker daemon applies no seccomp profile (SecurityOptions: "
        f"{options!r}); Switchboard stacks its filter on Docker's default profile and "
        "refuses to run without it"
    )


def labels_for(spec: SandboxSpec, settings: Settings) -> dict[str, str]:
    """What a container is for: a running one is reused only when all of it still holds."""
    worktree = resolve_worktree(spec)
    uid, gid = sandbox_identity(worktree, settings)
    return {
        LABEL_TASK: task_of(spec.sandbox_id),
        LABEL_SANDBOX: spec.sandbox_id,
        LABEL_WORKTREE: str(worktree),
        LABEL_ROLE: spec.role.value,
        LABEL_OWNER: f"{uid}:{gid}",
    }


def task_of(sandbox_id: str) -> str:
    """`<task_id>-<index>` -> `<task_id>`."""
    head, _, tail = sandbox_id.rpartition("-")
    return head if head and tail.isdigit() else sandbox_id


def safe_name(sandbox_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sandbox_id)


def container_name(sandbox_id: str) -> str:
    return "switchboard-" + safe_name(sandbox_id)


def cpu_shares(nice: int) -> int:
    """Docker's `cpu_shares` for a container that should weigh as a process at `nice`:
    the kernel's CFS weight, 1024 at 0 and ~1.25 times less per step (110 at 10)."""
    return max(2, round(1024 / 1.25**nice))
