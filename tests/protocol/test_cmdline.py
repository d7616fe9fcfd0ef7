"""The one Windows quoting function, checked against Windows' own parsing rules.

The shared vectors (cmdline_vectors.json) pin what `join_command_line` writes; every such line, and a few thousand
random ones, are then parsed by real Windows code under Wine: argv.exe (mingw C) reports what both
`CommandLineToArgvW` and the C runtime make of the exact command line it was started with, and each must give the
arguments back byte for byte. Go parses its command line by the same rules. The PowerShell twin of the function
is compared with these vectors in tests/node/test_contract.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl.lab.wine import WINE64, WinePrefix, windows_path_for_wine
from fleetctl.protocol.cmdline import NEEDS_QUOTES, join_command_line, quote_argument, split_command_line

HERE = Path(__file__).resolve().parent
VECTORS = json.loads((HERE / "cmdline_vectors.json").read_text(encoding="utf-8"))["cases"]
HOSTILE_ALPHABET = 'ab \t\\\\\\""%^&|<>!ü😀\u00a0'


def random_argument_lists(count: int, seed: int = 12) -> list[list[str]]:
    rng = random.Random(seed)
    return [["".join(rng.choice(HOSTILE_ALPHABET) for _ in range(rng.randint(0, 8)))
             for _ in range(rng.randint(1, 4))] for _ in range(count)]


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_the_vectors_are_what_the_quoting_function_writes_and_reads(case: dict[str, object]) -> None:
    args = case["args"]
    assert isinstance(args, list)
    assert join_command_line(args) == case["line"]
    assert split_command_line(str(case["line"])) == args


def test_random_hostile_arguments_round_trip_through_the_python_parser() -> None:
    for args in random_argument_lists(5000):
        line = join_command_line(args)
        assert split_command_line(line) == args, line
        # As the tail of a whole command line, after a program path with spaces.
        whole = quote_argument("C:\\Program Files\\app\\x.exe") + " " + line
        assert split_command_line(whole, program=True) == ["C:\\Program Files\\app\\x.exe", *args]


def test_only_arguments_that_need_it_are_quoted() -> None:
    assert quote_argument("C:\\apps\\hello\\current\\hello.exe") == "C:\\apps\\hello\\current\\hello.exe"
    for ch in NEEDS_QUOTES:
        assert quote_argument(f"a{ch}b").startswith('"')
    assert quote_argument("") == '""'


def test_the_parser_follows_the_documented_backslash_rules() -> None:
    # Microsoft's examples in "Parsing C command-line arguments".
    assert split_command_line('"abc" d e') == ["abc", "d", "e"]
    assert split_command_line('a\\\\b d"e f"g h') == ["a\\\\b", "de fg", "h"]
    assert split_command_line('a\\\\\\"b c d') == ['a\\"b', "c", "d"]
    assert split_command_line('a\\\\\\\\"b c" d e') == ["a\\\\b c", "d", "e"]
    assert split_command_line('a"b"" c d') == ['ab" c d']
    assert split_command_line('"C:\\x y\\p.exe" -a', program=True) == ["C:\\x y\\p.exe", "-a"]
    assert split_command_line("C:\\x\\p.exe\\ -a", program=True) == ["C:\\x\\p.exe\\", "-a"]


# -- the real parsers, under Wine ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def argv_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("x86_64-w64-mingw32-gcc")
    if compiler is None:
        pytest.skip("x86_64-w64-mingw32-gcc is not installed (scripts/bootstrap installs gcc-mingw-w64-x86-64)")
    out = tmp_path_factory.mktemp("argv") / "argv.exe"
    subprocess.run([compiler, "-O2", "-municode", "-o", str(out), str(HERE / "argv.c"), "-lshell32"], check=True,
                   timeout=120)
    return out


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WinePrefix]:
    if not os.access(WINE64, os.X_OK):
        pytest.skip("wine64 is not installed")
    given = os.environ.get("FLEETCTL_TEST_WINEPREFIX")  # a prepared prefix saves ~20 s
    wine = WinePrefix(Path(given) if given else tmp_path_factory.mktemp("wineprefix"))
    wine.wait_ready()
    yield wine
    wine.shutdown()


def parse_under_wine(prefix: WinePrefix, argv_exe: Path, lines: list[str], work: Path) -> list[dict[str, list[str]]]:
    """What CommandLineToArgvW and the C runtime give for each command line (after argv.exe's quoted path)."""
    assert not any("\0" in line for line in lines)
    listing, out = work / "lines", work / "out.jsonl"
    listing.write_bytes(b"".join(line.encode("utf-8") + b"\0" for line in lines))
    out.unlink(missing_ok=True)
    proc = subprocess.run(prefix.command(argv_exe, ["--run", windows_path_for_wine(listing),
                                                    windows_path_for_wine(out)]),
                          env=prefix.env(), capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return [json.loads(row) for row in out.read_text(encoding="ascii").splitlines()]


@pytest.mark.wine
def test_hostile_values_pass_the_argv_round_trip_through_windows_parsers_byte_for_byte(
        prefix: WinePrefix, argv_exe: Path, tmp_path: Path) -> None:
    argument_lists = [list(c["args"]) for c in VECTORS] + random_argument_lists(120, seed=99)
    lines = [join_command_line(args) for args in argument_lists]
    parsed = parse_under_wine(prefix, argv_exe, lines, tmp_path)
    assert len(parsed) == len(lines)
    for args, line, got in zip(argument_lists, lines, parsed, strict=True):
        assert got["shell32"] == args, f"CommandLineToArgvW read {line!r} as {got['shell32']!r}"
        assert got["crt"] == args, f"the C runtime read {line!r} as {got['crt']!r}"


@pytest.mark.wine
def test_a_command_line_nested_in_one_argument_survives_both_parses(
        prefix: WinePrefix, argv_exe: Path, tmp_path: Path) -> None:
    # NSSM's AppParameters: the service's arguments joined into one value, which is itself one argument of
    # `nssm set`. Two parses (nssm's, then the service's) must give the original arguments back.
    inner = [c["args"] for c in VECTORS if c["name"] in ("embedded quote", "trailing backslash with a space",
                                                         "percent signs", "unicode", "empty between others")]
    lines = [join_command_line(["set", "svc", "AppParameters", join_command_line(args)]) for args in inner]
    parsed = parse_under_wine(prefix, argv_exe, lines, tmp_path)
    for args, got in zip(inner, parsed, strict=True):
        assert got["crt"][:3] == ["set", "svc", "AppParameters"]
        assert split_command_line(got["crt"][3]) == args
    again = parse_under_wine(prefix, argv_exe, [row["crt"][3] for row in parsed], tmp_path)
    assert [row["shell32"] for row in again] == inner
