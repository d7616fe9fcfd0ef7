"""Node-local blue-green on the lab (ten nodes, the example service as an ELF, the lab's real TCP port proxy on
each node's public port), measured with a load generator on the nodes' public ports: deploy, instant rollback,
a second rollback (further back, into the idle colour, never forward to the warm newer one), a failed canary, an
interrupted switch and the rollback right after a host's first blue-green deploy (to its rolling release, run as
the other colour) each drop no request. Lab counters prove the instant rollback starts and stops no service and
moves no artifact bytes; its wall time is compared with a rolling rollback of the same nodes. Three deploys on a
fresh node roll back one release at a time, then the rollback is refused; the plan (`--dry-run`) says per host
which colour and release it goes to and how; a rollback with the wrong strategy is refused before anything.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from traffic.loadgen import LoadGenerator, LoadReport

from .conftest import Lab, _start_lab

pytestmark = [pytest.mark.lab]
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_BLUE_GREEN_BASE", "127.0.55.1")
    for lab in _start_lab(tmp_path_factory.mktemp("blue-green"), 10, base, "linux"):
        text = lab.playbook.read_text()
        text = text.replace("  canary_bake: 0s\n", "  canary_bake: 0s\n  bake: \"{{ bake | default('0s') }}\"\n")
        text = text.replace('    green_port: "{{ hello_port + 10001 }}"\n',
                            '    green_port: "{{ hello_port + 10001 }}"\n'
                            '    keep_warm: "{{ keep_warm | default(false) }}"\n')
        assert "keep_warm" in text and "bake:" in text
        lab.playbook.write_text(text)
        yield lab


def _run(lab: Lab, command: str, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = lab.fleetctl(command, str(lab.playbook), "-i", str(lab.inventory), "--yes", "--json", "--var", "window=1s",
                        *args, timeout=300)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def _versions(lab: Lab) -> dict[str, Any]:
    return {n: (lab.health(n) or {}).get("version") for n in lab.nodes}


def _counters(lab: Lab) -> dict[str, dict[str, int]]:
    return {n: s["counters"] for n, s in lab.status().items()}


def _changes(lab: Lab, node: str) -> dict[str, int]:
    """What a run that changes nothing must leave as it was (requests and bytes received count reads too)."""
    counters = lab.status()[node]["counters"]
    return {k: counters[k] for k in ("service_starts", "service_stops", "artifact_bytes_stored")}


def _under_load(lab: Lab, nodes: list[str], run: Any) -> tuple[Any, LoadReport]:
    loads = [LoadGenerator(lab.addresses[n], 8080, path="/healthz", threads=2, interval_s=0.005, max_seconds=240)
             for n in nodes]
    for load in loads:
        load.start()
    try:
        for load in loads:
            load.wait_for_requests(50)
        result = run()
        for load in loads:
            load.wait_for_requests(load.sent + 50)
    finally:
        for load in loads:
            load.stop()
    reports = [load.report() for load in loads]
    merged = sorted(ms for load in loads for ms in load._latencies)
    total = LoadReport(sum(r.sent for r in reports), sum(r.failed for r in reports),
                       merged[len(merged) // 2] if merged else 0.0,
                       merged[min(len(merged) - 1, int(0.99 * len(merged)))] if merged else 0.0,
                       merged[-1] if merged else 0.0,
                       {k: v for r in reports for k, v in r.errors.items()}, max(r.duration_s for r in reports))
    return result, total


def _record(name: str, report: LoadReport) -> None:
    print(f"\n[blue-green] {name}: {report.line()}")


def test_1_a_rolling_rollback_of_ten_nodes_for_comparison(lab: Lab) -> None:
    for version in ("1.0.0", "1.1.0"):
        code, _, err = _run(lab, "deploy", "--version", version, "--batch", "100%")
        assert code == 0, err
    before = _counters(lab)
    began = time.monotonic()
    code, _doc, err = _run(lab, "rollback", "--batch", "100%")
    TIMES["rolling rollback"] = time.monotonic() - began
    print(f"\n[blue-green] rolling rollback of 10 nodes: {TIMES['rolling rollback']:.2f} s")
    assert code == 0, err
    assert set(_versions(lab).values()) == {"1.0.0"}
    after = _counters(lab)
    for node in lab.nodes:  # what the instant switch back saves: one stop and one start per host
        assert after[node]["service_stops"] == before[node]["service_stops"] + 1
        assert after[node]["service_starts"] == before[node]["service_starts"] + 1
        assert after[node]["artifact_bytes_stored"] == before[node]["artifact_bytes_stored"]
    # These hosts run the rolling strategy: a blue-green rollback is refused before anything, naming the flag.
    code, _doc, err = _run(lab, "rollback", "--strategy", "blue-green", "--limit", "lab-node01")
    assert code == 2 and "roll it back with --strategy rolling" in err and "nothing was changed" in err, err
    assert _versions(lab)["lab-node01"] == "1.0.0"


def test_2_hosts_move_from_rolling_to_blue_green_on_the_same_public_port(lab: Lab) -> None:
    code, doc, err = _run(lab, "deploy", "--strategy", "blue-green", "--version", "2.0.0", "--batch", "100%")
    assert code == 0, err
    assert all(h["outcome"] == "deployed" for h in doc["hosts"].values()), doc
    assert set(_versions(lab).values()) == {"2.0.0"}  # through each node's port proxy on 8080
    status = lab.status()["lab-node01"]
    services = {s["name"]: s["state"] for s in status["services"]}
    assert services["hello-blue"] == "Running" and services.get("hello") == "Stopped"
    assert any(p.endswith(":8080") for p in status["port_proxies"])
    # A rolling deploy would fight the proxy for the public port: refused per host, nothing changed.
    code, doc, err = _run(lab, "deploy", "--version", "2.0.1", "--limit", "lab-node01")
    assert code == 1 and "runs blue-green" in doc["hosts"]["lab-node01"]["error"], err
    # A rolling rollback (the playbook's strategy) of a host on blue-green is refused before the confirmation,
    # with the flag to use; its dry run says the same.
    before = _changes(lab, "lab-node01")
    for extra in ((), ("--dry-run",)):
        code, doc, err = _run(lab, "rollback", "--limit", "lab-node01", *extra)
        assert code == 2 and "runs blue-green (live colour blue): roll it back with --strategy blue-green" in err, err
        assert "nothing was changed" in err, err
        # the dry run shows the plan with the reason; the real one stops before it runs anything
        assert doc["hosts"]["lab-node01"]["action"] == "refuse" if extra else not doc, doc
    assert _versions(lab)["lab-node01"] == "2.0.0" and _changes(lab, "lab-node01") == before


def test_2b_a_rollback_right_after_the_first_blue_green_deploy_returns_to_the_rolling_release(lab: Lab) -> None:
    # lab-node10 installed 1.0.0 then 1.1.0 with the rolling strategy (and was rolled back to 1.0.0) before its first
    # blue-green deploy (2.0.0, into blue): green never held a release. The rollback goes where a rolling one would,
    # the newest release installed before 2.0.0 that did not fail its gate, 1.1.0, still kept on the node, run as
    # green: started, gated, switched.
    before = _counters(lab)["lab-node10"]
    (code, doc, err), report = _under_load(lab, ["lab-node10"], lambda: _run(
        lab, "rollback", "--strategy", "blue-green", "--limit", "lab-node10"))
    _record("blue-green rollback to the rolling release", report)
    assert code == 0, err
    host = doc["hosts"]["lab-node10"]
    assert host["outcome"] == "rolled_back" and host["release"].startswith("1.1.0-"), host
    assert _versions(lab)["lab-node10"] == "1.1.0" and report.failed == 0, report.line()
    states = {s["name"]: s["state"] for s in lab.status()["lab-node10"]["services"]}
    assert states["hello-green"] == "Running" and states["hello"] == "Stopped"
    after = _counters(lab)["lab-node10"]
    assert after["artifact_bytes_stored"] == before["artifact_bytes_stored"]  # the kept release: no bytes moved
    status = json.loads(lab.fleetctl("status", str(lab.playbook), "-i", str(lab.inventory), "--json",
                                     check=True).stdout)["hosts"]["lab-node10"]
    assert status["live"] == "green" and status["colours"]["green"]["release"]["version"] == "1.1.0", status
    # Forward to 2.0.0 again (blue still holds it, warm); green, which runs the adopted rolling release, stops.
    code, doc, err = _run(lab, "deploy", "--strategy", "blue-green", "--version", "2.0.0", "--limit", "lab-node10")
    assert code == 0 and _versions(lab)["lab-node10"] == "2.0.0", err
    # Rolling back to the stopped green starts it as green again, not with the rolling service definition its
    # release directory stores (the service `hello` on the public port, which the proxy holds).
    code, doc, err = _run(lab, "rollback", "--strategy", "blue-green", "--limit", "lab-node10")
    assert code == 0 and doc["hosts"]["lab-node10"]["outcome"] == "rolled_back", doc
    assert _versions(lab)["lab-node10"] == "1.1.0"
    states = {s["name"]: s["state"] for s in lab.status()["lab-node10"]["services"]}
    assert states["hello-green"] == "Running" and states["hello"] == "Stopped"
    # Back on 2.0.0 like the others, for the tests that follow.
    code, doc, err = _run(lab, "deploy", "--strategy", "blue-green", "--version", "2.0.0", "--limit", "lab-node10")
    assert code == 0 and _versions(lab)["lab-node10"] == "2.0.0", err


def test_3_a_blue_green_deploy_drops_no_request(lab: Lab) -> None:
    (code, _doc, err), report = _under_load(lab, ["lab-node01", "lab-node02"], lambda: _run(
        lab, "deploy", "--strategy", "blue-green", "--version", "2.1.0", "--batch", "3", "--var", "keep_warm=true"))
    _record("blue-green deploy, 10 nodes", report)
    assert code == 0, err
    assert set(_versions(lab).values()) == {"2.1.0"}
    assert report.sent > 200 and report.failed == 0, report.line()
    services = {s["name"]: s["state"] for s in lab.status()["lab-node01"]["services"]}
    assert services["hello-blue"] == "Running" and services["hello-green"] == "Running"  # the old colour is warm


def test_4_a_blue_green_rollback_while_warm_is_an_instant_switch(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plan first: per host, from which colour and release to which, and how (here: the instant switch).
    code, doc, err = _run(lab, "rollback", "--strategy", "blue-green", "--dry-run")
    assert code == 0 and doc["dry_run"] is True and doc["version"] == "2.0.0", err
    for name, host in doc["hosts"].items():
        assert (host["action"], host["from_colour"], host["to_colour"], host["mode"]) == \
            ("switch", "green", "blue", "instant"), (name, host)
        assert host["current"].startswith("2.1.0-") and host["target"].startswith("2.0.0-"), (name, host)
    monkeypatch.setenv("COLUMNS", "250")  # the people's table, unwrapped
    proc = lab.fleetctl("rollback", str(lab.playbook), "-i", str(lab.inventory), "--strategy", "blue-green",
                        "--dry-run", "--limit", "lab-node01", check=True)
    assert re.search(r"lab-node01 .*green 2\.1\.0-\S+ .*blue 2\.0\.0-\S+ .*instant switch to warm blue", proc.stdout), \
        proc.stdout
    before = _counters(lab)
    began = time.monotonic()
    code, doc, err = _run(lab, "rollback", "--strategy", "blue-green", "--batch", "100%")
    TIMES["blue-green rollback"] = time.monotonic() - began
    print(f"\n[blue-green] blue-green rollback of 10 nodes (warm): {TIMES['blue-green rollback']:.2f} s; rolling "
          f"rollback of the same nodes: {TIMES.get('rolling rollback', float('nan')):.2f} s")
    assert code == 0, err
    # A switch back is a rollback, reported as the rolling rollback reports it: --json, the summary, the history.
    assert {h["outcome"] for h in doc["hosts"].values()} == {"rolled_back"}, doc
    assert "10 rolled back" in err, err  # the summary line
    history = json.loads(lab.fleetctl("history", "show", "last", "--json", check=True).stdout)
    assert history["kind"] == "rollback" and history["exit_code"] == 0, history
    assert history["outcomes"] == {"rolled_back": 10}, history["outcomes"]
    assert set(_versions(lab).values()) == {"2.0.0"}
    after = _counters(lab)
    for node in lab.nodes:
        for key in ("service_starts", "service_stops", "artifact_bytes_stored"):
            assert after[node][key] == before[node][key], (node, key, before[node], after[node])


def test_4b_a_second_rollback_goes_further_back_never_to_the_warm_newer_colour(lab: Lab) -> None:
    # green still runs 2.1.0, warm, the release just rolled back from. A second rollback must not switch to it (that
    # would be forward): it goes to the release installed before 2.0.0, 1.1.0 (the rolling one), put into green in
    # place of 2.1.0 (kept on the node: no bytes), started, gated, switched, under load.
    code, doc, err = _run(lab, "rollback", "--strategy", "blue-green", "--dry-run", "--limit", "lab-node01")
    planned = doc["hosts"]["lab-node01"]
    assert code == 0 and (planned["from_colour"], planned["to_colour"], planned["mode"]) == \
        ("blue", "green", "replace") and planned["target"].startswith("1.1.0-"), (planned, err)
    before = _counters(lab)
    (code, doc, err), report = _under_load(lab, ["lab-node01", "lab-node02"], lambda: _run(
        lab, "rollback", "--strategy", "blue-green", "--batch", "100%"))
    _record("blue-green second rollback (into the idle colour), 10 nodes", report)
    assert code == 0, err
    assert {h["outcome"] for h in doc["hosts"].values()} == {"rolled_back"}, doc
    assert set(_versions(lab).values()) == {"1.1.0"}  # never 2.1.0
    assert report.failed == 0, report.line()
    after = _counters(lab)
    for node in lab.nodes:
        assert after[node]["artifact_bytes_stored"] == before[node]["artifact_bytes_stored"], node
    # Back on 2.0.0 (blue holds it, still warm) for the tests that follow.
    code, _doc, err = _run(lab, "deploy", "--strategy", "blue-green", "--version", "2.0.0", "--batch", "100%")
    assert code == 0 and set(_versions(lab).values()) == {"2.0.0"}, err


def test_5_a_failed_canary_leaves_the_proxy_alone_and_stops_the_idle_colour(lab: Lab) -> None:
    (code, doc, err), report = _under_load(lab, ["lab-node01"], lambda: _run(
        lab, "deploy", "--strategy", "blue-green", "--version", "2.2.0", "--canary", "1",
        "--var", "hello_mode=unhealthy"))
    _record("blue-green failed canary", report)
    assert code == 1, err
    canary = doc["hosts"]["lab-node01"]
    assert canary["outcome"] == "rolled_back" and "the proxy stays on" in canary["error"], canary
    assert set(_versions(lab).values()) == {"2.0.0"}
    assert report.failed == 0, report.line()
    node = lab.status()["lab-node01"]
    states = {s["name"]: s["state"] for s in node["services"]}
    # 2.0.0 is live again on one colour; the colour that got 2.2.0 and never turned healthy is stopped.
    assert sorted(states[c] for c in ("hello-blue", "hello-green")) == ["Running", "Stopped"]


def test_6_an_interrupt_between_the_gate_and_the_switch_leaves_the_old_colour_serving(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.rollout import bluegreen
    from fleetctl.rollout.events import EventBus
    from fleetctl.rollout.host_steps import Interruption
    from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

    interruption = Interruption()
    real = bluegreen.bring_up

    def gate_then_ctrl_c(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        interruption.press()
        interruption.press()  # a second Ctrl-C: abort, as a user who means it

    monkeypatch.setattr(bluegreen, "bring_up", gate_then_ctrl_c)
    options = DeployOptions(playbook=lab.playbook, inventories=[lab.inventory], limit="lab-node03",
                            version="2.3.0", strategy="blue-green", dist_dir=lab.directory / "dist",
                            extra_vars=("window=1s",))
    (result), report = _under_load(lab, ["lab-node03"], lambda: run_deploy(prepare_deploy(options), EventBus(),
                                                                           interruption=interruption))
    _record("blue-green interrupted before the switch", report)
    assert result.exit_code == 130, result.message
    assert "before the switch" in (result.outcomes["lab-node03"].error or "")
    assert _versions(lab)["lab-node03"] == "2.0.0" and report.failed == 0, report.line()
    states = {s["name"]: s["state"] for s in lab.status()["lab-node03"]["services"]}
    assert states["hello-blue"] == "Running" and states["hello-green"] == "Running"  # 2.3.0 is warm, idle
    monkeypatch.setattr(bluegreen, "bring_up", real)
    # A re-run finishes the job: the idle colour already runs 2.3.0, it is gated again and switched to.
    code, doc, err = _run(lab, "deploy", "--strategy", "blue-green", "--version", "2.3.0", "--limit", "lab-node03")
    assert code == 0 and doc["hosts"]["lab-node03"]["outcome"] == "deployed", err
    assert _versions(lab)["lab-node03"] == "2.3.0"


def test_7_status_dry_run_and_retention_know_the_colours(lab: Lab) -> None:
    proc = lab.fleetctl("deploy", str(lab.playbook), "-i", str(lab.inventory), "--strategy", "blue-green",
                        "--version", "2.4.0", "--dry-run", "--json", "--limit", "lab-node04", timeout=300)
    assert proc.returncode == 0, proc.stderr
    changes = json.loads(proc.stdout)["hosts"]["lab-node04"]["changes"]
    assert any(re.match(r"switch port 8080 from (blue|green) to (blue|green)", c) for c in changes), changes

    status = json.loads(lab.fleetctl("status", str(lab.playbook), "-i", str(lab.inventory), "--json",
                                     check=True).stdout)["hosts"]["lab-node03"]
    assert status["live"] in ("blue", "green") and status["healthy"] is True
    live = status["colours"][status["live"]]
    assert live["release"]["version"] == "2.3.0" and live["service"] == "Running" and live["healthy"] is True


def test_8_a_rollback_after_the_old_colour_stopped_starts_and_gates_it_first(lab: Lab) -> None:
    for version in ("2.5.0", "2.6.0"):  # the stopped colour holds 2.5.0, the release installed before 2.6.0
        code, doc, err = _run(lab, "deploy", "--strategy", "blue-green", "--version", version, "--limit", "lab-node05")
        assert code == 0, err
    states = {s["name"]: s["state"] for s in lab.status()["lab-node05"]["services"]}
    assert sorted(states[c] for c in ("hello-blue", "hello-green")) == ["Running", "Stopped"]  # no bake, no warm
    before = _counters(lab)["lab-node05"]
    code, doc, err = _run(lab, "rollback", "--strategy", "blue-green", "--limit", "lab-node05")
    assert code == 0 and doc["hosts"]["lab-node05"]["outcome"] == "rolled_back", err
    assert _versions(lab)["lab-node05"] == "2.5.0"
    after = _counters(lab)["lab-node05"]
    assert after["service_starts"] == before["service_starts"] + 1 and after["artifact_bytes_stored"] == \
        before["artifact_bytes_stored"]


def test_8b_three_deploys_roll_back_one_release_at_a_time_and_then_refuse(lab: Lab) -> None:
    # A fresh node: 3.0.0 (blue), 3.1.0 (green), 3.2.0 (blue), each colour kept warm.
    code, _doc, err = _run(lab, "remove", "--limit", "lab-node07", "--purge")
    assert code == 0, err
    for version in ("3.0.0", "3.1.0", "3.2.0"):
        code, _doc, err = _run(lab, "deploy", "--strategy", "blue-green", "--version", version, "--limit",
                               "lab-node07", "--var", "keep_warm=true")
        assert code == 0 and _versions(lab)["lab-node07"] == version, err

    def rollback() -> tuple[int, dict[str, Any], str]:
        return _run(lab, "rollback", "--strategy", "blue-green", "--limit", "lab-node07", "--var", "keep_warm=true")

    before = _counters(lab)["lab-node07"]
    (code, doc, err), report = _under_load(lab, ["lab-node07"], rollback)  # to 3.1.0: green holds it, warm
    _record("blue-green rollback while the other colour is warm (switch under load)", report)
    assert code == 0 and doc["hosts"]["lab-node07"]["outcome"] == "rolled_back", err
    assert report.failed == 0, report.line()
    assert _versions(lab)["lab-node07"] == "3.1.0"
    after = _counters(lab)["lab-node07"]
    assert after["service_starts"] == before["service_starts"] and after["service_stops"] == before["service_stops"]
    # to 3.0.0: blue holds 3.2.0, newer, warm; 3.0.0 is put back into blue, started and gated, then switched to.
    code, doc, err = _run(lab, "rollback", "--strategy", "blue-green", "--limit", "lab-node07", "--dry-run")
    planned = doc["hosts"]["lab-node07"]
    assert (planned["from_colour"], planned["to_colour"], planned["mode"]) == ("green", "blue", "replace"), planned
    code, doc, err = rollback()
    assert code == 0 and doc["hosts"]["lab-node07"]["release"].startswith("3.0.0-"), err
    assert _versions(lab)["lab-node07"] == "3.0.0"
    assert _counters(lab)["lab-node07"]["artifact_bytes_stored"] == before["artifact_bytes_stored"]
    # Nothing older than 3.0.0 here: refused, the host unchanged; never forward to the warm 3.1.0.
    counters = _changes(lab, "lab-node07")
    code, doc, err = rollback()
    host = doc["hosts"]["lab-node07"]
    assert code == 1 and host["outcome"] == "failed" and "no earlier release to roll back to" in host["error"], doc
    assert _versions(lab)["lab-node07"] == "3.0.0" and _changes(lab, "lab-node07") == counters


def test_9_remove_retires_both_colours_and_the_proxy(lab: Lab) -> None:
    proc = lab.fleetctl("remove", str(lab.playbook), "-i", str(lab.inventory), "--limit", "lab-node06", "--purge",
                        "--yes", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    node = lab.status()["lab-node06"]
    assert not [s for s in node["services"] if s["name"].startswith("hello")]
    assert not node["port_proxies"]
    assert lab.health("lab-node06") is None
