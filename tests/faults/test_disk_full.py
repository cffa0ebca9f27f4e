"""A write that runs out of room (a full disk, a quota, a file size limit) is one line and
exit 2, leaves no half-written file, and the same command finishes the run later (issue 16,
case 7). The limit is RLIMIT_FSIZE in a child process: what a full disk looks like to it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_mapping, write_toml

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics")
LIMIT = 48 * 1024  # the manifest fits, a [256]-wide snapshot (~70 KB) does not


def _limited() -> None:
    # Ignored SIGXFSZ: a write past the limit fails with EFBIG instead of killing the child.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _attractor(*args: str, limited: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attractor.cli", *args],
        capture_output=True,
        text=True,
        preexec_fn=_limited if limited else None,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


def test_a_write_past_the_size_limit_is_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    mapping = tiny_mapping(task={"name": "digits-mlp", "hidden": [256]})
    config = write_toml(tmp_path / "config.toml", mapping)
    out = tmp_path / "run"
    failed = _attractor("run", str(config), "--out", str(out), limited=True)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "file too large" in errors[0], failed.stderr
    assert "cannot write" in errors[0] and "run the same command again" in errors[0]
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(m["status"] == "pending" for m in manifest["members"].values())

    finished = _attractor("run", str(config), "--out", str(out), limited=False)
    assert finished.returncode == 0, finished.stderr
    verified = _attractor("verify", str(out), limited=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
