"""Trust, the way Jupyter trusts notebooks: a run directory never runs code its user did not make.

A run's manifest may name a user task (``module:function``); loading the run imports that
module. So every manifest attractor writes is signed with HMAC-SHA256 under a per-user
secret key (32 random bytes in ``$ATTRACTOR_CONFIG_DIR/key``, else
``$XDG_CONFIG_HOME/attractor/key``, else ``~/.config/attractor/key``; created on first use,
mode 0600 in a 0700 directory). A run's user code is imported only when the manifest's
signature is this user's, or when the caller trusts it: ``trust=True`` in Python, or
``attractor --trust COMMAND`` (which sets the process-wide default here). Built-in tasks
need no trust, and an unsigned run of a built-in task (made before signing) loads as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from attractor.errors import UserError
from attractor.runs.results import strict_json

__all__ = [
    "SIGNATURE",
    "check_task_trust",
    "key_path",
    "set_default_trust",
    "sign",
    "signed_by_me",
    "trusted_by_default",
]

SIGNATURE = "signature"
_KEY_BYTES = 32
_default_trust = False


def set_default_trust(trust: bool) -> None:
    """Trust every run this process loads (what ``attractor --trust`` sets)."""
    global _default_trust
    _default_trust = bool(trust)


def trusted_by_default() -> bool:
    """Whether this process was told to trust every run it loads."""
    return _default_trust


def config_dir() -> Path:
    """This user's attractor config directory (see the module docstring for the order)."""
    if os.environ.get("ATTRACTOR_CONFIG_DIR"):
        return Path(os.environ["ATTRACTOR_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "attractor"


def key_path() -> Path:
    """Where this user's signing key lives (it may not exist yet)."""
    return config_dir() / "key"


def _read_key(path: Path) -> bytes | None:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(key) != _KEY_BYTES:
        raise UserError(
            f"signing key '{path}' is corrupt ({len(key)} bytes, not {_KEY_BYTES}); delete it "
            "(a new one is made; runs signed with the old one then need --trust)"
        )
    return key


def _create_key(path: Path) -> bytes:
    """Make the key file: written whole beside it, then linked in, so two processes starting at
    once never read half a key and never sign with two different ones.
    """
    created = not path.parent.exists()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if created:
        path.parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(_KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: use theirs
            pass
    finally:
        os.unlink(tmp)
    key = _read_key(path)
    assert key is not None  # just linked in, or made by another process
    return key


def _key(create: bool) -> bytes | None:
    path = key_path()
    try:
        key = _read_key(path)
        if key is None and create:
            key = _create_key(path)
    except OSError as exc:
        raise UserError(
            f"cannot {'create' if create else 'read'} the signing key '{path}' "
            f"({exc.strerror or type(exc).__name__}); set ATTRACTOR_CONFIG_DIR to a directory "
            "of yours"
        ) from None
    return key


def _digest(key: bytes, manifest: dict[str, Any]) -> str:
    """HMAC-SHA256 over the manifest's canonical JSON: sorted keys, without the signature."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE}
    canonical = json.dumps(strict_json(body), sort_keys=True, separators=(",", ":"))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def signed_by_me(manifest: dict[str, Any]) -> bool:
    """Whether ``manifest`` carries this user's signature over exactly its content.

    Never creates the key: a user without one has signed nothing.
    """
    signature = manifest.get(SIGNATURE)
    if not isinstance(signature, str):
        return False
    key = _key(create=False)
    return key is not None and hmac.compare_digest(signature, _digest(key, manifest))


def sign(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with this user's signature, to be written at ``path``.

    A manifest already at ``path`` that this user did not sign (someone else's run being
    resumed) stays unsigned unless the process trusts every run: rewriting a directory's
    manifest must not turn its code into this user's.
    """
    body = {k: v for k, v in manifest.items() if k != SIGNATURE}
    if path.exists() and not _default_trust and not _existing_signed(path):
        return body
    key = _key(create=True)
    assert key is not None
    return {**body, SIGNATURE: _digest(key, body)}


def _existing_signed(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # unreadable: nothing this user vouched for
    return isinstance(data, dict) and signed_by_me(data)


def check_task_trust(
    root: Path, manifest: dict[str, Any], task: str, is_code: bool, trust: bool | None
) -> None:
    """Refuse to import run ``root``'s task ``task`` unless it is built in, signed or trusted.

    Args:
        root: the run directory (for the message).
        manifest: its manifest, as read (the signature is checked over exactly this).
        task: the task name the manifest gives.
        is_code: whether ``task`` names user code (``module:function``).
        trust: the caller's choice; ``None`` takes the process default.

    Raises:
        UserError: one line naming the directory, the module and the flag.
    """
    if not is_code or (_default_trust if trust is None else trust) or signed_by_me(manifest):
        return
    raise UserError(
        f"'{root}' was not made by you (or was edited): its task '{task}' is code from that "
        "directory; pass --trust to run it"
    )
