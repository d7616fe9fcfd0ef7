"""Zero-downtime rollouts on the lab, with real parts on loopback: a real sshd (the balancer's Linux host), a real
nginx and a real haproxy in front of three lab nodes running the example service, and a load generator sending
steady requests through the balancer during the deploy. Each run asserts zero failed requests; a control run of
the same rolling deploy without drain shows failures, so these tests can fail. The `test_b*` tests run blue-green
behind the same nginx and haproxy: each backend moves between its colours' ports (checked in the live upstream and
in HAProxy's running servers), a warm rollback moves it back, a colour that never gets healthy or a Ctrl-C before
the move leaves the balancer untouched.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from traffic.balancer_kit import (
    SshHost,
    haproxy_template,
    nginx_template,
    running_haproxy,
    running_nginx,
    running_sshd,
)
from traffic.loadgen import LoadGenerator, LoadReport

from .conftest import Lab, _start_lab

pytestmark = [pytest.mark.lab, pytest.mark.ssh, pytest.mark.nginx, pytest.mark.haproxy]
NET = os.environ.get("FLEETCTL_TEST_ZERO_DOWNTIME_NET", "127.0.61")
REPORTS: dict[str, LoadReport] = {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_ZERO_DOWNTIME_BASE", "127.0.54.1")
    yield from _start_lab(tmp_path_factory.mktemp("zero-downtime"), 3, base, "linux")


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    with running_sshd(tmp_path_factory.mktemp("lb-sshd"), f"{NET}.2") as host:
        yield host


def _lb_inventory(lab: Lab, ssh_host: SshHost) -> Path:
    path = lab.directory / "lb.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"balancers": {"hosts": {"lb1": ssh_host.hostvars()}}}}}))
    return path


def _playbook(lab: Lab, name: str, traffic: dict[str, Any] | None) -> Path:
    data = yaml.safe_load(lab.playbook.read_text())
    data["hosts"] = "lab"  # the balancer is in the inventory too, and is no deploy target
    data.pop("traffic", None)
    if traffic is not None:
        if traffic.get("template"):  # templates are read from the project only: copy it in, beside the playbook
            source = Path(traffic["template"])
            copy = lab.directory / f"{Path(name).stem}-{source.name}"
            copy.write_text(source.read_text())
            traffic = dict(traffic, template=copy.name)
        data["traffic"] = traffic
    path = lab.directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _deploy(lab: Lab, playbook: Path, lb_inventory: Path, version: str, *args: str) -> tuple[int, dict[str, Any], str]:
    import json
    proc = lab.fleetctl("deploy", str(playbook), "-i", str(lab.inventory), "-i", str(lb_inventory), "--yes", "--json",
                        "--version", version, "--batch", "1", "--var", "window=1s", *args, timeout=300)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def _backends(lab: Lab) -> Any:
    from fleetctl.traffic import Backend, Pool
    return Pool("hello", tuple(Backend(n, a, 8080) for n, a in lab.addresses.items()))


def _first_config(template: Path, pool: Any) -> str:
    from fleetctl.traffic.config_file import TemplateSource
    return TemplateSource(template, template.read_text(), template).render(pool)


@pytest.fixture(scope="module")
def nginx(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("nginx")
    template = nginx_template(directory, f"{NET}.3", 8080)
    _deploy_plain(lab)
    with running_nginx(directory, f"{NET}.3", _first_config(template, _backends(lab))) as server:
        yield server


@pytest.fixture(scope="module")
def haproxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("haproxy")
    template = haproxy_template(directory, f"{NET}.4", 8080)
    _deploy_plain(lab)
    with running_haproxy(directory, f"{NET}.4", _first_config(template, _backends(lab))) as server:
        yield server


def _deploy_plain(lab: Lab) -> None:
    """Every node runs the service before a balancer is put in front of it."""
    if all(lab.health(n) for n in lab.nodes):
        return
    code, _doc, err = lab.deploy("--version", "0.9.0", "--var", "window=1s")
    assert code == 0, err


def _releases(lab: Lab) -> dict[str, Any]:
    return {n: (lab.health(n) or {}).get("version") for n in lab.nodes}


def _under_load(address: str, port: int, run: Any) -> tuple[Any, LoadReport]:
    with LoadGenerator(address, port, path="/healthz", threads=4, interval_s=0.005, max_seconds=240) as load:
        load.wait_for_requests(50)
        result = run()
        load.wait_for_requests(load.sent + 50)
    for when, kind in load.failures[:5]:  # when the first ones happened, to compare with the balancer's log
        print(f"[zero-downtime] failure at {time.strftime('%H:%M:%S', time.gmtime(when))}.{int(when % 1 * 1000):03d}: "
              f"{kind}")
    return result, load.report()


def _record(name: str, report: LoadReport) -> None:
    REPORTS[name] = report
    print(f"\n[zero-downtime] {name}: {report.line()}")


def test_rolling_deploy_behind_nginx_with_drain_drops_no_request(lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _playbook(lab, "hello-nginx.yml", nginx.traffic("lb1", port=8080, drain="1s"))
    (code, doc, err), report = _under_load(nginx.address, nginx.port,
                                           lambda: _deploy(lab, playbook, lb, "1.1.0"))
    _record("rolling deploy, nginx, drain", report)
    assert code == 0, err
    assert all(h["outcome"] == "deployed" for h in doc["hosts"].values()), doc
    assert report.sent > 200 and report.failed == 0, report.line()
    assert "down" not in re.sub(r"#.*", "", nginx.config.read_text().split("upstream", 1)[1].split("}", 1)[0])


def test_control_the_same_rolling_deploy_without_drain_drops_requests(lab: Lab, ssh_host: SshHost,
                                                                      nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _playbook(lab, "hello-plain.yml", None)  # nginx stays in front, nobody tells it about restarts
    (code, _doc, err), report = _under_load(nginx.address, nginx.port,
                                           lambda: _deploy(lab, playbook, lb, "1.2.0"))
    _record("control: rolling deploy, nginx, no drain", report)
    assert code == 0, err
    assert report.failed > 0, report.line()


def test_rolling_deploy_behind_haproxy_with_drain_drops_no_request(lab: Lab, ssh_host: SshHost,
                                                                   haproxy: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _playbook(lab, "hello-haproxy.yml", haproxy.traffic("lb1", port=8080))
    (code, _doc, err), report = _under_load(haproxy.address, haproxy.port,
                                           lambda: _deploy(lab, playbook, lb, "1.3.0"))
    _record("rolling deploy, HAProxy, drain", report)
    assert code == 0, err
    assert report.sent > 200 and report.failed == 0, report.line()


def test_a_failed_canary_behind_nginx_drops_no_request_and_returns_the_rolled_back_host(
        lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _playbook(lab, "hello-nginx.yml", nginx.traffic("lb1", port=8080, drain="1s"))
    before = _releases(lab)
    (code, doc, err), report = _under_load(nginx.address, nginx.port, lambda: _deploy(
        lab, playbook, lb, "1.4.0", "--canary", "1", "--var", "hello_mode=unhealthy"))
    _record("failed canary, nginx, drain", report)
    assert code == 1, err
    canary = next(h for h, o in doc["hosts"].items() if o["outcome"] == "rolled_back")
    assert _releases(lab) == before
    assert report.failed == 0, report.line()
    # Healthy again on its previous release: back in the pool, nothing left drained.
    upstream = re.sub(r"#.*", "", nginx.config.read_text().split("upstream", 1)[1].split("}", 1)[0])
    assert "down" not in upstream, (canary, upstream)


def test_a_limited_deploy_keeps_every_host_of_the_service_in_the_upstream(lab: Lab, ssh_host: SshHost,
                                                                          nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _playbook(lab, "hello-nginx.yml", nginx.traffic("lb1", port=8080, drain="0s"))
    code, _doc, err = _deploy(lab, playbook, lb, "1.5.0", "--limit", "lab-node01")
    assert code == 0, err
    upstream = nginx.config.read_text().split("upstream", 1)[1].split("}", 1)[0]
    assert all(f"{address}:8080" in upstream for address in lab.addresses.values()), upstream
    assert "down" not in re.sub(r"#.*", "", upstream)


def test_zz_the_load_generator_alone_sees_no_failure(lab: Lab, nginx: Any) -> None:
    _, report = _under_load(nginx.address, nginx.port, lambda: time.sleep(5))
    _record("baseline: no deploy", report)
    assert report.failed == 0


def test_an_unreachable_balancer_stops_the_deploy_before_any_host(lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    from traffic.balancer_kit import free_port
    lb = lab.directory / "lb-down.yml"
    lb.write_text(yaml.safe_dump({"all": {"children": {"balancers": {"hosts": {
        "lb1": dict(ssh_host.hostvars(), ansible_port=free_port(ssh_host.address))}}}}}))
    playbook = _playbook(lab, "hello-nginx-down.yml", nginx.traffic("lb1", port=8080))
    before = _releases(lab)
    code, _doc, err = _deploy(lab, playbook, lb, "1.9.0")
    assert code == 1, err
    assert "load balancer lb1 is unreachable" in err and "no host was touched" in err
    assert _releases(lab) == before


def test_a_template_nginx_refuses_stops_the_deploy_with_nothing_changed(lab: Lab, ssh_host: SshHost, nginx: Any,
                                                                         tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf.j2"
    broken.write_text(nginx.template.read_text().replace("proxy_next_upstream off;", "proxy_next_upstream never;"))
    lb = _lb_inventory(lab, ssh_host)
    playbook = _playbook(lab, "hello-nginx-broken.yml", nginx.traffic("lb1", port=8080, template=broken))
    live = nginx.config.read_text()
    before = _releases(lab)
    dry = lab.fleetctl("deploy", str(playbook), "-i", str(lab.inventory), "-i", str(lb), "--version", "1.9.1",
                       "--dry-run", timeout=300)
    assert dry.returncode == 1 and "nginx refused the configuration" in dry.stderr, dry.stderr
    code, _doc, err = _deploy(lab, playbook, lb, "1.9.1")
    assert code == 1 and "nginx refused the configuration" in err and "no host was touched" in err, err
    assert nginx.config.read_text() == live and _releases(lab) == before


def test_dry_run_shows_the_traffic_steps_and_checks_the_config(lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _playbook(lab, "hello-nginx.yml", nginx.traffic("lb1", port=8080))
    live = nginx.config.read_text()
    proc = lab.fleetctl("deploy", str(playbook), "-i", str(lab.inventory), "-i", str(lb), "--version", "1.9.2",
                        "--dry-run", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json
    changes = json.loads(proc.stdout)["hosts"]["lab-node01"]["changes"]
    assert changes[0] == "drain from nginx on lb1" and changes[-1] == "return to the pool on nginx on lb1 once healthy"
    assert nginx.config.read_text() == live


def test_a_balancer_template_outside_the_project_is_refused_before_anything(lab: Lab, ssh_host: SshHost,
                                                                           nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    data = yaml.safe_load(_playbook(lab, "hello-nginx-outside.yml", None).read_text())
    data["traffic"] = nginx.traffic("lb1", port=8080)  # its template lives in nginx's own temp directory
    playbook = lab.directory / "hello-nginx-outside.yml"
    playbook.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _doc, err = _deploy(lab, playbook, lb, "1.9.3")
    assert code == 2 and "traffic.template" in err and "outside the project directory" in err, err


# --- blue-green behind the balancer: its backend moves from one colour's port to the other's -----------------------
# These come last: once a host runs blue-green, a rolling deploy to it is refused (its proxy owns the public port).

BLUE_GREEN = {"listen_port": "{{ hello_port }}", "blue_port": "{{ hello_port + 10000 }}",
              "green_port": "{{ hello_port + 10001 }}", "keep_warm": "{{ keep_warm | default(false) }}"}
COLOUR_PORTS = {8080, 18080, 18081}


def _bg_playbook(lab: Lab, name: str, traffic: dict[str, Any]) -> Path:
    return _playbook(lab, name, dict(traffic, blue_green=BLUE_GREEN))


def _bg(lab: Lab, command: str, playbook: Path, lb_inventory: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    import json
    proc = lab.fleetctl(command, str(playbook), "-i", str(lab.inventory), "-i", str(lb_inventory), "--yes", "--json",
                        "--strategy", "blue-green", "--batch", "1", "--var", "window=1s", *args, timeout=300)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def _upstream_ports(nginx: Any) -> dict[str, int]:
    """lab host -> the port nginx's live upstream sends it to (the template names each server in a comment)."""
    upstream = nginx.config.read_text().split("upstream", 1)[1].split("}", 1)[0]
    found = re.findall(r"server [\d.]+:(\d+) max_fails=0( down)?;\s+# (\S+)", upstream)
    assert not any(down for _port, down, _host in found), upstream
    return {host: int(port) for port, _down, host in found}


def _haproxy_ports(haproxy: Any) -> dict[str, int]:
    """lab host -> the port HAProxy's running server sends it to (`show servers state`, on the admin socket)."""
    import subprocess
    answer = subprocess.run(["socat", "-t", "5", "stdio", f"UNIX-CONNECT:{haproxy.socket},shut-none"],
                            input="show servers state hello\n", capture_output=True, text=True, check=True,
                            timeout=15).stdout
    lines = answer.splitlines()
    names = next(line for line in lines if line.startswith("# be_id"))[2:].split()
    rows = [dict(zip(names, line.split(), strict=False)) for line in lines
            if line.strip() and not line.startswith("#") and not line.strip().isdigit()]
    return {row["srv_name"]: int(row["srv_port"]) for row in rows}


def _live_ports(lab: Lab, playbook: Path, lb_inventory: Path) -> dict[str, int]:
    """lab host -> its live colour's port, as `fleetctl status` reads it from the node's port proxy."""
    import json
    proc = lab.fleetctl("status", str(playbook), "-i", str(lab.inventory), "-i", str(lb_inventory), "--json",
                        check=True)
    hosts = json.loads(proc.stdout)["hosts"]
    return {name: {"blue": 18080, "green": 18081}[host["live"]] for name, host in hosts.items()}


def _counters(lab: Lab) -> dict[str, dict[str, int]]:
    return {n: s["counters"] for n, s in lab.status().items()}


def test_b1_a_blue_green_deploy_behind_nginx_moves_each_backend_and_drops_no_request(
        lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-nginx-bg.yml", nginx.traffic("lb1", port=8080, drain="0.5s"))
    assert set(_upstream_ports(nginx).values()) == {8080}  # every host on its single rolling service
    dry = lab.fleetctl("deploy", str(playbook), "-i", str(lab.inventory), "-i", str(lb), "--strategy", "blue-green",
                       "--version", "3.0.0", "--dry-run", "--json", timeout=300)
    assert dry.returncode == 0, dry.stderr
    import json
    changes = json.loads(dry.stdout)["hosts"]["lab-node01"]["changes"]
    assert "move backend lab-node01 on nginx on lb1 from port 8080 to blue port 18080" in changes, changes
    (code, doc, err), report = _under_load(nginx.address, nginx.port, lambda: _deploy(
        lab, playbook, lb, "3.0.0", "--strategy", "blue-green"))
    _record("blue-green deploy, nginx (moving over from rolling)", report)
    assert code == 0, err
    assert all(h["outcome"] == "deployed" for h in doc["hosts"].values()), doc
    assert report.sent > 200 and report.failed == 0, report.line()
    assert set(_releases(lab).values()) == {"3.0.0"}
    # The balancer sends each host's traffic to its live colour's own port; the node's proxy agrees.
    assert _upstream_ports(nginx) == _live_ports(lab, playbook, lb) == {n: 18080 for n in lab.nodes}

    (code, doc, err), report = _under_load(nginx.address, nginx.port, lambda: _deploy(
        lab, playbook, lb, "3.1.0", "--strategy", "blue-green", "--var", "keep_warm=true"))
    _record("blue-green deploy, nginx", report)
    assert code == 0, err
    assert report.sent > 200 and report.failed == 0, report.line()
    assert _upstream_ports(nginx) == _live_ports(lab, playbook, lb) == {n: 18081 for n in lab.nodes}


def test_b2_a_warm_blue_green_rollback_behind_nginx_moves_the_backends_back_instantly(
        lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-nginx-bg.yml", nginx.traffic("lb1", port=8080, drain="0.5s"))
    # The plan names each host's colours, the instant switch and the backend's move on nginx.
    code, doc, err = _bg(lab, "rollback", playbook, lb, "--var", "keep_warm=true", "--dry-run")
    assert code == 0, err
    for name, host in doc["hosts"].items():
        assert host["mode"] == "instant" and host["backend"] == \
            f"move backend {name} on nginx on lb1 from green port 18081 to blue port 18080", (name, host)
    before = _counters(lab)
    (code, doc, err), report = _under_load(nginx.address, nginx.port, lambda: _bg(
        lab, "rollback", playbook, lb, "--var", "keep_warm=true"))
    _record("blue-green rollback (warm), nginx", report)
    assert code == 0, err
    assert {h["outcome"] for h in doc["hosts"].values()} == {"rolled_back"}, doc
    assert report.failed == 0, report.line()
    assert set(_releases(lab).values()) == {"3.0.0"}
    assert _upstream_ports(nginx) == _live_ports(lab, playbook, lb) == {n: 18080 for n in lab.nodes}
    after = _counters(lab)
    for node in lab.nodes:  # warm: the switch alone, no service stopped or started
        assert after[node]["service_starts"] == before[node]["service_starts"], node
        assert after[node]["service_stops"] == before[node]["service_stops"], node


def test_b3_a_colour_that_never_gets_healthy_leaves_nginx_on_the_old_port(
        lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-nginx-bg.yml", nginx.traffic("lb1", port=8080, drain="0.5s"))
    live = nginx.config.read_text()
    (code, doc, err), report = _under_load(nginx.address, nginx.port, lambda: _deploy(
        lab, playbook, lb, "3.2.0", "--strategy", "blue-green", "--canary", "1", "--var", "hello_mode=unhealthy"))
    _record("blue-green failed canary, nginx", report)
    assert code == 1, err
    canary = next(h for h in doc["hosts"].values() if h["outcome"] == "rolled_back")
    assert "stays on blue" in canary["error"], canary
    assert report.failed == 0, report.line()
    assert nginx.config.read_text() == live and set(_releases(lab).values()) == {"3.0.0"}


def test_b4_interrupted_between_the_gate_and_the_move_nginx_is_untouched_and_a_rerun_finishes(
        lab: Lab, ssh_host: SshHost, nginx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.rollout import bluegreen
    from fleetctl.rollout.events import EventBus
    from fleetctl.rollout.host_steps import Interruption
    from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-nginx-bg.yml", nginx.traffic("lb1", port=8080, drain="0.5s"))
    interruption = Interruption()
    real = bluegreen.bring_up

    def gate_then_ctrl_c(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        interruption.press()
        interruption.press()

    monkeypatch.setattr(bluegreen, "bring_up", gate_then_ctrl_c)
    live = nginx.config.read_text()
    options = DeployOptions(playbook=playbook, inventories=[lab.inventory, lb], limit="lab-node02", version="3.3.0",
                            strategy="blue-green", dist_dir=lab.directory / "dist", extra_vars=("window=1s",))
    result, report = _under_load(nginx.address, nginx.port, lambda: run_deploy(prepare_deploy(options), EventBus(),
                                                                               interruption=interruption))
    _record("blue-green interrupted between the gate and the move, nginx", report)
    assert result.exit_code == 130, result.message
    assert "before the switch" in (result.outcomes["lab-node02"].error or "")
    assert nginx.config.read_text() == live and report.failed == 0, report.line()
    assert _releases(lab)["lab-node02"] == "3.0.0"
    monkeypatch.setattr(bluegreen, "bring_up", real)
    code, doc, err = _deploy(lab, playbook, lb, "3.3.0", "--strategy", "blue-green", "--limit", "lab-node02")
    assert code == 0 and doc["hosts"]["lab-node02"]["outcome"] == "deployed", err
    assert _releases(lab)["lab-node02"] == "3.3.0"
    assert _upstream_ports(nginx)["lab-node02"] == _live_ports(lab, playbook, lb)["lab-node02"] == 18081


class _Crash(BaseException):
    """fleetctl dying mid-run (kill -9, a power cut): nothing of the run's own handling gets to run."""


def test_b4b_a_run_stopped_between_the_balancer_move_and_the_proxy_switch_recovers_on_the_next_run(
        lab: Lab, ssh_host: SshHost, nginx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.rollout import traffic_steps
    from fleetctl.rollout.events import EventBus
    from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-nginx-bg.yml", nginx.traffic("lb1", port=8080, drain="0.5s"))
    live_before = _live_ports(lab, playbook, lb)["lab-node03"]
    real = traffic_steps.HostTraffic.move

    def move_then_die(self: Any, host: str, port: int) -> None:
        real(self, host, port)  # nginx now sends lab-node03's traffic to the new colour (gated, running)
        raise _Crash()          # ... and fleetctl is gone before the node's proxy switches

    monkeypatch.setattr(traffic_steps.HostTraffic, "move", move_then_die)
    options = DeployOptions(playbook=playbook, inventories=[lab.inventory, lb], limit="lab-node03", version="3.3.1",
                            strategy="blue-green", dist_dir=lab.directory / "dist", extra_vars=("window=1s",))

    def crashing_run() -> None:
        with pytest.raises(_Crash):
            run_deploy(prepare_deploy(options), EventBus())

    _none, report = _under_load(nginx.address, nginx.port, crashing_run)
    _record("blue-green stopped between the balancer move and the proxy switch, nginx", report)
    monkeypatch.setattr(traffic_steps.HostTraffic, "move", real)
    # Half-done: the balancer on the new colour, the node's proxy (and its record) still on the old one. Both
    # colours run and answer, so no request failed; the new one passed its gate before the move.
    moved = _upstream_ports(nginx)["lab-node03"]
    assert moved != live_before and _live_ports(lab, playbook, lb)["lab-node03"] == live_before, moved
    assert report.failed == 0, report.line()
    states = {s["name"]: s["state"] for s in lab.status()["lab-node03"]["services"]}
    assert states["hello-blue"] == states["hello-green"] == "Running", states
    # The next run reads the node's live colour, points nginx back at it, then finishes the switch, under load.
    (code, doc, err), report = _under_load(nginx.address, nginx.port, lambda: _deploy(
        lab, playbook, lb, "3.3.1", "--strategy", "blue-green", "--limit", "lab-node03"))
    _record("blue-green re-run after the stop between the move and the switch, nginx", report)
    assert code == 0 and doc["hosts"]["lab-node03"]["outcome"] == "deployed", err
    assert _releases(lab)["lab-node03"] == "3.3.1" and report.failed == 0, report.line()
    assert _upstream_ports(nginx)["lab-node03"] == _live_ports(lab, playbook, lb)["lab-node03"] == moved


def test_b5_blue_green_behind_haproxy_deploy_and_warm_rollback_drop_no_request(
        lab: Lab, ssh_host: SshHost, haproxy: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-haproxy-bg.yml", dict(haproxy.traffic("lb1", port=8080), drain="0.5s"))
    # HAProxy was started with every server on 8080; the run first aligns it with each node's live colour.
    (code, doc, err), report = _under_load(haproxy.address, haproxy.port, lambda: _deploy(
        lab, playbook, lb, "3.4.0", "--strategy", "blue-green", "--var", "keep_warm=true"))
    _record("blue-green deploy, HAProxy", report)
    assert code == 0, err
    assert all(h["outcome"] in ("deployed", "skipped") for h in doc["hosts"].values()), doc
    assert report.sent > 200 and report.failed == 0, report.line()
    assert set(_releases(lab).values()) == {"3.4.0"}
    live = _live_ports(lab, playbook, lb)
    assert _haproxy_ports(haproxy) == live and set(live.values()) <= COLOUR_PORTS - {8080}
    # One more, so the warm colour holds the release installed just before the current one on every host: the
    # rollback's target (a rollback goes to the newest earlier release, never to a newer warm colour).
    code, doc, err = _deploy(lab, playbook, lb, "3.4.1", "--strategy", "blue-green", "--var", "keep_warm=true")
    assert code == 0 and set(_releases(lab).values()) == {"3.4.1"}, err
    live = _live_ports(lab, playbook, lb)
    before = _counters(lab)
    (code, doc, err), report = _under_load(haproxy.address, haproxy.port, lambda: _bg(
        lab, "rollback", playbook, lb, "--var", "keep_warm=true"))
    _record("blue-green rollback (warm), HAProxy", report)
    assert code == 0, err
    assert report.failed == 0, report.line()
    assert _haproxy_ports(haproxy) == _live_ports(lab, playbook, lb) != live
    assert set(_releases(lab).values()) == {"3.4.0"}
    after = _counters(lab)
    assert all(after[n]["service_starts"] == before[n]["service_starts"] for n in lab.nodes), (before, after)


def test_b6_a_colour_that_never_gets_healthy_leaves_haproxy_on_the_old_port(
        lab: Lab, ssh_host: SshHost, haproxy: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-haproxy-bg.yml", dict(haproxy.traffic("lb1", port=8080), drain="0.5s"))
    ports = _haproxy_ports(haproxy)
    before = _releases(lab)
    (code, doc, err), report = _under_load(haproxy.address, haproxy.port, lambda: _deploy(
        lab, playbook, lb, "3.5.0", "--strategy", "blue-green", "--canary", "1", "--var", "hello_mode=unhealthy"))
    _record("blue-green failed canary, HAProxy", report)
    assert code == 1, err
    assert [h["outcome"] for h in doc["hosts"].values()].count("rolled_back") == 1, doc
    assert report.failed == 0, report.line()
    assert _haproxy_ports(haproxy) == ports and _releases(lab) == before


def test_b7_a_pool_host_that_cannot_be_asked_stops_a_blue_green_run_before_the_balancer_is_touched(
        lab: Lab, ssh_host: SshHost, nginx: Any) -> None:
    lb = _lb_inventory(lab, ssh_host)
    playbook = _bg_playbook(lab, "hello-nginx-bg.yml", nginx.traffic("lb1", port=8080, drain="0.5s"))
    live, before = nginx.config.read_text(), _releases(lab)
    lab.fault("lab-node03", "unreachable")  # outside --limit, but its port is in the upstream nginx renders
    try:
        code, _doc, err = _deploy(lab, playbook, lb, "3.6.0", "--strategy", "blue-green", "--limit", "lab-node01")
    finally:
        lab.fault("lab-node03", "none")
    assert code == 1, err
    assert "cannot tell which colour 1 host(s)" in err and "lab-node03" in err and "no host was touched" in err, err
    assert nginx.config.read_text() == live and _releases(lab) == before
