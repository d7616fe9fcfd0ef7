"""fleet.yml environments through the CLI (no host contacted): `-E staging` and `-E prod` pick their inventory,
variables and rollout defaults; the command line still wins; unknown names and keys are refused with file, line and
key; fleet.yml, its environments and the history are found from a subdirectory; `history -E` filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetctl.cli.app import main
from fleetctl.config.environments import active_environment
from fleetctl.rollout.events import EventBus, HostOutcome, RunFinished, RunInfo, RunStarted
from fleetctl.state.journal import Journal

FLEET_YML = """\
inventory: inventory/all.ini
environments:
  staging:
    inventory: inventory/staging.ini
    vars: {spread: dc, greeting: staging-hello}
    rollout: {canary: 1, batch: 50%}
  prod:
    inventory: inventory/prod.ini
    vars_files: [vars/prod.yml]
    rollout: {canary: 10%, batch: 20%}
  bare: {}
default_environment: staging
"""

PLAYBOOK = """\
name: app
vars:
  greeting: playbook-hello
artifact:
  version: 1.0.0
  collect: {path: app.exe}
install:
  root: 'C:\\apps\\app'
service:
  name: app
  arguments: ["{{ greeting }}"]
rollout:
  batch: 1
  spread_by: "{{ spread }}"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    (root / "inventory").mkdir(parents=True)
    (root / "vars").mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "fleet.yml").write_text(FLEET_YML)
    (root / "playbook.yml").write_text(PLAYBOOK)
    (root / "inventory" / "staging.ini").write_text("[web]\ns1 dc=a\ns2 dc=b\ns3 dc=a\ns4 dc=b\n")
    (root / "inventory" / "prod.ini").write_text("[web]\n" + "".join(f"p{i:02d} dc=x\n" for i in range(1, 21)))
    (root / "inventory" / "all.ini").write_text("[web]\ntop1 dc=t\ntop2 dc=t\n")
    (root / "vars" / "prod.yml").write_text("spread: dc\ngreeting: prod-hello\n")
    for name in ("FLEETCTL_ENVIRONMENT", "FLEETCTL_INVENTORY", "FLEETCTL_HISTORY_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(root)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run(capsys, "plan", "playbook.yml", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def sizes(doc: dict) -> list[int]:
    return [len(b["hosts"]) for b in doc["batches"]]


def test_staging_and_prod_pick_their_inventory_and_rollout(capsys: pytest.CaptureFixture[str],
                                                           project: Path) -> None:
    staging = plan_json(capsys, "-E", "staging")
    assert staging["hosts"] == 4 and sizes(staging) == [1, 2, 1]  # canary 1, batch 50% of 4
    prod = plan_json(capsys, "--environment", "prod")
    assert prod["hosts"] == 20 and sizes(prod) == [2, 4, 4, 4, 4, 2]  # canary 10%, batch 20% of 20
    # default_environment applies without -E; the environment does not leak from one command into the next.
    assert plan_json(capsys)["hosts"] == 4
    assert active_environment() is None
    # An environment without an inventory uses the top-level one, and the playbook's own rollout.
    bare = plan_json(capsys, "-E", "bare", "-e", "spread=dc")
    assert bare["hosts"] == 2 and sizes(bare) == [1, 1]


def test_environment_is_in_the_plan_header(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, err = run(capsys, "plan", "playbook.yml", "-E", "prod")
    assert code == 0, err
    assert "Plan for app in environment prod: 20 hosts" in " ".join(out.split())


def test_environment_variables_sit_under_the_command_line(capsys: pytest.CaptureFixture[str],
                                                          project: Path) -> None:
    def spread_column(*args: str) -> str:
        # rollout.spread_by is "{{ spread }}": the plan table's spread column is named by whichever value won.
        code, out, err = run(capsys, "plan", "playbook.yml", *args)
        assert code == 0, err
        line = next(line for line in out.splitlines() if "batch" in line and "members" in line)
        words = [w for w in line.split() if w not in ("┃", "│", "|")]
        return words[words.index("hosts") + 1]  # the column after "hosts" (table or plain, with or without bars)

    assert spread_column("-E", "staging") == "dc"  # the environment's vars
    assert spread_column("-E", "prod") == "dc"  # its vars_files
    assert spread_column("-E", "staging", "-e", "spread=zone") == "zone"  # -e wins
    code, _, err = run(capsys, "plan", "playbook.yml", "-E", "bare")
    assert code == 2 and "'spread' is undefined" in err  # nothing else defines it

    # Over the playbook's vars: the variables the targets carry, and what a host's service is rendered with.
    from fleetctl.config.environments import choose_environment, environment_active
    from fleetctl.targets import load_targets

    with environment_active(choose_environment("prod")):
        targets = load_targets("playbook.yml", [project / "inventory" / "prod.ini"])
        assert targets.environment == "prod"
        assert targets.render_for(targets.hosts[0]).service.arguments == ["prod-hello"]
        cli = load_targets("playbook.yml", [project / "inventory" / "prod.ini"], extra_vars=["greeting=cli"])
        assert cli.render_for(cli.hosts[0]).service.arguments == ["cli"]
    with environment_active(choose_environment("staging")):
        targets = load_targets("playbook.yml", [project / "inventory" / "staging.ini"])
        assert targets.render_for(targets.hosts[0]).service.arguments == ["staging-hello"]


def test_command_line_wins_over_the_environment(capsys: pytest.CaptureFixture[str], project: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # -i over the environment's inventory, --canary/--batch over its rollout.
    doc = plan_json(capsys, "-E", "prod", "-i", "inventory/staging.ini", "--canary", "2", "--batch", "1")
    assert doc["hosts"] == 4 and sizes(doc) == [2, 1, 1]
    # $FLEETCTL_ENVIRONMENT over default_environment; -E over both.
    monkeypatch.setenv("FLEETCTL_ENVIRONMENT", "prod")
    assert plan_json(capsys)["hosts"] == 20
    assert plan_json(capsys, "-E", "staging")["hosts"] == 4
    # The environment's inventory over $FLEETCTL_INVENTORY (which still wins over fleet.yml's top level).
    monkeypatch.setenv("FLEETCTL_INVENTORY", str(project / "inventory" / "staging.ini"))
    assert plan_json(capsys)["hosts"] == 20
    assert plan_json(capsys, "-E", "bare", "-e", "spread=dc")["hosts"] == 4


def test_found_from_a_subdirectory(capsys: pytest.CaptureFixture[str], project: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "sub" / "deeper")
    code, out, err = run(capsys, "plan", "../../playbook.yml", "-E", "prod", "--json")
    assert code == 0, err
    assert json.loads(out)["hosts"] == 20  # fleet.yml two levels up, its paths relative to it
    code, out, err = run(capsys, "inventory", "list", "--json", "-E", "staging")
    assert code == 0, err
    assert sorted(json.loads(out)["hostvars"]) == ["s1", "s2", "s3", "s4"]


@pytest.mark.parametrize("yml, fragment", [
    ("environments:\n  prod: {inventroy: x}\n", ("fleet.yml:2: key 'environments.prod.inventroy': unknown key "
                                                "(did you mean 'inventory'?)")),
    ("environments:\n  prod:\n    rollout: {canary: 10%, bacth: 2}\n",
     "fleet.yml:3: key 'environments.prod.rollout.bacth': unknown key (did you mean 'batch'?)"),
    ("environments:\n  prod:\n    rollout:\n      forks: 0\n", "fleet.yml:4: key 'environments.prod.rollout.forks'"),
    ("environments:\n  prod:\n    vars_files: [vars/missing.yml]\n",
     "fleet.yml:3: key 'environments.prod.vars_files[0]': vars file 'vars/missing.yml' not found"),
    ("environments:\n  prod:\n    vars: {1bad: x}\n", "key 'environments.prod.vars.1bad': expected a variable name"),
    ("environments:\n  prod: {}\ndefault_environment: prd\n",
     ("fleet.yml:3: key 'default_environment': expected the name of an environment defined under environments "
     "(did you mean 'prod'?)")),
    ("environmnets: {}\n", "fleet.yml:1: key 'environmnets': unknown key (did you mean 'environments'?)"),
])
def test_bad_environments_are_refused_with_file_line_and_key(capsys: pytest.CaptureFixture[str], project: Path,
                                                             yml: str, fragment: str) -> None:
    (project / "fleet.yml").write_text(yml)
    code, _, err = run(capsys, "plan", "playbook.yml", "-i", "inventory/staging.ini", "-e", "spread=dc")
    assert code == 2
    assert fragment in " ".join(err.split()), err


def test_unknown_environment_gets_did_you_mean(capsys: pytest.CaptureFixture[str], project: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "plan", "playbook.yml", "-E", "prdo")
    assert code == 2
    assert "unknown environment 'prdo' (did you mean 'prod'?)" in err and "defines: bare, prod, staging" in err
    monkeypatch.setenv("FLEETCTL_ENVIRONMENT", "stagin")
    code, _, err = run(capsys, "ping", "-E", "")
    assert code == 2 and "key 'FLEETCTL_ENVIRONMENT'" in err and "did you mean 'staging'?" in err
    # Every command that takes an inventory takes -E.
    for command in (["ping"], ["status", "playbook.yml"], ["deploy", "playbook.yml"], ["inventory", "list"],
                    ["rollback", "playbook.yml"], ["build", "playbook.yml"]):
        code, out, _ = run(capsys, *command, "--help")
        assert code == 0 and "--environment" in out, command


def _record_run(run_id: str, environment: str | None) -> None:
    journal = Journal()  # where deploy writes it: .fleetctl/history.db at the project root
    bus = EventBus()
    journal.subscribe(bus)
    inputs = {"environment": environment} if environment else {}
    info = RunInfo(run_id=run_id, kind="deploy", playbook="playbook.yml", service="app", version="1.0",
                   release="1.0-x", strategy="rolling", user="alice@ci", inputs=inputs)
    bus.emit(RunStarted.of(info, (("s1",),), False))
    bus.emit(RunFinished(run_id, 0, {"s1": HostOutcome("s1", "deployed", "1.0-x")}))
    journal.close()


def test_history_lives_at_the_project_root_and_filters_by_environment(
        capsys: pytest.CaptureFixture[str], project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _record_run("20260101T000000Z-aaaaaa", "prod")
    _record_run("20260102T000000Z-bbbbbb", "staging")
    assert (project / ".fleetctl" / "history.db").is_file()
    monkeypatch.chdir(project / "sub" / "deeper")
    code, out, err = run(capsys, "history", "--json")
    assert code == 0, err
    assert [r["id"][-6:] for r in json.loads(out)["runs"]] == ["bbbbbb", "aaaaaa"]
    code, out, err = run(capsys, "history", "-E", "prod", "--json")
    assert [r["id"][-6:] for r in json.loads(out)["runs"]] == ["aaaaaa"]
    code, out, _ = run(capsys, "history", "-E", "prod")
    assert "in environment prod" in out
    code, out, _ = run(capsys, "history", "-E", "qa")
    assert code == 0 and "no runs recorded in environment qa" in " ".join(out.split())
    code, out, _ = run(capsys, "history", "show", "last")
    assert "environment staging" in out
