"""``-r`` targets (modules, files, directories) and the working directory on ``sys.path``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from process_balancer.config.loader import add_cwd_to_path, describe_import_error, require
from process_balancer.config.schema import ConfigError


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give each test its own ``sys.path`` and forget every module it imported."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def require_problem(target: str) -> str:
    with pytest.raises(ConfigError) as caught:
        require(target)
    return str(caught.value)


def test_a_module_name_on_sys_path_is_imported(tmp_path: Path) -> None:
    write(tmp_path / "pb_ld_plain.py", "LOADED = True\n")
    sys.path.insert(0, str(tmp_path))
    require("pb_ld_plain")
    assert sys.modules["pb_ld_plain"].LOADED is True


def test_a_dotted_module_name_is_imported(tmp_path: Path) -> None:
    write(tmp_path / "pb_ld_pkg" / "__init__.py")
    write(tmp_path / "pb_ld_pkg" / "jobs.py", "LOADED = True\n")
    sys.path.insert(0, str(tmp_path))
    require("pb_ld_pkg.jobs")
    assert "pb_ld_pkg.jobs" in sys.modules


def test_a_missing_module_is_a_one_line_error() -> None:
    assert require_problem("pb_ld_absent") == (
        "-r pb_ld_absent: cannot import 'pb_ld_absent': No module named 'pb_ld_absent'"
    )


def test_a_py_file_is_imported_as_a_module_named_after_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "app" / "pb_ld_tasks.py", "VALUE = 7\n")
    require(str(path))
    module = sys.modules["pb_ld_tasks"]
    assert module.VALUE == 7 and Path(module.__file__ or "") == path


def test_a_py_file_can_import_its_siblings(tmp_path: Path) -> None:
    write(tmp_path / "app" / "pb_ld_helper.py", "HELP = 'yes'\n")
    path = write(tmp_path / "app" / "pb_ld_main.py", "from pb_ld_helper import HELP\n")
    require(str(path))
    assert sys.modules["pb_ld_main"].HELP == "yes"
    assert sys.path[0] == str(tmp_path / "app")


def test_a_relative_py_file_is_found_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "pb_ld_rel.py", "VALUE = 1\n")
    monkeypatch.chdir(tmp_path)
    require("pb_ld_rel.py")
    assert sys.modules["pb_ld_rel"].VALUE == 1


def test_requiring_the_same_file_twice_runs_it_once(tmp_path: Path) -> None:
    path = write(tmp_path / "pb_ld_once.py", "import builtins\nbuiltins.pb_ld_runs += 1\n")
    import builtins

    builtins.pb_ld_runs = 0  # type: ignore[attr-defined]
    try:
        require(str(path))
        require(str(path))
        assert builtins.pb_ld_runs == 1  # type: ignore[attr-defined]
    finally:
        del builtins.pb_ld_runs  # type: ignore[attr-defined]


def test_a_file_named_like_an_imported_module_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "os.py", "")
    problem = require_problem(str(path))
    assert problem.startswith(f"-r {path}: a different module named 'os' is already imported")


def test_a_file_that_raises_while_imported_is_reported_and_forgotten(tmp_path: Path) -> None:
    path = write(tmp_path / "pb_ld_bad.py", "\n\nraise ValueError('bad setting')\n")
    problem = require_problem(str(path))
    assert problem == (
        f"-r {path}: importing 'pb_ld_bad' raised ValueError: bad setting (at {path}:3)"
    )
    assert "pb_ld_bad" not in sys.modules


def test_a_file_with_a_syntax_error_is_reported_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "pb_ld_syntax.py", "def broken(:\n")
    problem = require_problem(str(path))
    assert "importing 'pb_ld_syntax' raised SyntaxError" in problem
    assert "\n" not in problem


def test_a_package_directory_is_imported_with_its_parent_on_sys_path(tmp_path: Path) -> None:
    write(tmp_path / "pb_ld_app" / "__init__.py", "from . import jobs\n")
    write(tmp_path / "pb_ld_app" / "jobs.py", "VALUE = 3\n")
    require(str(tmp_path / "pb_ld_app"))
    assert sys.modules["pb_ld_app.jobs"].VALUE == 3
    assert sys.path[0] == str(tmp_path)


def test_a_plain_directory_is_added_to_sys_path(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "pb_ld_inside.py", "VALUE = 4\n")
    require(str(tmp_path / "lib"))
    assert sys.path[0] == str(tmp_path / "lib")
    assert "pb_ld_inside" not in sys.modules
    import pb_ld_inside  # type: ignore[import-not-found]

    assert pb_ld_inside.VALUE == 4


@pytest.mark.parametrize("target", ["foo/bar.py", "missing.py", "nowhere/"])
def test_a_missing_path_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert require_problem(target) == f"-r {target}: no such file or directory"


def test_a_file_that_is_not_python_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.txt", "")
    assert require_problem(str(path)).startswith(f"-r {path}: not a Python file")


def test_add_cwd_to_path_puts_the_working_directory_first_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    add_cwd_to_path()
    add_cwd_to_path()
    assert sys.path[0] == os.getcwd()
    assert sys.path.count(os.getcwd()) == 1


def test_add_cwd_to_path_lets_modules_in_the_working_directory_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "pb_ld_cwd.py", "VALUE = 5\n")
    monkeypatch.chdir(tmp_path)
    add_cwd_to_path()
    require("pb_ld_cwd")
    assert sys.modules["pb_ld_cwd"].VALUE == 5


def test_describe_import_error_tells_a_missing_module_from_a_missing_dependency() -> None:
    missing = ModuleNotFoundError("No module named 'app'", name="app")
    assert describe_import_error("app.jobs", missing) == (
        "cannot import 'app.jobs': No module named 'app'"
    )
    dependency = ModuleNotFoundError("No module named 'requests'", name="requests")
    assert describe_import_error("app.jobs", dependency) == (
        "importing 'app.jobs' raised ModuleNotFoundError: No module named 'requests'"
    )
