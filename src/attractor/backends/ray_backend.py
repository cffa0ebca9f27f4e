"""Run chunks as Ray tasks: a local Ray instance, or a cluster at ``run.ray_address``.

Workers get plain data (the config as JSON and plan rows), build the task themselves and
return their members' snapshots as safetensors bytes through the object store; the
driver alone writes the run directory, so worker nodes need no shared filesystem (but the
same ``attractor`` and ``torch`` installed). A chunk whose worker process or node dies is
retried ``run.max_retries`` times; an exception inside training is not retried (a
diverged member is not an exception: it is recorded as data).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attractor.config import RunConfig
from attractor.errors import UserError, require

#: Ray's own settings for a locked-down machine, set unless the user already set them:
#: no usage statistics sent home, no import-time nags. (The dashboard is off and a local
#: instance listens on 127.0.0.1 only: see ``loopback_only``.)
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}
#: Ray's single-machine mode: with it off, Ray takes the loopback address for the node (and so
#: binds GCS, raylet and workers to it). ``_node_ip_address="127.0.0.1"`` alone is not enough:
#: Ray replaces a loopback node address with the machine's external one.
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Ray puts unix sockets under its temp dir (``<dir>/r/session_<date>_<pid>/sockets/plasma_store``)
#: and AF_UNIX paths stop at 107 bytes: a longer temp dir fails at start-up.
MAX_TEMP_DIR = 36


def temp_dir(out: Path) -> Path:
    """Ray's temp dir for a local instance: beside the run directory, so users never collide in
    /tmp/ray (or per user in the system temp dir when that path is too long for Ray's sockets).
    """
    beside = out.resolve().parent / ".ray"
    if len(str(beside)) <= MAX_TEMP_DIR:
        return beside
    return Path(tempfile.gettempdir()) / f"attractor-ray-{os.getuid()}"


def private_dir(directory: Path) -> Path:
    """Make ``directory`` owner-only (0700) and return the folder inside it that Ray may use.

    Ray makes its own temp dir world-writable (0777), so it gets a folder inside one only this
    user can enter; a directory someone else owns (a planted ``/tmp/attractor-ray-<uid>``) is
    refused rather than trusted.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.is_symlink() or directory.stat().st_uid != os.getuid():
        raise UserError(
            f"Ray's temp dir {directory} is not yours (another user or a link made it); remove it "
            "or run from another directory"
        )
    directory.chmod(0o700)
    return directory / "r"


@contextmanager
def loopback_only(ray: Any) -> Iterator[None]:
    """While a local instance starts: Ray's single-machine mode, in which its node is 127.0.0.1.

    Ray reads the switch when it is first imported (from the environment), so an already
    imported Ray gets the module constant set too; both are put back after start-up (workers
    get the node address on their command line, not from the switch).
    """
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants = None  # a Ray without the constant reads the environment alone
    saved_env = os.environ.get(SINGLE_MACHINE)
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[SINGLE_MACHINE] = "0"
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE, None)
        else:
            os.environ[SINGLE_MACHINE] = saved_env
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = saved


def attractor_chunk(fn: Callable[..., dict[str, Any]], threads: int, *job: Any) -> dict[str, Any]:
    """One chunk on a Ray worker (its process title reads ``ray::attractor_chunk`` meanwhile)."""
    import torch

    torch.set_num_threads(threads)  # the CPUs Ray reserved for this task, no more
    return fn(*job)


def _check_reachable(address: str) -> None:
    """Refuse an address nobody listens on now, instead of Ray's long reconnect loop."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"--ray-address '{address}' is not HOST:PORT (the address `ray start --head` prints, "
            "e.g. 10.0.0.1:6379)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at --ray-address '{address}' ({exc.strerror or exc}); start "
            "one with `ray start --head` or leave the option out for a local instance"
        ) from None


def _init(ray: Any, run: RunConfig, out: Path) -> None:
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if run.ray_address:
        _check_reachable(run.ray_address)
        try:
            ray.init(address=run.ray_address, **quiet)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"could not connect to the Ray cluster at --ray-address '{run.ray_address}' "
                f"({line})"
            ) from None
        return
    with loopback_only(ray):
        ray.init(
            num_cpus=run.workers or os.cpu_count(),
            include_dashboard=False,
            _temp_dir=str(private_dir(temp_dir(out))),
            _node_ip_address="127.0.0.1",
            **quiet,
        )
    node = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node).is_loopback:
        # Never run an unauthenticated Ray reachable from the network, even if Ray changes.
        ray.shutdown()
        raise UserError(
            f"the local Ray instance started on {node}, not on 127.0.0.1; start one yourself "
            "(`ray start --head --node-ip-address 127.0.0.1`) and pass --ray-address"
        )


@contextmanager
def connected(run: RunConfig, out: Path) -> Iterator[RayBackend]:
    """Join (or start) Ray for one run; a Ray instance this call started is shut down after it."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray = require("ray", "ray")
    started = (
        not ray.is_initialized()
    )  # an instance the caller started (tests, notebooks) is reused
    if started:
        _init(ray, run, out)
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < run.num_cpus:
            raise UserError(
                f"run.num_cpus = {run.num_cpus} but the Ray cluster has {cpus:g} CPUs; no chunk "
                "could ever be scheduled"
            )
        yield RayBackend(ray, run)
    finally:
        if started:
            ray.shutdown()


class RayBackend:
    """Chunks as Ray tasks with ``run.num_cpus`` CPUs each; results come back as bytes."""

    name = "ray"
    shares_filesystem = False

    def __init__(self, ray: Any, run: RunConfig) -> None:
        self.ray = ray
        self.run = run

    def map(
        self,
        fn: Callable[..., dict[str, Any]],
        jobs: list[tuple],
        on_result: Callable[[dict[str, Any]], None],
        on_step: Callable[[int], None],
    ) -> None:
        """Submit every job, report results as they finish, cancel the rest on failure."""
        ray, run = self.ray, self.run
        remote = ray.remote(
            num_cpus=run.num_cpus, max_retries=run.max_retries, retry_exceptions=False
        )(attractor_chunk)
        pending = [remote.remote(fn, run.num_cpus, *job) for job in jobs]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    result = ray.get(done[0])
                except (
                    ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError,
                    ray.exceptions.OutOfMemoryError,
                ) as exc:
                    raise UserError(
                        f"a chunk lost its Ray worker {run.max_retries + 1} times "
                        f"({type(exc).__name__}); finished chunks are kept: "
                        "run the same command again to resume, with a smaller run.chunk_size if "
                        "workers ran out of memory"
                    ) from None
                on_result(result)
                on_step(result["trained"])
        finally:
            for (
                ref
            ) in pending:  # a failed or interrupted run leaves no chunks running on the cluster
                ray.cancel(ref, force=True)
