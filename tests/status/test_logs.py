"""The multi-host log follower (status/logs.py) over real lab nodes' Read-FleetLog (no network: each node answers
through FakeTransport): complete lines only, nothing lost or repeated across polls, a rotated log read from its
start, --grep on the controller, a host that fails reported once and caught up from its cursor."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from fleetctl.errors import ConfigError
from fleetctl.lab.node import LabNode
from fleetctl.node.client import NodeClient
from fleetctl.protocol.errors import HostUnreachable
from fleetctl.status.logs import HostLines, HostNotice, LogEvent, LogFollower, LogTarget, compile_grep
from fleetctl.transport.fake import FakeCall, FakeTransport

ROOT = "C:\\apps\\hello"


class Fleet:
    def __init__(self, tmp: Path, names: list[str]) -> None:
        self.nodes = {n: LabNode(n, "127.0.0.1", tmp / n) for n in names}
        self.down: set[str] = set()

    def log(self, name: str) -> Path:
        path = self.nodes[name].sandbox.resolve(f"{ROOT}\\shared\\logs\\hello.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, name: str, text: str) -> None:
        with self.log(name).open("a", encoding="utf-8", newline="") as f:
            f.write(text)

    def connect(self, host: str) -> NodeClient:
        def answer(call: FakeCall) -> Any:
            if host in self.down:
                return HostUnreachable("connection refused", host=host)
            return self.nodes[host].invoke(call.operation, call.params, [])[0]
        return NodeClient(FakeTransport(answer, host=host))

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    made = Fleet(tmp_path, ["web01", "web02"])
    yield made
    made.close()


def follower(fleet: Fleet, grep: str | None = None) -> LogFollower:
    return LogFollower([LogTarget(h, "hello", ROOT) for h in fleet.nodes], fleet.connect, grep=compile_grep(grep))


def lines(events: list[LogEvent]) -> list[tuple[str, str]]:
    return [(e.host, line) for e in events if isinstance(e, HostLines) for line in e.lines]


def test_tail_then_polls_return_each_complete_line_once(fleet: Fleet) -> None:
    fleet.write("web01", "one\ntwo\r\nhalf")
    fleet.write("web02", "alpha\n")
    follow = follower(fleet)
    tails = follow.tail(1)
    assert tails["web01"].lines == ("two",) and tails["web02"].lines == ("alpha",)  # the partial line waits
    assert lines(follow.poll()) == []
    fleet.write("web01", "-done\nthree\n")
    fleet.write("web02", "beta\n")
    assert lines(follow.poll()) == [("web01", "half-done"), ("web01", "three"), ("web02", "beta")]
    assert lines(follow.poll()) == []


def test_a_rotated_or_truncated_log_is_read_from_its_beginning(fleet: Fleet) -> None:
    fleet.write("web01", "old line one\nold line two\n")
    fleet.write("web02", "x\n")
    follow = follower(fleet)
    follow.tail(10)
    fleet.log("web01").write_text("new\n")  # shorter than the cursor: a new file
    events = follow.poll()
    assert lines(events) == [("web01", "new")]
    assert any(isinstance(e, HostNotice) and "rotated or truncated" in e.message for e in events)


def test_grep_filters_on_the_controller_and_a_bad_regex_is_bad_input(fleet: Fleet) -> None:
    fleet.write("web01", "GET /healthz\nERROR boom\n")
    fleet.write("web02", "fine\n")
    follow = follower(fleet, r"ERROR|panic")
    assert follow.tail(10)["web01"].lines == ("ERROR boom",) and follow.tail(10)["web02"].lines == ()
    fleet.write("web02", "panic: nil map\nok\n")
    assert lines(follow.poll()) == [("web02", "panic: nil map")]
    with pytest.raises(ConfigError, match="not a valid regular expression") as raised:
        compile_grep("(unclosed")
    assert raised.value.key == "--grep"


def test_a_failing_host_is_reported_once_and_caught_up_when_it_answers(fleet: Fleet) -> None:
    fleet.write("web01", "a\n")
    fleet.write("web02", "b\n")
    follow = follower(fleet)
    follow.tail(10)
    fleet.down.add("web02")
    fleet.write("web02", "written while unreachable\n")
    first, second = follow.poll(), follow.poll()
    assert [e.message for e in first if isinstance(e, HostNotice)] == [
        "connection refused (asking again every 1 s)"]
    assert second == []
    fleet.down.clear()
    back = follow.poll()
    assert isinstance(back[0], HostNotice) and back[0].message == "answering again"
    assert lines(back) == [("web02", "written while unreachable")]


def test_follow_hands_events_over_until_stopped(fleet: Fleet) -> None:
    fleet.write("web01", "a\n")
    fleet.write("web02", "b\n")
    follow = follower(fleet)
    follow.tail(0)
    stop = threading.Event()
    seen: list[LogEvent] = []

    def on_event(event: LogEvent) -> None:
        seen.append(event)
        stop.set()

    fleet.write("web01", "later\n")
    follow.follow(on_event, stop, interval=0.01)
    assert lines(seen) == [("web01", "later")]
