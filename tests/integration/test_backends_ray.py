"""The Ray backend on a local cluster of 2 worker nodes: same bits as local, and faults survived.

One cluster per module (Ray's start-up is the slow part); every test connects to it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from attractor.config import RunConfig
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config, write_toml

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

# 8 members in chunks of 2: 4 chunks over the 2 worker nodes.
RUN = {"chunk_size": 2, "snapshots": 3, "backend": "ray"}


def _config(steps: int = 60, **run):
    return tiny_config(trainer={"steps": steps}, plan={"members": 8}, run={**RUN, **run})


def _pid() -> int:
    return os.getpid()


def _loopback(host: str) -> bool:
    address = ipaddress.ip_address(host.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # '::ffff:127.0.0.1' is loopback too
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def test_local_instance_listens_on_loopback_only_and_keeps_its_files_private(
    tmp_path: Path,
) -> None:
    # First in the module on purpose: the cluster fixture below would be reused instead.
    assert not ray.is_initialized(), "a Ray instance is already up: this test needs its own"
    psutil = pytest.importorskip("psutil")
    from attractor.backends.ray_backend import connected, temp_dir

    out = tmp_path / "run"
    with connected(RunConfig(backend="ray", workers=1), out) as backend:
        # One task, so a worker process exists and is checked too.
        assert backend.ray.get(backend.ray.remote(_pid).remote()) != os.getpid()
        listening = [
            (proc.name(), conn.laddr)
            for proc in psutil.Process().children(recursive=True)
            for conn in proc.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        ]
        assert backend.ray.util.get_node_ip_address() == "127.0.0.1"
    assert listening, "no listening socket seen: the check would pass vacuously"
    exposed = [(name, addr) for name, addr in listening if not _loopback(addr.ip)]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
    private = temp_dir(out)
    assert private.stat().st_mode & 0o777 == 0o700
    assert any((private / "r").iterdir()), "Ray's session files are not inside the private dir"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray's files (and unix sockets: keep the path short) go here, not /tmp/ray; the
    # killed-driver test's subprocess inherits it and so finds the cluster.
    os.environ["RAY_TMPDIR"] = str(tmp_path_factory.mktemp("ray"))
    # The head runs no tasks, so every chunk runs on one of the 2 worker nodes.
    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    for _ in range(2):
        nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()
    os.environ.clear()
    os.environ.update(saved)


def _final(ens: Ensemble) -> dict[int, dict[str, torch.Tensor]]:
    return {m: ens.params(m) for m in ens.members}


def _assert_same(a: Ensemble, b: Ensemble) -> None:
    pa, pb = _final(a), _final(b)
    assert pa.keys() == pb.keys() and pa
    for member in pa:
        for name in pa[member]:
            assert torch.equal(pa[member][name], pb[member][name]), (member, name)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    return train(_config(backend="local"), tmp_path_factory.mktemp("local") / "run")


def test_ray_gives_the_local_parameters_bit_for_bit(
    cluster, local_run: Ensemble, tmp_path: Path
) -> None:
    # process == local on the same plan: tests/integration/test_backends.py
    on_ray = train(_config(), tmp_path / "ray")
    assert on_ray.members == list(range(8))
    assert on_ray.manifest["config"]["run"]["backend"] == "ray"
    _assert_same(local_run, on_ray)
    # The driver wrote every file from the bytes workers returned: same metrics as local.
    assert (
        on_ray.metrics.sort_values(["member", "step"])
        .reset_index(drop=True)
        .equals(local_run.metrics.sort_values(["member", "step"]).reset_index(drop=True))
    )


def _chunk_pids() -> list[int]:
    """Ray workers busy with a chunk: Ray titles them ``ray::attractor_chunk`` meanwhile."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ray::attractor_chunk" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_killed_worker_is_retried_and_the_ensemble_is_unchanged(
    cluster, local_run: Ensemble, tmp_path: Path
) -> None:
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_busy_worker() -> None:
        while not stop.is_set() and not killed:
            for pid in _chunk_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_busy_worker, daemon=True)
    killer.start()
    try:
        ens = train(_config(max_retries=2), tmp_path / "run")
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen training a chunk"
    _assert_same(local_run, ens)


def _done(run_dir: Path) -> int:
    try:
        members = json.loads((run_dir / "manifest.json").read_text())["members"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(m["status"] == "done" for m in members.values())


def test_killed_driver_resumes_from_the_chunks_written(
    cluster, local_run: Ensemble, tmp_path: Path, cli
) -> None:
    config = write_toml(tmp_path / "config.toml", _config(steps=60, backend="local"))
    out = tmp_path / "run"
    command = [
        "run",
        str(config),
        "--out",
        str(out),
        "--backend",
        "ray",
        "--ray-address",
        cluster.address,
        "--json",
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "attractor.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _done(out) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert driver.poll() is None, (
        driver.stderr.read().decode()[-2000:] if driver.stderr else "driver ended"
    )
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = _done(out)
    assert 2 <= before < 8
    members = json.loads((out / "manifest.json").read_text())["members"]
    kept = {
        p: p.stat().st_mtime_ns
        for m, s in members.items()
        if s["status"] == "done"
        for p in (out / "members" / m).iterdir()
    }

    result = cli(*command)  # the same command again, in this process (already connected)
    assert result.code == 0, result.err
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()), (
        "a finished chunk was trained again"
    )
    _assert_same(local_run, Ensemble.load(out))


def test_diverging_chunk_is_recorded_not_retried(cluster, tmp_path: Path) -> None:
    config = tiny_config(
        trainer={"steps": 30, "lr": 1e4}, plan={"members": 4}, run={**RUN, "max_retries": 1}
    )
    ens = train(config, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "manifest.json").read_text())["members"]
    assert {s["status"] for s in status.values()} == {"diverged"}
    assert all(s["diverged_step"] is not None for s in status.values())
    assert ens.members == []
