"""Blue-green behind a load balancer, one host's switch with a fake node and a fake balancer (no I/O): the backend
moves before the node's proxy switches, a rolling service being moved off stops only after the move, a failed
proxy switch moves the backend back, a failed move leaves the proxy alone and halts the run; the dry run says
which backend moves where."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from fleetctl.node.client import NodeClient
from fleetctl.node.results import ColourSwitch, NodeState, ServiceInfo
from fleetctl.rollout.bluegreen import BackendSeat, BlueGreenJob, ColourPorts, colour_changes, switch_to
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.host_steps import HostContext, Interruption, StepFailed
from fleetctl.rollout.release import Release, ServiceDefinition
from fleetctl.rollout.traffic_steps import HostTraffic
from fleetctl.traffic import Backend, BalancerError, DrainResult, Pool

PORTS = ColourPorts(listen=8080, blue=18080, green=18081)


@dataclass
class FakeBalancer:
    pool_: Pool
    calls: list[str]
    fail_move: bool = False
    kind: str = "nginx"

    @property
    def host_name(self) -> str:
        return "lb1"

    @property
    def pool(self) -> Pool:
        return self.pool_

    def prepare(self, *, check_only: bool = False) -> None:
        self.calls.append("prepare")

    def drain(self, host: str, aborted: Callable[[], bool] = lambda: False) -> DrainResult:
        raise AssertionError("blue-green never drains")

    def ready(self, host: str) -> None:
        raise AssertionError("blue-green moves, it does not ready")

    def move(self, host: str, port: int) -> None:
        if self.fail_move:
            raise BalancerError("nginx refused the configuration", host="lb1")
        self.calls.append(f"move {host} {port}")
        self.pool_ = self.pool_.with_port(host, port)

    def repoint(self, ports: Mapping[str, int]) -> None:
        self.pool_ = self.pool_.with_ports(ports)

    def close(self) -> None:
        pass


@dataclass
class FakeNode:
    calls: list[str]
    fail_proxy: bool = False
    current: str = "2.0-g"

    def stop_fleet_service(self, *, name: str, timeout_seconds: int) -> None:
        self.calls.append(f"stop {name}")

    def switch_fleet_colour(self, **kwargs: Any) -> ColourSwitch:
        if self.fail_proxy:
            raise StepFailed("proxy", "IP Helper service is not running")
        self.calls.append(f"proxy {kwargs['colour']} {kwargs['connect_port']}")
        return ColourSwitch(kwargs["colour"], self.current, None, None, True)


def _release(colour: str, rid: str) -> Release:
    service = ServiceDefinition(name=f"hello-{colour}", binary_path=f"C:\\apps\\hello\\{colour}\\hello.exe")
    return Release(id=rid, version=rid.split("-")[0], app="hello", root="C:\\apps\\hello", artifact_sha256="",
                   exe_name="hello.exe", files=(), service=service)


@dataclass
class Setup:
    calls: list[str] = field(default_factory=list)
    halted: list[str] = field(default_factory=list)

    def run(self, *, port: int = 18080, plain_running: bool = False, fail_move: bool = False,
            fail_proxy: bool = False) -> tuple[FakeBalancer, Exception | None]:
        balancer = FakeBalancer(Pool("hello", (Backend("web1", "10.0.0.1", port),)), self.calls, fail_move)
        traffic = HostTraffic(balancer, halt=self.halted.append, grace_s=0.01)
        node = FakeNode(self.calls, fail_proxy)
        ctx = HostContext("web1", cast(NodeClient, node), EventBus(), Interruption())
        releases = {"blue": _release("blue", "1.0-b"), "green": _release("green", "2.0-g")}
        job = BlueGreenJob(releases=releases, health={"blue": None, "green": None}, ports=PORTS,
                           artifact_path=cast(Any, None), plain_service="hello", traffic=traffic)
        plain = ServiceInfo(True, "Running", 10, None, 0, None) if plain_running else None
        state = NodeState((), "1.0-b", None, plain, None)
        try:
            switch_to(ctx, job, state, "green", releases["green"])
        except Exception as err:  # noqa: BLE001 - the test looks at it
            return balancer, err
        return balancer, None


def test_the_backend_moves_to_the_new_colour_before_the_node_proxy_switches() -> None:
    setup = Setup()
    balancer, err = setup.run()
    assert err is None
    assert setup.calls == ["move web1 18081", "proxy green 18081"]
    assert balancer.pool.backend("web1").port == 18081


def test_a_host_moving_over_from_rolling_stops_its_service_only_after_the_move() -> None:
    setup = Setup()
    _balancer, err = setup.run(port=8080, plain_running=True)
    assert err is None
    assert setup.calls == ["move web1 18081", "stop hello", "proxy green 18081"]


def test_a_failed_proxy_switch_moves_the_backend_back_to_the_colour_the_node_still_records() -> None:
    setup = Setup()
    balancer, err = setup.run(fail_proxy=True)
    assert isinstance(err, StepFailed)
    assert setup.calls == ["move web1 18081", "move web1 18080"]
    assert balancer.pool.backend("web1").port == 18080


def test_a_failed_move_halts_the_run_and_leaves_the_node_proxy_alone() -> None:
    setup = Setup()
    balancer, err = setup.run(fail_move=True)
    assert isinstance(err, StepFailed) and err.step == "ready" and "nginx refused" in err.reason
    assert setup.calls == [] and setup.halted == ["nginx refused the configuration"]
    assert balancer.pool.backend("web1").port == 18080


def test_already_on_the_new_colour_port_the_balancer_is_not_touched() -> None:
    setup = Setup()
    _balancer, err = setup.run(port=18081)
    assert err is None and setup.calls == ["proxy green 18081"]


@pytest.mark.parametrize(("seat_port", "expected"), [
    (18080, "move backend web1 on nginx on lb1 from port 18080 to green port 18081"),
    (18081, None),
])
def test_the_dry_run_says_which_backend_moves_to_which_port(seat_port: int, expected: str | None) -> None:
    from fleetctl.node.results import ColourInfo, ProxyInfo, ReleaseInfo
    running = ServiceInfo(True, "Running", 1, None, 0, None)
    state = NodeState((ReleaseInfo("1.0-b", "1.0", "s", None),), "1.0-b", None, None, None,
                      colours=(ColourInfo("blue", "1.0-b", None, running),), live="blue",
                      proxy=ProxyInfo("0.0.0.0:8080", "127.0.0.1:18080"))
    releases = {"blue": _release("blue", "2.0-b2"), "green": _release("green", "2.0-g")}
    preview = colour_changes(state, releases, PORTS, artifact_present=True, bake=0.0,
                             seat=BackendSeat("nginx on lb1", "web1", seat_port, 0.5))
    moves = [c for c in preview.changes if c.startswith("move backend")]
    assert moves == ([expected] if expected else [])
    assert preview.changes[-1] == "blue: 0.5 s for its open requests, then keep warm 0 s, then stop"
