"""A balancer's config file on its host: rendered from the playbook's template, written beside the live file,
checked, put in place, reloaded; the previous file is kept (`<file>.fleetctl-prev`) and put back when a reload fails.

The check runs against the candidate before it replaces the live file when the check command names it
(`{config}`, e.g. `haproxy -c -f {config}` or `nginx -t -c {config}` for a whole nginx.conf). A check that reads
the live configuration (`nginx -t` for an upstream file that nginx.conf includes) runs with the candidate in
place and the previous file is renamed back at once if it fails, before anything reloads: the running balancer
never loads a configuration that failed its check, and the live file ends as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetctl.config.project import find_project
from fleetctl.config.templating import render_string
from fleetctl.errors import ConfigError
from fleetctl.traffic.backends import Pool
from fleetctl.traffic.remote import BalancerError, BalancerHost

CANDIDATE_SUFFIX = ".fleetctl-new"
PREVIOUS_SUFFIX = ".fleetctl-prev"
CONFIG_PLACEHOLDER = "{config}"


@dataclass(frozen=True)
class TemplateSource:
    """The playbook's balancer template, read on the controller."""

    path: Path
    text: str
    playbook: Path

    @classmethod
    def read(cls, playbook: Path, relative: str) -> TemplateSource:
        # Only project files, as for install.files: what it renders lands on the balancer host.
        path = find_project(playbook.parent).readable(relative, base=playbook.parent, what="balancer template",
                                                      file=playbook, key="traffic.template")
        try:
            return cls(path, path.read_text(encoding="utf-8"), playbook)
        except OSError as err:
            raise ConfigError(f"cannot read the balancer template {path}: {err.strerror or err}", file=playbook,
                              key="traffic.template") from None

    def render(self, pool: Pool) -> str:
        """The config text for `pool`; a template error is a ConfigError naming the template (exit 2)."""
        text = str(render_string(self.text, pool.template_vars(), source=str(self.path), key="traffic.template"))
        return text if text.endswith("\n") else text + "\n"


@dataclass
class ConfigFile:
    host: BalancerHost
    path: str
    template: TemplateSource
    check_command: tuple[str, ...]
    reload_command: tuple[str, ...]
    what: str  # "nginx" or "HAProxy", for messages

    def install(self, pool: Pool, *, check_only: bool = False) -> bool:
        """Render, check and (unless `check_only`) put in place and reload; False when the live file already
        says exactly this. Raises BalancerError with nothing changed when the check fails."""
        text = self.template.render(pool)
        live = self.host.read_text(self.path)
        if live == text and not check_only:
            return False
        candidate = self.host.write_beside(self.path, text, CANDIDATE_SUFFIX)
        if CONFIG_PLACEHOLDER in " ".join(self.check_command):
            self._check(candidate, candidate, live)
            if check_only:
                self.host.remove(candidate)
                return True
            self._keep_previous(live)
            self.host.rename(candidate, self.path)
        else:
            self._keep_previous(live)
            self.host.rename(candidate, self.path)
            self._check(self.path, None, live)
            if check_only:
                self._restore(live)
                return True
        if self.reload_command:
            result = self.host.run(self.reload_command)
            if not result.ok:
                self._restore(live)
                again = self.host.run(self.reload_command)
                note = "the previous file was put back and reloaded" if again.ok else \
                    "the previous file was put back, but reloading it failed too"
                raise BalancerError(f"{self.what} reload on {self.host.name} failed ({_tail(result.output)}); "
                                    f"{note}", host=self.host.name)
        return True

    def _check(self, checked: str, candidate: str | None, live: str | None) -> None:
        argv = [a.replace(CONFIG_PLACEHOLDER, checked) for a in self.check_command]
        result = self.host.run(argv)
        if result.ok:
            return
        if candidate is not None:
            self.host.remove(candidate)
        else:
            self._restore(live)
        raise BalancerError(f"{self.what} refused the configuration rendered from {self.template.path} "
                            f"({' '.join(argv)}: {_tail(result.output)}); the live {self.path} is unchanged",
                            host=self.host.name)

    def _keep_previous(self, live: str | None) -> None:
        if live is not None:
            self.host.write_beside(self.path, live, PREVIOUS_SUFFIX)

    def _restore(self, live: str | None) -> None:
        if live is None:
            self.host.remove(self.path)
        else:
            self.host.write_beside(self.path, live, "")


def _tail(output: str, lines: int = 4) -> str:
    kept = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept) or "no output"


def command(value: Sequence[str], default: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(a) for a in value) if value else tuple(default)
