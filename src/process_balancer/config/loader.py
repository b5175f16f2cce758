"""Loading what the user supplies: the config file's text, ``-r`` modules and job classes.

This is the layer below :mod:`process_balancer.config`: it turns a file into plain data and a
name into a Python object, and reports every failure as a one-line :class:`ConfigError` that a
person can act on, never as a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from ..errors import ConfigError as ConfigError
from ..job import AsyncBase, Base

__all__ = [
    "ConfigError",
    "add_cwd_to_path",
    "describe_import_error",
    "format_problem",
    "load_factory",
    "load_job_class",
    "load_object",
    "read_config_file",
    "require",
]

# `$${` is a literal `${`; a `${` that is not a well-formed reference is reported, not kept.
_REFERENCE = re.compile(r"\$(?:(\$\{)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^{}\n]*))?\}|(\{))")


def format_problem(source: Path | None, where: str, message: str) -> str:
    """``<file>: <where>: <message>``, or ``<where>: <message>`` when there is no file."""
    return f"{where}: {message}" if source is None else f"{source}: {where}: {message}"


# -- the config file ---------------------------------------------------------------------------


def _expand(text: str, environ: Mapping[str, str], source: Path) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (the default applies when VAR is unset or
    empty, as in a shell) and turn ``$${`` into a literal ``${``."""
    problems: list[str] = []

    def replace(match: re.Match[str], offset: int) -> str:
        literal, name, default, malformed = match.groups()
        if literal:
            return "${"
        value = None if malformed else environ.get(name)
        if default is not None:
            return value or default
        if value is not None:
            return value
        where = f"line {text.count(chr(10), 0, offset + match.start()) + 1}"
        if malformed:
            problem = "malformed '${'; write ${NAME} or ${NAME:-default}, or $${ for a literal '${'"
        else:
            problem = (
                f"environment variable {name} is not set; set it or write ${{{name}:-default}}"
            )
        problems.append(format_problem(source, where, problem))
        return ""

    # Comments are left alone, so a commented-out line never needs its variables set.
    lines = []
    offset = 0
    for line in text.splitlines(keepends=True):
        cut = _comment_start(line)
        code, comment = line[:cut], line[cut:]
        lines.append(_REFERENCE.sub(partial(replace, offset=offset), code) + comment)
        offset += len(line)
    expanded = "".join(lines)
    if problems:
        raise ConfigError(*problems)
    return expanded


def _comment_start(line: str) -> int:
    """Index where a YAML comment starts in ``line`` (``len(line)`` if none): a ``#`` at the
    start or after whitespace, outside single- or double-quoted text."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return index
    return len(line)


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that rejects a key repeated in one mapping instead of keeping the last,
    which would silently drop a job or a setting."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_config_file(source: Path, environ: Mapping[str, str]) -> object:
    """Read ``source``, expand ``${VAR}`` references from ``environ`` and parse it as YAML."""
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(_expand(text, environ, source), Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigError(format_problem(source, where, f"invalid YAML: {problem}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None


# -- modules and classes -----------------------------------------------------------------------


def describe_import_error(module: str, exc: BaseException) -> str:
    """One line saying why importing ``module`` failed: the module is missing, or it raised
    while it was imported (exception type, message and where, never a whole traceback)."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing and (module == missing or module.startswith(f"{missing}.")):
        return f"cannot import {module!r}: {exc}"
    message = " ".join(str(exc).split())
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"importing {module!r} raised {type(exc).__name__}: {message}{where}"


def _import(module: str, label: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise ConfigError(f"{label}{describe_import_error(module, exc)}") from None


def load_object(path: str, what: str = "Class") -> object:
    """Import ``"module:Name"`` or ``"module.Name"`` (``Name`` may be dotted) and return it.

    Raises :class:`ConfigError` whose message is the reason only; the caller prefixes where the
    name was written.
    """
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(f"must be 'module:{what}' or 'module.{what}', got {path!r}")
    found: object = _import(module_name, "")
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            close = difflib.get_close_matches(part, dir(found), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r}{hint}") from None
    return found


def load_job_class(class_path: str) -> type[Base]:
    """Import ``"module:Class"`` or ``"module.Class"`` and check that it is a job class."""
    found = load_object(class_path)
    if not isinstance(found, type):
        raise ConfigError(
            f"{class_path!r} is a {type(found).__name__}, not a class; "
            "name a subclass of process_balancer.Base"
        )
    if not issubclass(found, Base) or found in (Base, AsyncBase):
        raise ConfigError(
            f"{class_path!r} is not a job: it must subclass process_balancer.Base "
            "(or process_balancer.AsyncBase)"
        )
    return found


def load_factory(path: str) -> Callable[..., Any]:
    """Import ``"module:function"`` (an ``iteration_context`` entry) and check it is callable."""
    found = load_object(path, "function")
    if not callable(found):
        raise ConfigError(
            f"{path!r} is not callable; name a function or class that takes the job and "
            "returns a context manager"
        )
    return found


def _prepend_path(directory: Path) -> None:
    entry = str(directory)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def add_cwd_to_path() -> None:
    """Put the working directory first on ``sys.path`` so ``class: myapp.jobs:X`` resolves
    from where the runner was started, whether it was launched as a script or with ``-m``."""
    _prepend_path(Path(os.getcwd()))


def _same_file(module: ModuleType, path: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve() == path


def _require_file(path: Path, label: str) -> None:
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None:
        if _same_file(existing, path):
            return
        where = getattr(existing, "__file__", None) or "built in"
        raise ConfigError(
            f"{label}: a different module named {name!r} is already imported ({where}); "
            "rename the file"
        )
    _prepend_path(path.parent)  # so the file's siblings import
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{label}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{label}: {describe_import_error(name, exc)}") from None


def _require_directory(path: Path, label: str) -> None:
    if not (path / "__init__.py").is_file():
        _prepend_path(path)
        return
    _prepend_path(path.parent)
    package = _import(path.name, f"{label}: ")
    if not _same_file(package, path / "__init__.py"):
        where = getattr(package, "__file__", None) or "built in"
        raise ConfigError(
            f"{label}: imported {path.name!r} from {where} instead of this directory; "
            "another module of that name shadows it"
        )


def _looks_like_path(target: str) -> bool:
    separators = [sep for sep in ("/", os.sep, os.altsep) if sep]
    return target.endswith(".py") or any(s in target for s in separators) or os.path.exists(target)


def require(target: str) -> None:
    """Import what ``-r`` names: a module by dotted name, a ``.py`` file (imported as a module
    named after the file, with its directory first on ``sys.path``), a package directory
    (imported, with its parent on ``sys.path``) or a plain directory (added to ``sys.path``)."""
    label = f"-r {target}"
    importlib.invalidate_caches()  # the target may have been written a moment ago
    if not _looks_like_path(target):
        _import(target, f"{label}: ")
        return
    path = Path(target).expanduser()
    if not path.exists():
        raise ConfigError(f"{label}: no such file or directory")
    path = path.resolve()
    if path.is_dir():
        _require_directory(path, label)
    elif path.suffix == ".py":
        _require_file(path, label)
    else:
        raise ConfigError(
            f"{label}: not a Python file; give a .py file, a directory or a module name"
        )
