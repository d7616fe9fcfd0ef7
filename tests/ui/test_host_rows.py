"""Problem-first, collapsing host rows and grouped errors (ui/host_rows.py)."""

from __future__ import annotations

from fleetctl.ui.host_rows import RowOptions, arrange, group_errors, normalise_error


def _arrange(items: list[tuple[str, str]], **options: object) -> list[tuple[tuple[str, ...], bool]]:
    arranged = arrange(items, host=lambda i: i[0], key=lambda i: i[1], options=RowOptions(**options),  # type: ignore[arg-type]
                       problem=lambda i: 0 if i[1].startswith("bad") else None,
                       failed_alike=lambda i: i[1].startswith("bad"))
    return [(g.hosts, g.problem) for g in arranged.groups]


def test_small_tables_keep_one_row_per_host_problems_first_but_alike_failures_share_one() -> None:
    items = [("a", "ok"), ("b", "bad: 401"), ("c", "ok"), ("d", "bad: 401"), ("e", "bad: disk")]
    assert _arrange(items) == [(("b", "d"), True), (("e",), True), (("a",), False), (("c",), False)]
    assert _arrange(items, show_all=True) == [(("b",), True), (("d",), True), (("e",), True), (("a",), False),
                                              (("c",), False)]
    assert _arrange(items, failed_only=True) == [(("b", "d"), True), (("e",), True)]


def test_above_the_size_identical_rows_collapse_and_nothing_is_cut_silently() -> None:
    items = [(f"h{i:03d}", "ok") for i in range(1, 481)] + [(f"x{i:02d}", f"v{i}") for i in range(30)]
    arranged = arrange(items, host=lambda i: i[0], key=lambda i: i[1], problem=lambda i: None,
                       options=RowOptions(max_rows=20))
    assert arranged.groups[0].host_cell() == "h[001:480]" and arranged.collapsed
    assert len(arranged.groups) == 19  # the 20th line says how many more
    assert arranged.hidden_hosts == 30 - 18
    assert "--all" in arranged.note(510)


def test_errors_differing_only_by_the_hosts_own_name_or_address_are_one_group() -> None:
    errors = {f"web{i:03d}": f"web{i:03d}: authentication failed for user 'x' at 10.0.0.{i}:5986 (HTTP 401)"
              for i in range(1, 481)}
    errors["db1"] = "authentication failed for user 'y' at 10.0.1.1:5986 (HTTP 401)"  # another user: apart
    errors["web500"] = "disk full on web500"
    addresses = {f"web{i:03d}": f"10.0.0.{i}" for i in range(1, 481)}
    groups = group_errors(errors, addresses)
    assert groups[0].line() == "480 hosts: authentication failed for user 'x' at <address>:5986 (HTTP 401) " \
                               "(web[001:480])"
    assert [g.line() for g in groups[1:]] == ["db1: authentication failed for user 'y' at 10.0.1.1:5986 (HTTP 401)",
                                              "web500: disk full on web500"]


def test_normalising_takes_out_whole_names_and_addresses_only() -> None:
    assert normalise_error("web1 and web10 at 10.0.0.1 / 10.0.0.10", "web1", "10.0.0.1") == \
        "<host> and web10 at <address> / 10.0.0.10"
    assert normalise_error("refused by web1.corp.example", "web1") == "refused by web1.corp.example"
