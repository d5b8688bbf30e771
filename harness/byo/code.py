"""The content identity of a user's code: every file that a model factory, an ablations file or a trainer imports from
outside the standard library, site-packages and mupbench itself, each by its SHA-256.

    code_identity("path/to/model.py")   {"model.py": "<sha256>", "helpers/lr.py": "<sha256>", "teamlib": "1.4.0"}
    code_identity("team.models")        the same for an importable module (labels relative to its package's folder)
    code_digest(identity)               one SHA-256 for a run's identity (RunSpec.identity)
    changed_since(identity, target)     the labels whose file changed since: what a worker checks before a run
    changed_files(old, new)             the labels whose content differs between two identities, for a message

Files are labelled by their path relative to the target's folder, so the same code is the same identity from any
checkout. A package installed into site-packages that the user's code imports is identified by its distribution's
version instead of its files (`name: version`), except mupbench's own dependencies (torch, numpy, ...), which every run
records with its environment.

The files are found by reading imports (ast), transitively, without running anything: `import a.b`, `from a import b`
(b a submodule, or a name in a), relative imports, at any depth of the code (an import inside a function counts). A
module named by a string at run time (importlib.import_module(name)) cannot be seen.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import site
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from mupbench.errors import UserError

OWN_PACKAGE = "mupbench"


def code_identity(target: str | Path) -> dict[str, str]:
    """label → SHA-256 (or distribution version) of every file of the user's code that `target` — a .py file or an
    importable `package.module` — imports, itself included. UserError when the target cannot be found."""
    todo, root = _start(target)
    out: dict[str, str] = {}
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {path} ({e.strerror}), which {target} imports") from None
        out[_label(path, root)] = hashlib.sha256(data).hexdigest()
        if path.suffix != ".py":
            continue
        for found in _imports(path, data):
            if isinstance(found, Path):
                todo.append(found)
            else:
                out.update(found)
    return dict(sorted(out.items()))


def code_digest(identity: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def changed_since(identity: dict[str, str], target: str | Path) -> list[str]:
    """The labels of `identity` (code_identity(target) when the sweep was planned) whose file now differs or is gone
    (a distribution: whose version differs). Reads only those files: unlike a new code_identity, the answer does not
    depend on what this process has imported or put on sys.path, so a worker process checks what its driver planned.
    (A new import needs an edit of a file already listed, so this finds it too.)"""
    try:
        _, root = _start(target)
    except UserError:
        return sorted(identity)
    changed = []
    for label, digest in identity.items():
        if "." not in label and "/" not in label:  # an installed distribution: name → version
            if _version(label) != digest:
                changed.append(label)
            continue
        try:
            now = hashlib.sha256((root / label).read_bytes()).hexdigest()
        except OSError:
            now = None
        if now != digest:
            changed.append(label)
    return changed


def changed_files(old: dict[str, str] | None, new: dict[str, str]) -> list[str]:
    """The labels added, removed or changed between two identities (all of `new`'s when `old` is unknown)."""
    if not isinstance(old, dict):
        return sorted(new)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# --- where the code starts --------------------------------------------------------------------------------------------
def _start(target: str | Path) -> tuple[list[Path], Path]:
    """(the files importing the target runs, the folder labels are relative to)."""
    text = str(target)
    if text.endswith(".py") or os.sep in text or "/" in text:
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"{target} is not a file")
        return [path], path.parent
    files = _module_files(text, (Path.cwd(),))  # like `python -m`: the current folder is importable
    if not files:
        raise UserError(f"cannot find module {text!r}: pass a file path or fix PYTHONPATH")
    top = files[0] if files[0].name != "__init__.py" else files[0].parent
    return files, top.parent


def _label(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


# --- reading imports --------------------------------------------------------------------------------------------------
def _imports(path: Path, data: bytes):
    """The user files (Paths) and installed distributions ({name: version}) that the source of `path` imports."""
    try:
        tree = ast.parse(data, str(path))
    except (SyntaxError, ValueError):  # it imported, so this is not Python we can read (a different grammar): skip
        return
    roots = (path.parent, Path.cwd())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolved(alias.name, roots)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                parts = node.module.split(".") if node.module else []
                files = _walk([base], parts)
                yield from files
                if not files or files[-1].name == "__init__.py" or not parts:  # `from . import x`: x may be a module
                    for alias in node.names:
                        yield from _walk([base], parts + [alias.name])[len(files):]
            elif node.module:
                yield from _resolved(node.module, roots)
                for alias in node.names:
                    yield from _resolved(f"{node.module}.{alias.name}", roots, submodule_only=True)


def _resolved(name: str, roots: tuple[Path, ...], submodule_only: bool = False):
    top = name.split(".")[0]
    if top == OWN_PACKAGE or top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return
    files = _module_files(name, roots)
    if submodule_only and len(files) < len(name.split(".")):
        return  # `from a import b` where b is a name in a, not a submodule: a itself is yielded already
    for f in files:
        if _installed(f):
            version = _version(top)
            if version is not None:
                yield {top: version}
            return
        yield f


def _module_files(name: str, roots: tuple[Path, ...]) -> list[Path]:
    """The files executed by importing `name` (each package's __init__.py, then the module), found without importing
    anything; as far as they exist (a trailing name that is not a module is left out)."""
    top, *rest = name.split(".")
    spec = None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        pass
    if spec is None:
        spec = importlib.machinery.PathFinder.find_spec(top, [str(r) for r in roots])
    if spec is None:
        return []
    files = [Path(spec.origin).resolve()] if spec.origin and spec.has_location else []
    locations = list(spec.submodule_search_locations or [])
    return files + _walk([Path(p) for p in locations], rest) if rest and locations else files


def _walk(locations: list[Path], parts: list[str]) -> list[Path]:
    """Submodules `parts` below the package folders `locations`: the files each step executes."""
    files: list[Path] = []
    for part in parts:
        nxt: list[Path] = []
        for folder in locations:
            if (folder / part / "__init__.py").is_file():
                files.append((folder / part / "__init__.py").resolve())
                nxt = [folder / part]
                break
            if (folder / f"{part}.py").is_file():
                files.append((folder / f"{part}.py").resolve())
                return files
            if (folder / part).is_dir():  # a namespace package: no file of its own
                nxt.append(folder / part)
        if not nxt:
            break
        locations = nxt
    return files


@functools.lru_cache(maxsize=1)
def _excluded() -> tuple[Path, ...]:
    """Folders whose files are not the user's: the standard library and every site-packages."""
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= set(getattr(site, "getsitepackages", lambda: [])())
    roots.add(site.getusersitepackages())
    return tuple(Path(r).resolve() for r in roots if r)


def _installed(path: Path) -> bool:
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return True
    return any(path.is_relative_to(root) for root in _excluded())


@functools.lru_cache(maxsize=None)
def _version(top: str) -> str | None:
    """`version` of the distribution that installs the top-level package `top`, unless it is one of mupbench's own
    dependencies (recorded with every run's environment)."""
    dists = _distributions().get(top, [])
    if not dists or dists[0].lower().replace("_", "-") in _own_dependencies():
        return None
    try:
        return metadata.version(dists[0])
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@functools.lru_cache(maxsize=1)
def _own_dependencies() -> frozenset[str]:
    try:
        requires = metadata.requires(OWN_PACKAGE) or []
    except metadata.PackageNotFoundError:
        requires = []
    names = set()
    for line in requires:
        name = line.split(";")[0].strip()
        for stop in "<>=!~[ (":
            name = name.split(stop)[0]
        names.add(name.lower().replace("_", "-"))
    return frozenset(names)
