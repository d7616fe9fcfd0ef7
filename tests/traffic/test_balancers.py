"""nginx and HAProxy driven over SSH, against a real sshd, nginx and haproxy on loopback (throwaway keys and
configs): drain and ready change where real requests go, a refused config changes nothing, the previous file is
kept, an unreachable balancer is one clear error."""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl.config.playbook import Traffic
from fleetctl.traffic import Backend, BalancerError, HaproxyBalancer, NginxBalancer, Pool, make_balancer
from fleetctl.traffic.config_file import TemplateSource
from fleetctl.transport.ssh import SshSettings

from .balancer_kit import (
    NET,
    SshHost,
    free_port,
    haproxy_template,
    http_backend,
    nginx_template,
    running_haproxy,
    running_nginx,
    running_sshd,
)

pytestmark = [pytest.mark.ssh, pytest.mark.nginx]


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    with running_sshd(tmp_path_factory.mktemp("sshd"), f"{NET}.2") as host:
        yield host


@pytest.fixture
def backends() -> Iterator[Pool]:
    with http_backend(f"{NET}.10", b"a") as port_a, http_backend(f"{NET}.11", b"b") as port_b:
        yield Pool("hello", (Backend("web-a", f"{NET}.10", port_a), Backend("web-b", f"{NET}.11", port_b)))


def _ssh(host: SshHost) -> SshSettings:
    return SshSettings.from_hostvars("lb1", host.hostvars())


def _get(address: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as response:
        return response.read().decode()


def _spread(address: str, port: int, n: int = 20) -> Counter[str]:
    return Counter(_get(address, port) for _ in range(n))


@pytest.fixture
def nginx(tmp_path: Path, backends: Pool) -> Iterator[object]:
    address = f"{NET}.3"
    template = nginx_template(tmp_path, address, free_port(address))
    first = TemplateSource(template, template.read_text(), tmp_path / "playbook.yml").render(backends)
    with running_nginx(tmp_path, address, first) as server:
        yield server


def test_nginx_drain_renders_down_checks_reloads_and_ready_returns_the_host(ssh_host: SshHost, backends: Pool,
                                                                           nginx) -> None:  # type: ignore[no-untyped-def]
    traffic = Traffic.model_validate(nginx.traffic("lb1", drain="0s"))
    balancer = make_balancer(traffic, nginx.directory / "playbook.yml", backends, _ssh(ssh_host))
    assert isinstance(balancer, NginxBalancer)
    try:
        balancer.prepare()
        assert set(_spread(nginx.address, nginx.port)) == {"a", "b"}
        live_before = nginx.config.read_text()
        result = balancer.drain("web-a")
        assert result.idle and result.sessions is None
        assert "max_fails=0 down;  # web-a" in nginx.config.read_text()
        assert Path(str(nginx.config) + ".fleetctl-prev").read_text() == live_before  # the previous file is kept
        # The reload is asynchronous: new workers take over within moments.
        from .balancer_kit import wait_for
        wait_for(lambda: set(_spread(nginx.address, nginx.port)) == {"b"}, 10, "nginx to send only to web-b")
        balancer.ready("web-a")
        wait_for(lambda: set(_spread(nginx.address, nginx.port)) == {"a", "b"}, 10, "web-a back in the pool")
        assert balancer.pool.backend("web-a").state == "up"
    finally:
        balancer.close()


def test_nginx_refusing_a_rendered_config_changes_nothing(ssh_host: SshHost, backends: Pool, nginx,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    broken = tmp_path / "broken.j2"
    broken.write_text(nginx.template.read_text().replace("proxy_next_upstream off;", "proxy_next_upstream bogus;"))
    live_before = nginx.config.read_text()
    for check in (None, ["nginx", "-t", "-q", "-c", str(nginx.config)]):  # the candidate alone, or in place
        traffic = Traffic.model_validate(nginx.traffic("lb1", template=broken, check=check))
        balancer = make_balancer(traffic, nginx.directory / "playbook.yml", backends, _ssh(ssh_host))
        try:
            with pytest.raises(BalancerError, match="nginx refused the configuration rendered from .*broken.j2.*"
                                                    "the live .*nginx.conf is unchanged"):
                balancer.prepare()
            with pytest.raises(BalancerError):
                balancer.drain("web-a")
        finally:
            balancer.close()
        assert nginx.config.read_text() == live_before
        assert not Path(str(nginx.config) + ".fleetctl-new").exists()
        assert balancer.pool.backend("web-a").state == "up"  # the refused change is not recorded either
    assert set(_spread(nginx.address, nginx.port)) == {"a", "b"}


def test_an_unreachable_balancer_is_one_clear_error(backends: Pool, nginx, ssh_host: SshHost) -> None:  # type: ignore[no-untyped-def]
    settings = SshSettings.from_hostvars("lb1", dict(ssh_host.hostvars(), ansible_port=free_port(ssh_host.address)))
    balancer = make_balancer(Traffic.model_validate(nginx.traffic("lb1")), nginx.directory / "playbook.yml", backends,
                             settings)
    with pytest.raises(BalancerError, match="load balancer lb1 is unreachable: cannot reach .* over SSH"):
        balancer.prepare()


@pytest.fixture
def haproxy(tmp_path: Path, backends: Pool) -> Iterator[object]:
    address = f"{NET}.4"
    template = haproxy_template(tmp_path, address, free_port(address))
    first = TemplateSource(template, template.read_text(), tmp_path / "playbook.yml").render(backends)
    with running_haproxy(tmp_path, address, first) as server:
        yield server


@pytest.mark.haproxy
def test_haproxy_drain_ready_and_port_move_through_the_runtime_api(ssh_host: SshHost, backends: Pool,
                                                                  haproxy) -> None:  # type: ignore[no-untyped-def]
    balancer = make_balancer(Traffic.model_validate(haproxy.traffic("lb1")), haproxy.directory / "playbook.yml", backends,
                             _ssh(ssh_host))
    assert isinstance(balancer, HaproxyBalancer)
    pid = haproxy.process.pid
    try:
        for _ in range(5):  # every runtime command sees HAProxy's whole answer
            assert set(balancer.server_states()) == {"web-a", "web-b"}
        balancer.prepare()
        assert set(_spread(haproxy.address, haproxy.port)) == {"a", "b"}
        result = balancer.drain("web-a")
        assert result.idle and result.sessions == 0
        states = balancer.server_states()
        assert states["web-a"]["srv_admin_state"] != "0" and states["web-b"]["srv_admin_state"] == "0"
        assert set(_spread(haproxy.address, haproxy.port)) == {"b"}
        assert "web-a" in haproxy.config.read_text()  # the persistent config follows, checked by haproxy -c
        balancer.ready("web-a")
        assert balancer.server_states()["web-a"]["srv_admin_state"] == "0"
        assert set(_spread(haproxy.address, haproxy.port)) == {"a", "b"}
        with http_backend(f"{NET}.10", b"a2") as other:
            balancer.move("web-a", other)
            assert balancer.server_states()["web-a"]["srv_port"] == str(other)
            assert set(_spread(haproxy.address, haproxy.port)) == {"a2", "b"}
            assert f"{NET}.10:{other}" in haproxy.config.read_text()
        with pytest.raises(BalancerError, match="refused 'set server hello/nope"):
            balancer.runtime("set server hello/nope state drain")
    finally:
        balancer.close()
    assert haproxy.process.pid == pid and haproxy.process.poll() is None  # never reloaded or restarted


@pytest.mark.haproxy
def test_haproxy_check_failure_changes_nothing(ssh_host: SshHost, backends: Pool, haproxy,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    broken = tmp_path / "broken.cfg.j2"
    broken.write_text(haproxy.template.read_text().replace("timeout connect 2s", "timeout connect forever"))
    section = dict(haproxy.traffic("lb1"), template=str(broken))
    live_before = haproxy.config.read_text()
    balancer = make_balancer(Traffic.model_validate(section), haproxy.directory / "playbook.yml", backends,
                             _ssh(ssh_host))
    try:
        with pytest.raises(BalancerError, match="HAProxy refused the configuration"):
            balancer.drain("web-a")
        assert balancer.server_states()["web-a"]["srv_admin_state"] == "0"  # not drained at runtime either
    finally:
        balancer.close()
    assert haproxy.config.read_text() == live_before
