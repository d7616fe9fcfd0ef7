"""The lab's one Wine prefix: prepared once (in the background), used to run every Windows exe, shut down at the end.

One `wineserver` serves every process of a prefix, so a lab of many nodes costs one prefix and one server.
Preparing means: `wineboot --init` (first time only), waiting for the new prefix to settle, and making
ProcessPrng loadable where this Wine lacks it (wine_shim), so that exes built by any current Go start. The
tests' prefixes are prepared by the same class.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.wine_shim import ProcessPrng, ensure_process_prng, needs_process_prng

WINE64 = os.environ.get("FLEETCTL_WINE64", "/usr/lib/wine/wine64")
WINESERVER = os.environ.get("FLEETCTL_WINESERVER", "/usr/lib/wine/wineserver")
PREPARE_TIMEOUT_S = 180.0
_MARKER = ".fleetctl-prepared"


class WinePrefix:
    """A WINEPREFIX directory, its preparation and its wineserver."""

    def __init__(self, path: Path, wine64: str = WINE64, wineserver: str = WINESERVER,
                 shim_cache: Path | None = None) -> None:
        self.path = path.resolve()
        self.wine64 = wine64
        self.wineserver = wineserver
        self.shim_cache = shim_cache  # None: wine_shim's default, under ~/.cache
        self.process_prng: ProcessPrng | None = None  # known once prepared
        self._ready = threading.Event()
        self._error: str | None = None
        self._boot: subprocess.Popen[bytes] | None = None
        self._started = False
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return os.access(self.wine64, os.X_OK)

    def env(self) -> dict[str, str]:
        return {
            "WINEPREFIX": str(self.path),
            "WINEDEBUG": "-all",
            # No Mono/Gecko installer prompts while the prefix is created: services are plain Go exes.
            "WINEDLLOVERRIDES": "mscoree,mshtml=",
            "HOME": os.environ.get("HOME", "/root"),
            "PATH": "/usr/bin:/bin",
        }

    def prepare_in_background(self) -> None:
        """Prepare the prefix (create it if it is not there yet); returns at once, `wait_ready` waits."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._prepare, name="wine-prefix", daemon=True).start()

    def _prepare(self) -> None:
        try:
            if not self.available:
                self._error = f"wine64 not found at {self.wine64} (install the Debian package wine64)"
                return
            if not (self.path / _MARKER).exists() and not self._create():
                return
            # Also for a prefix made before: a Wine upgrade or a changed shim source is picked up here.
            self.process_prng = ensure_process_prng(self.path, self.shim_cache)
        except (OSError, subprocess.TimeoutExpired) as err:
            self._error = f"preparing the Wine prefix {self.path} failed: {err}"
        finally:
            self._ready.set()

    def _create(self) -> bool:
        # wineboot --init on a loaded machine has been seen to exit 1 once and succeed on a fresh prefix: one more
        # try from scratch before the lab reports the prefix as broken.
        for attempt in (1, 2):
            self.path.mkdir(parents=True, exist_ok=True)
            self._boot = subprocess.Popen([self.wine64, "wineboot", "--init"], env=self.env(),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)
            code = self._boot.wait(PREPARE_TIMEOUT_S)
            # The registry files appear only when the wineserver exits; exit code 0 is the signal to trust.
            if code == 0:
                break
            self._error = f"preparing the Wine prefix {self.path} failed (wineboot exit code {code})"
            if attempt == 2:
                return False
            if os.access(self.wineserver, os.X_OK):
                subprocess.run([self.wineserver, "-k"], env=self.env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
            shutil.rmtree(self.path, ignore_errors=True)
        self._error = None
        # Let wineboot's own processes end before any exe runs: one started while the new prefix was still
        # settling was once killed (-9) by Wine instead of getting its Ctrl-C event.
        if os.access(self.wineserver, os.X_OK):
            subprocess.run([self.wineserver, "-w"], env=self.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=PREPARE_TIMEOUT_S,
                           check=False)
        (self.path / _MARKER).write_text("ok\n")
        return True

    def wait_ready(self, timeout: float = PREPARE_TIMEOUT_S, exe: Path | None = None) -> None:
        """Block until the prefix can run exes (and `exe`, if given); NodeError SERVICE_START_FAILED if not."""
        self.prepare_in_background()
        if not self._ready.wait(timeout):
            raise NodeError("SERVICE_START_FAILED", "the lab's Wine prefix is still being prepared; retry")
        if self._error:
            raise NodeError("SERVICE_START_FAILED", self._error, {"reason": "wine"})
        prng = self.process_prng
        if exe is not None and prng is not None and not prng.ok and needs_process_prng(exe):
            raise NodeError("SERVICE_START_FAILED",
                            f"{exe.name} needs ProcessPrng from bcryptprimitives.dll (every exe built by Go 1.22 "
                            f"or later does), which this Wine lacks, and the lab cannot provide it: {prng.problem}",
                            {"state": "Stopped", "reason": "wine"})

    def command(self, exe: Path, args: list[str]) -> list[str]:
        return [self.wine64, str(exe), *args]

    def shutdown(self) -> None:
        """Stop preparation and every process of the prefix, including its wineserver."""
        boot = self._boot
        if boot is not None and boot.poll() is None:
            boot.kill()
            boot.wait(10)
        if self.path.exists() and os.access(self.wineserver, os.X_OK):
            subprocess.run([self.wineserver, "-k"], env=self.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
            # -k signals; -w waits until the server has really gone, so no process is left behind.
            subprocess.run([self.wineserver, "-w"], env=self.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)


def windows_path_for_wine(unix_path: Path) -> str:
    """How a Windows process under Wine names a Unix path: through drive Z:, which maps `/`."""
    return "Z:" + str(unix_path).replace("/", "\\")
