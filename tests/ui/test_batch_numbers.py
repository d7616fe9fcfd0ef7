"""Batches are numbered from 1 wherever people read them (issue 17 item 1): the plan table, `history show`'s
hosts table and the HTML report's hosts table, while the plan and the journal keep their index from 0."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.plan import make_plan, parse_size_option
from fleetctl.state.journal import RunRecord
from fleetctl.ui.history import hosts_table
from fleetctl.ui.plan import plan_table
from fleetctl.ui.run_report import render_html

from .report_runs import SECRET, canary_run


def text_of(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[RunRecord]:
    register_secret(SECRET)
    yield canary_run(tmp_path)
    forget_secrets()


def test_plan_table_numbers_batches_from_1_while_the_plan_keeps_its_index() -> None:
    plan = make_plan([f"h{i}" for i in range(5)], canary=parse_size_option("1", "--canary"),
                     batch=parse_size_option("2", "--batch"), max_failed=None)
    assert [b.index for b in plan.batches] == [0, 1, 2]
    rows = re.findall(r"│\s*(\d+)\s*│\s*(canary|rolling)", text_of(plan_table(plan, "plan")))
    assert rows == [("1", "canary"), ("2", "rolling"), ("3", "rolling")]


def test_history_and_the_html_report_number_batches_from_1(run: RunRecord) -> None:
    assert [b.index for b in run.batch_spans] == [0, 1]  # as the journal stores them
    shown = re.findall(r"│\s*(\d+)\s*│\s*(web\d)", text_of(hosts_table(run)))
    assert shown == [("1", "web1"), ("2", "web2"), ("2", "web3"), ("3", "web4")]
    html = render_html(run)
    cells = re.findall(r'<tr><td class="num">(\d+)</td><td>(web\d)</td>', html)
    assert cells == [("1", "web1"), ("2", "web2"), ("2", "web3"), ("3", "web4")]
