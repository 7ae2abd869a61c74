"""Read Epic's generated Python API stub (`unreal-stub` on PyPI) as text and index it.

The stub cannot be imported (it has a syntax error deep inside, in one generated default value), so it is
split into its top-level blocks and each block is parsed with `ast` on its own; a block that does not parse
has its `def` lines rewritten to bare parameter names and is parsed again. Nothing here imports `unreal`.

Where the stub comes from (first match wins):
1. the environment variable CONTROLBRIDGE_UNREAL_STUB = path to `unreal.py` (or to the wheel);
2. an installed distribution `unreal-stub` (test extra), read from site-packages as text;
3. a cache folder `.cache/unreal-stub/<version>/` in the repository, filled once by
   `pip download unreal-stub==<version> --no-deps`.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

STUB_VERSION = "0.3"  # = UE 5.6.0
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "unreal-stub" / STUB_VERSION


class StubNotFound(RuntimeError):
    pass


# --------------------------------------------------------------------------- locating the stub

def _stub_from_wheel(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("unreal/unreal.py", dest)
    return dest / "unreal" / "unreal.py"


def locate_stub(allow_download: bool = True) -> Path:
    env = os.environ.get("CONTROLBRIDGE_UNREAL_STUB")
    if env:
        path = Path(env)
        if path.suffix == ".whl":
            return _stub_from_wheel(path, CACHE_DIR)
        if path.is_file():
            return path
        raise StubNotFound(f"CONTROLBRIDGE_UNREAL_STUB points to {path}, which does not exist")

    try:  # installed as a test dependency; located without importing it
        from importlib import metadata

        dist = metadata.distribution("unreal-stub")
        path = Path(dist.locate_file("unreal/unreal.py"))
        if path.is_file():
            return path
    except Exception:  # noqa: BLE001 - not installed
        pass

    cached = CACHE_DIR / "unreal" / "unreal.py"
    if cached.is_file():
        return cached
    if not allow_download:
        raise StubNotFound("unreal-stub is not installed and not cached")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", f"unreal-stub=={STUB_VERSION}", "--no-deps",
         "--only-binary=:all:", "-d", str(CACHE_DIR)],
        capture_output=True, text=True,
    )
    wheels = sorted(CACHE_DIR.glob("unreal_stub-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise StubNotFound(
            "Could not get Epic's Python API stub: install the test extra (pip install unreal-stub=="
            f"{STUB_VERSION}) or set CONTROLBRIDGE_UNREAL_STUB. pip said: {proc.stderr.strip()[-500:]}"
        )
    return _stub_from_wheel(wheels[-1], CACHE_DIR)


# --------------------------------------------------------------------------- index model

@dataclass
class Params:
    names: list[str]            # positional-or-keyword names, without self/cls
    required: int               # how many of them have no default
    kwonly: list[str] = field(default_factory=list)
    varargs: bool = False
    varkw: bool = False

    def accepts(self, n_positional: int, keywords: list[str]) -> str | None:
        """None when a call with this shape is valid, else the reason."""
        if not self.varargs and n_positional > len(self.names):
            return f"takes at most {len(self.names)} positional arguments, got {n_positional}"
        for kw in keywords:
            if kw in self.names[:n_positional]:
                return f"argument {kw!r} given twice"
            if kw not in self.names and kw not in self.kwonly and not self.varkw:
                return f"has no parameter {kw!r} (parameters: {', '.join(self.names + self.kwonly)})"
        given = n_positional + sum(1 for kw in keywords if kw in self.names[n_positional:self.required])
        if given < self.required and not self.varargs:
            missing = [n for n in self.names[n_positional:self.required] if n not in keywords]
            if missing:
                return f"missing required arguments {missing}"
        return None


@dataclass
class Member:
    name: str
    kind: str                   # method | classmethod | staticmethod | property | enum | attr
    params: Params | None = None
    returns: str | None = None
    writable: bool = False      # properties: has a setter


@dataclass
class ClassInfo:
    name: str
    bases: list[str]
    members: dict[str, Member]
    editor_properties: dict[str, str]   # name -> "[Read-Write]" / "[Read-Only]" + type text
    init: Params | None = None
    plugin: str | None = None           # "**Plugin**: X" in the docstring: the engine plugin that provides it
    module: str | None = None


@dataclass
class Function:
    name: str
    params: Params
    returns: str | None


class StubIndex:
    def __init__(self, classes: dict[str, ClassInfo], functions: dict[str, Function], path: Path | None = None):
        self.classes = classes
        self.functions = functions
        self.path = path

    # lookups walk the base classes
    def mro(self, cls: str) -> list[str]:
        out, todo = [], [cls]
        while todo:
            c = todo.pop(0)
            if c in out or c not in self.classes:
                continue
            out.append(c)
            todo.extend(self.classes[c].bases)
        return out

    def member(self, cls: str, name: str) -> Member | None:
        for c in self.mro(cls):
            m = self.classes[c].members.get(name)
            if m is not None:
                return m
        return None

    def editor_property(self, cls: str, name: str) -> str | None:
        for c in self.mro(cls):
            p = self.classes[c].editor_properties.get(name)
            if p is not None:
                return p
        return None

    def init_params(self, cls: str) -> Params | None:
        for c in self.mro(cls):
            if self.classes[c].init is not None:
                return self.classes[c].init
        return None

    def is_subclass(self, cls: str, base: str) -> bool:
        return base in self.mro(cls)

    def is_enum(self, cls: str) -> bool:
        return self.is_subclass(cls, "EnumBase")


# --------------------------------------------------------------------------- parsing

_PLUGIN_RE = re.compile(r"^\s*- \*\*Plugin\*\*: (\w+)", re.M)
_MODULE_RE = re.compile(r"^\s*- \*\*Module\*\*: (\w+)", re.M)
_EDITOR_PROP_RE = re.compile(r"^\s*- ``(\w+)`` \((.*?)\):\s*(\[Read-(?:Write|Only)\])?")
_DEF_RE = re.compile(r"^(\s*)def (\w+)\((.*)\)(\s*->\s*.*)?:\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def _sanitize_def_line(line: str) -> str:
    """`def f(a: T = <unparseable>, b: U) -> R:` -> `def f(a=..., b):` (keeps names and which have defaults)."""
    m = _DEF_RE.match(line)
    if not m:
        return line
    indent, name, params, _ret = m.groups()
    # the parameter text may contain ')' inside defaults; _DEF_RE is greedy up to the last ')', which is the
    # closing one because the return annotation never contains ')' followed by ':' at the end of line.
    out = []
    for p in _split_top_level(params):
        p = p.strip()
        if not p:
            continue
        has_default = "=" in p.split(":", 1)[-1] if ":" in p else "=" in p
        pname = re.split(r"[:=]", p, maxsplit=1)[0].strip()
        out.append(f"{pname}=..." if has_default and not pname.startswith("*") else pname)
    return f"{indent}def {name}({', '.join(out)}):"


def _params(args: ast.arguments, drop_first: bool) -> Params:
    pos = list(args.posonlyargs) + list(args.args)
    if drop_first and pos:
        pos = pos[1:]
    names = [a.arg for a in pos]
    required = len(names) - len(args.defaults)
    return Params(
        names=names,
        required=max(required, 0),
        kwonly=[a.arg for a in args.kwonlyargs],
        varargs=args.vararg is not None,
        varkw=args.kwarg is not None,
    )


def _ann(node: ast.AST | None) -> str | None:
    return ast.unparse(node) if node is not None else None


def _parse_class(node: ast.ClassDef) -> ClassInfo:
    bases = [ast.unparse(b) for b in node.bases]
    members: dict[str, Member] = {}
    init = None
    doc = ast.get_docstring(node, clean=False) or ""
    editor_props: dict[str, str] = {}
    in_props = False
    for line in doc.splitlines():
        if "**Editor Properties:**" in line:
            in_props = True
            continue
        if in_props:
            m = _EDITOR_PROP_RE.match(line)
            if m:
                editor_props[m.group(1)] = f"{m.group(3) or ''} {m.group(2)}".strip()
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            decos = [ast.unparse(d) for d in item.decorator_list]
            if item.name == "__init__":
                init = _params(item.args, drop_first=True)
                continue
            if any(d.endswith(".setter") for d in decos):
                if item.name in members:
                    members[item.name].writable = True
                continue
            if "property" in decos:
                members[item.name] = Member(item.name, "property", returns=_ann(item.returns))
            elif "classmethod" in decos:
                members[item.name] = Member(item.name, "classmethod", _params(item.args, True), _ann(item.returns))
            elif "staticmethod" in decos:
                members[item.name] = Member(item.name, "staticmethod", _params(item.args, False), _ann(item.returns))
            else:
                members[item.name] = Member(item.name, "method", _params(item.args, True), _ann(item.returns))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            kind = "enum" if "EnumBase" in bases or ast.unparse(item.annotation) == node.name else "attr"
            members[item.target.id] = Member(item.target.id, kind, returns=_ann(item.annotation))
    plugin = _PLUGIN_RE.search(doc)
    module = _MODULE_RE.search(doc)
    return ClassInfo(node.name, bases, members, editor_props, init,
                     plugin.group(1) if plugin else None, module.group(1) if module else None)


def parse_stub(path: Path) -> StubIndex:
    text = path.read_text(encoding="utf-8-sig")
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(("class ", "def ", "@"))]
    # a decorator line belongs to the def that follows it
    blocks, prev = [], None
    for i in starts:
        if prev is not None and lines[prev].startswith("@") and i == prev + 1:
            prev = prev  # keep the decorator's start
        else:
            if prev is not None:
                blocks.append((prev, i))
            prev = i
    if prev is not None:
        blocks.append((prev, len(lines)))

    classes: dict[str, ClassInfo] = {}
    functions: dict[str, Function] = {}
    for a, b in blocks:
        chunk = "\n".join(lines[a:b])
        try:
            tree = ast.parse(chunk)
        except SyntaxError:
            chunk = "\n".join(_sanitize_def_line(x) if x.lstrip().startswith("def ") else x for x in lines[a:b])
            tree = ast.parse(chunk)  # a second failure is a real surprise: let it raise
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = _parse_class(node)
            elif isinstance(node, ast.FunctionDef):
                functions[node.name] = Function(node.name, _params(node.args, False), _ann(node.returns))
    return StubIndex(classes, functions, path)


_CACHE: dict[str, StubIndex] = {}


def load_index(path: Path | None = None) -> StubIndex:
    path = path or locate_stub()
    key = str(path)
    if key not in _CACHE:
        _CACHE[key] = parse_stub(path)
    return _CACHE[key]
