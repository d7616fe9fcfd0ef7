"""`deploy --dry-run --diff`: per host, what changes in the service definition and in each rendered file, secrets
masked (a changed secret still shows as changed), hosts with the same diff grouped, "no changes" when a deploy
would change nothing. The comparison as a pure function, then through the CLI against ELF lab nodes (marked lab)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.node.results import Deployed, DeployedFile, DeployedService
from fleetctl.rollout.diff import (
    DIFF_MASK,
    HostDiffResult,
    diff_host,
    group_identical,
)
from fleetctl.rollout.release import SERVICE_DEFINITION_FILE, Release, ServiceDefinition
from tests.rollout.conftest import Lab, _start_lab

SERVICE = ServiceDefinition(name="hello", binary_path="C:\\apps\\hello\\current\\hello.exe",
                            display_name="Hello", arguments=("-listen", ":8080"),
                            environment=(("HELLO_ENV", "production"),), start_type="auto",
                            recovery_restart_seconds=5, recovery_reset_seconds=3600, stop_timeout_seconds=20,
                            recovery_actions=("restart/5000", "restart/5000", "restart/5000"))
CONFIG = '{\n  "port": 8080,\n  "mode": "ok"\n}\n'


def release(service: ServiceDefinition = SERVICE, files: dict[str, str] | None = None) -> Release:
    rendered = {"hello.json": CONFIG, SERVICE_DEFINITION_FILE: "{}"} if files is None else files
    return Release("1.0.0-aaaaaaaa", "1.0.0", "hello", "C:\\apps\\hello", "0" * 64, "hello.exe",
                   tuple(sorted(rendered.items())), service)


def deployed_service(**changes: object) -> DeployedService:
    base = DeployedService(
        binary_path="C:\\apps\\hello\\current\\hello.exe", arguments=("-listen", ":8080"), display_name="Hello",
        description="", environment={"HELLO_ENV": "production"}, environment_sha256={}, account="LocalSystem", start_type="auto",
        dependencies=(), recovery_actions=("restart/5000",) * 3, recovery_reset_seconds=3600,
        stop_timeout_seconds=20, hosting="native", working_directory=None, stdout_path=None, stderr_path=None,
        rotate_bytes=None, restart_delay_milliseconds=None, throttle_milliseconds=None)
    return replace(base, **changes)  # type: ignore[arg-type]


def on_host(service: DeployedService | None, files: dict[str, str | None] | None = None) -> Deployed:
    listed = {"hello.json": CONFIG, SERVICE_DEFINITION_FILE: '{"other": 1}'} if files is None else files
    return Deployed("0.9.0-bbbbbbbb", tuple(
        DeployedFile(path, len(text or "x" * 300000), hashlib.sha256((text or "").encode()).hexdigest(), text)
        for path, text in listed.items()), service)


@pytest.fixture(autouse=True)
def no_secrets_left() -> Iterator[None]:
    yield
    forget_secrets()


def test_same_definition_and_files_is_no_change() -> None:
    diff = diff_host(release(), on_host(deployed_service()))
    assert diff.unchanged and diff.service_exists  # the definition file differs but is not a rendered file


def test_changed_argument_start_type_recovery_and_file() -> None:
    wanted = replace(SERVICE, arguments=("-listen", ":9090"), start_type="delayed-auto", recovery_actions=(),
                     recovery_restart_seconds=0)
    diff = diff_host(release(wanted, {"hello.json": CONFIG.replace('"ok"', '"unhealthy"')}),
                     on_host(deployed_service()))
    fields = {c.name: (c.old, c.new) for c in diff.service}
    assert fields == {"arguments": ("-listen :8080", "-listen :9090"), "start type": ("auto", "delayed-auto"),
                      "recovery": ("restart/5000, restart/5000, restart/5000; reset after 3600 s", "none")}
    (change,) = diff.files
    assert change.path == "hello.json" and change.change == "changed"
    assert '-  "mode": "ok"' in change.lines and '+  "mode": "unhealthy"' in change.lines
    assert change.lines[0].startswith("--- hello.json (on the host)")


def test_paths_and_account_compare_as_windows_does() -> None:
    have = deployed_service(binary_path="c:\\APPS\\hello\\current\\hello.exe", account="localsystem")
    assert diff_host(release(), on_host(have, {"HELLO.JSON": CONFIG})).unchanged


def test_a_changed_secret_shows_as_changed_with_both_values_masked() -> None:
    register_secret("new-Secret-value")
    wanted = replace(SERVICE, environment=(("API_KEY", "new-Secret-value"), ("DSN", "new-Secret-value"),
                                           ("HELLO_ENV", "production")),
                     arguments=("-token", "new-Secret-value"))
    have = deployed_service(environment={"API_KEY": "old-secret-value", "DSN": "old-dsn-from-env",
                                         "HELLO_ENV": "production", "OLD_VAR": "old-value-of-unknown-kind"},
                            arguments=("-token", "old-token-value"))
    diff = diff_host(release(wanted), on_host(have))
    fields = {c.name: c for c in diff.service}
    for name in ("environment API_KEY", "environment DSN"):  # a secret by its name, a secret by its value
        assert (fields[name].old, fields[name].new, fields[name].secret) == (DIFF_MASK, DIFF_MASK, True)
    assert fields["environment OLD_VAR"].new is None and fields["environment OLD_VAR"].old == "(set)"
    assert fields["arguments"].old == f"-token {DIFF_MASK}" and fields["arguments"].new == f"-token {DIFF_MASK}"
    shown = json.dumps(diff.to_json())
    for value in ("new-Secret-value", "old-secret-value", "old-dsn-from-env", "old-token-value",
                  "old-value-of-unknown-kind"):
        assert value not in shown


def test_a_secret_the_host_masks_is_compared_by_its_hash() -> None:
    wanted = replace(SERVICE, environment=(("DB_PASSWORD", "same-Value"), ("HELLO_ENV", "production")))
    masked = {"DB_PASSWORD": "********", "HELLO_ENV": "production"}

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    same = deployed_service(environment=masked, environment_sha256={"DB_PASSWORD": sha("same-Value")})
    assert diff_host(release(wanted), on_host(same)).unchanged
    other = deployed_service(environment=masked, environment_sha256={"DB_PASSWORD": sha("old-Value")})
    (change,) = diff_host(release(wanted), on_host(other)).service
    assert (change.name, change.old, change.new, change.secret) == ("environment DB_PASSWORD", DIFF_MASK,
                                                                    DIFF_MASK, True)


def test_file_lines_naming_a_secret_are_masked() -> None:
    register_secret("s3cret-Rendered")
    old = 'db:\n  password: "old-pw-on-host"\n  host: db1\n'
    new = 'db:\n  password: "s3cret-Rendered"\n  host: db2\n'
    (change,) = diff_host(release(files={"app.yml": new}), on_host(deployed_service(), {"app.yml": old})).files
    text = "\n".join(change.lines)
    assert "old-pw-on-host" not in text and "s3cret-Rendered" not in text
    assert f"-  password: {DIFF_MASK}" in change.lines and f"+  password: {DIFF_MASK}" in change.lines
    assert "-  host: db1" in change.lines and "+  host: db2" in change.lines


def test_new_service_added_removed_and_unreadable_files() -> None:
    diff = diff_host(release(files={"hello.json": CONFIG, "big.bin": "new"}),
                     on_host(None, {"old.txt": "gone", "big.bin": None}))
    assert not diff.service_exists
    assert {c.name for c in diff.service} >= {"binary path", "arguments", "account", "environment HELLO_ENV"}
    assert all(c.old is None for c in diff.service)
    changes = {c.path: (c.change, c.lines) for c in diff.files}
    assert changes["hello.json"][0] == "added" and '+  "port": 8080,' in changes["hello.json"][1]
    assert changes["old.txt"][0] == "removed"
    assert changes["big.bin"][0] == "changed" and "not shown" in changes["big.bin"][1][0]


def test_identical_diffs_are_grouped_in_target_order() -> None:
    same = diff_host(release(), on_host(deployed_service(start_type="manual")))
    other = diff_host(release(), on_host(deployed_service()))
    results = {h: HostDiffResult(h, d) for h, d in (("w1", same), ("w2", other), ("w3", same))}
    results["w4"] = HostDiffResult("w4", None, "connection refused")
    assert [hosts for hosts, _ in group_identical(results)] == [("w1", "w3"), ("w2",), ("w4",)]


# --- through the CLI, against the lab ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_DIFF_BASE", "127.0.72.1")
    lab_gen = _start_lab(tmp_path_factory.mktemp("diff"), 2, base, "linux")
    lab = next(lab_gen)
    lab.playbook.write_text(lab.playbook.read_text().replace(
        "    HELLO_ENV:", "    DB_PASSWORD: \"{{ db_password }}\"\n    HELLO_ENV:"))
    yield lab
    next(lab_gen, None)


def dry_diff(lab: Lab, *args: str, version: str = "1.0.0") -> tuple[int, str, str]:
    run = lab.fleetctl("deploy", str(lab.playbook), "-i", str(lab.inventory), "--version", version, "--dry-run",
                       "--diff", *args)
    return run.returncode, run.stdout, run.stderr


@pytest.mark.lab
def test_diff_through_the_cli(lab: Lab) -> None:
    first, second = "First-Db-Secret-1", "Second-Db-Secret-2"
    code, _, err = lab.deploy("--version", "1.0.0", "-e", f"db_password={first}")
    assert code == 0, err

    code, out, err = dry_diff(lab, "-e", f"db_password={first}")
    assert code == 0, err
    assert re.search(r"lab-node01, lab-node02 \(2 hosts, the same diff\)\s+no changes", out), out

    # Only the secret changes: the same diff on both hosts, shown as changed, no value.
    code, out, err = dry_diff(lab, "-e", f"db_password={second}")
    assert code == 0, err
    assert "lab-node01, lab-node02 (2 hosts, the same diff)" in out, out
    assert re.search(r"environment DB_PASSWORD: \*\*\* -> \*\*\*\s+\(secret: changed", out), out
    assert first not in out + err and second not in out + err

    # A template variable and a service argument: the file's unified diff and the arguments, per host.
    code, out, err = dry_diff(lab, "-e", f"db_password={first}", "-e", "hello_env=staging",
                              "-e", "hello_mode=unhealthy")
    assert code == 0, err
    for node in lab.nodes:
        assert re.search(rf"^{node}$", out, re.MULTILINE), out
    assert out.count('-  "environment": "production"') == 2 and out.count('+  "environment": "staging"') == 2
    assert re.search(r"arguments: .*-mode ok -> .*-mode unhealthy", out), out
    assert "environment HELLO_ENV: production -> staging" in out
    assert "DB_PASSWORD" not in out  # unchanged secret: not listed
    assert first not in out + err

    code, out, err = dry_diff(lab, "-e", f"db_password={second}", "-e", "hello_env=staging", "--json")
    assert code == 0, err
    doc = json.loads(out)
    for node in lab.nodes:
        diff = doc["hosts"][node]["diff"]
        assert diff["unchanged"] is False and diff["service_exists"] is True
        assert {"field": "environment DB_PASSWORD", "old": DIFF_MASK, "new": DIFF_MASK, "masked": True} in \
            diff["service"]
        assert [f["path"] for f in diff["files"]] == ["hello.json"]
    assert second not in out + err and first not in out + err

    refused = lab.fleetctl("deploy", str(lab.playbook), "-i", str(lab.inventory), "--diff", "--yes")
    assert refused.returncode == 2 and "--diff" in refused.stderr and "--dry-run" in refused.stderr


@pytest.mark.lab
def test_rollback_diff_shows_what_returning_to_the_kept_release_changes(lab: Lab) -> None:
    secret = "First-Db-Secret-1"
    for version, extra in (("1.0.0", []), ("2.0.0", ["-e", "hello_env=staging"])):
        code, _, err = lab.deploy("--version", version, "-e", f"db_password={secret}", *extra)
        assert code == 0, err
    run = lab.fleetctl("rollback", str(lab.playbook), "-i", str(lab.inventory), "-e", f"db_password={secret}",
                       "--dry-run", "--diff")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.count('-  "version": "2.0.0",') == 2 and out.count('+  "version": "1.0.0",') == 2, out
    assert out.count("environment HELLO_ENV: staging -> production") == 2, out
    assert "DB_PASSWORD" not in out and secret not in out + run.stderr  # the same secret: no change, no value
    refused = lab.fleetctl("rollback", str(lab.playbook), "-i", str(lab.inventory), "--diff", "--yes")
    assert refused.returncode == 2 and "--dry-run" in refused.stderr


@pytest.mark.lab
def test_blue_green_diff_compares_the_colour_it_starts_with_the_live_one(lab: Lab) -> None:
    secret = "First-Db-Secret-1"
    code, _, err = lab.deploy("--version", "3.0.0", "--strategy", "blue-green", "-e", f"db_password={secret}")
    assert code == 0, err
    code, out, err = dry_diff(lab, "--strategy", "blue-green", "-e", f"db_password={secret}", version="3.0.0")
    assert code == 0, err
    assert re.search(r"lab-node01, lab-node02 \(2 hosts, the same diff\)\s+no changes", out), out
    code, out, err = dry_diff(lab, "--strategy", "blue-green", "-e", f"db_password={secret}", "-e",
                              "hello_env=staging", version="3.0.0")
    assert code == 0, err
    assert out.count("binary path: C:\\apps\\hello\\blue\\hello.exe -> C:\\apps\\hello\\green\\hello.exe") == 2, out
    assert out.count('+  "environment": "staging"') == 2, out
    assert secret not in out + err
