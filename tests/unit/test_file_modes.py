"""Files the store writes get the user's umask, not mkstemp's owner-only 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_config, write_toml


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    # A child process: the umask is read once per process, and changing this one's would
    # leak into other tests.
    config = write_toml(tmp_path / "c.toml", tiny_config(trainer={"steps": 2}))
    out = tmp_path / "run"
    code = (
        "import os, sys\n"
        f"os.umask({umask})\n"
        "from attractor.config import load_config\n"
        "from attractor.runs.launch import train\n"
        "train(load_config(sys.argv[1]), sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(config), str(out)], check=True)
    files = [out / "manifest.json", *out.glob("members/*/*.safetensors")]
    assert len(files) > 1
    assert {str(p.relative_to(out)): _mode(p) for p in files} == {
        str(p.relative_to(out)): mode for p in files
    }
    assert os.path.exists(out / "manifest.json")
