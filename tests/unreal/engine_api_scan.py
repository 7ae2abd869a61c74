"""Collect every use of the `unreal` API in the plugin's source with `ast`, and check it against the stub index.

What counts as a use (no hand-written list that could drift):
- attribute chains on the module: `unreal.X`, `unreal.X.Y` (classes, functions, enum values, class methods);
  `self.unreal` is the same module;
- calls of those, with their positional count and keyword names checked against the stub's signatures;
- attributes and methods of engine objects whose type is known: from an annotation (`x: unreal.T = ...`, a
  parameter `x: unreal.T`), from a constructor (`unreal.T(...)`), from `unreal.get_editor_subsystem(unreal.T)`,
  from the stub's return/property types (`actor.capture_component2d` -> SceneCaptureComponent2D), from
  `Array[T]` results iterated by a for loop or a comprehension;
- `obj.set_editor_property("name", ...)` / `get_editor_property("name")`: the name must be one of the class's
  editor properties (inherited ones included), and set_* must not target a read-only one.

An attribute used on a name whose type is neither known nor plain (an import, a parameter with a non-`unreal`
annotation, `self`, a loop over plain data, ...) is reported as UNRESOLVED, so a new engine call cannot slip past
the check unannotated.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from stub_index import Params, StubIndex

_BUILTINS = set(dir(builtins))


@dataclass
class Finding:
    file: str
    line: int
    expr: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.expr}: {self.message}"


@dataclass
class ScanResult:
    problems: list = field(default_factory=list)      # API that does not exist or is called wrongly
    unresolved: list = field(default_factory=list)    # attribute use on a name of unknown type
    used: set = field(default_factory=set)            # "Class", "Class.member", "Class[editor_property]", "function()"
    classes: set = field(default_factory=set)
    calls: int = 0


@dataclass
class Scope:
    parent: Optional["Scope"]
    types: dict = field(default_factory=dict)     # name -> stub class name
    plain: set = field(default_factory=set)       # names known not to be engine objects
    modules: set = field(default_factory=set)     # names bound to the unreal module

    def type_of(self, name: str) -> Optional[str]:
        s = self
        while s is not None:
            if name in s.types:
                return s.types[name]
            s = s.parent
        return None

    def is_plain(self, name: str) -> bool:
        s = self
        while s is not None:
            if name in s.plain:
                return True
            s = s.parent
        return name in _BUILTINS

    def is_unreal(self, name: str) -> bool:
        s = self
        while s is not None:
            if name in s.modules:
                return True
            s = s.parent
        return False


_SIMPLE = re.compile(r"^\w+$")


class Scanner:
    def __init__(self, index: StubIndex, filename: str, source: str):
        self.index = index
        self.file = filename
        self.tree = ast.parse(source, filename)
        self.result = ScanResult()

    # ---- helpers ----------------------------------------------------------------------------

    def problem(self, node: ast.AST, message: str) -> None:
        self.result.problems.append(Finding(self.file, getattr(node, "lineno", 0), _src(node), message))

    def unresolved(self, node: ast.AST, message: str) -> None:
        self.result.unresolved.append(Finding(self.file, getattr(node, "lineno", 0), _src(node), message))

    def _type_name(self, text: Optional[str], element: bool = False) -> Optional[str]:
        if not text:
            return None
        t = text.strip().strip("'\"")
        m = re.fullmatch(r"Optional\[(.*)\]", t)
        if m:
            t = m.group(1)
        if element:
            m = re.fullmatch(r"Array\[(\w+)\]", t)
            t = m.group(1) if m else ""
        if t.startswith("unreal."):
            t = t[len("unreal."):]
        return t if _SIMPLE.match(t or "") and t in self.index.classes else None

    def _is_unreal(self, node: ast.AST, scope: Scope) -> bool:
        if isinstance(node, ast.Name):
            return scope.is_unreal(node.id)
        # self.unreal is the injected module too
        return (isinstance(node, ast.Attribute) and node.attr == "unreal" and isinstance(node.value, ast.Name)
                and node.value.id == "self")

    def _annotation_type(self, ann: Optional[ast.AST]) -> tuple:
        """(stub class or None, is_unreal_annotation)"""
        if ann is None:
            return None, False
        text = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else ast.unparse(ann)
        if text.startswith("unreal."):
            name = text[len("unreal."):]
            return (name if name in self.index.classes else None), True
        return None, False

    # ---- type inference ---------------------------------------------------------------------

    def infer(self, node: ast.AST, scope: Scope, element: bool = False) -> Optional[str]:
        """The stub class of an expression's value (or of its elements when `element`), if known."""
        if isinstance(node, ast.Name):
            return None if element else scope.type_of(node.id)
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and self._is_unreal(f.value, scope):
                if f.attr in ("get_editor_subsystem", "get_engine_subsystem") and node.args:
                    a = node.args[0]
                    if isinstance(a, ast.Attribute) and self._is_unreal(a.value, scope) and not element:
                        return a.attr if a.attr in self.index.classes else None
                if f.attr in self.index.classes:
                    return None if element else f.attr
                fn = self.index.functions.get(f.attr)
                return self._type_name(fn.returns, element) if fn else None
            if isinstance(f, ast.Attribute):
                owner = self._owner_type(f.value, scope)
                if owner:
                    m = self.index.member(owner, f.attr)
                    if m is not None:
                        return self._type_name(m.returns, element)
            return None
        if isinstance(node, ast.Attribute):
            owner = self._owner_type(node.value, scope)
            if owner:
                m = self.index.member(owner, node.attr)
                if m is not None and m.kind in ("property", "attr"):
                    return self._type_name(m.returns, element)
        return None

    def _owner_type(self, node: ast.AST, scope: Scope) -> Optional[str]:
        """Stub class of a receiver: a typed value, or `unreal.C` itself (class-level access)."""
        if isinstance(node, ast.Attribute) and self._is_unreal(node.value, scope) and node.attr in self.index.classes:
            return node.attr
        return self.infer(node, scope)

    def _plain_expr(self, node: ast.AST, scope: Scope) -> bool:
        root = node
        while isinstance(root, (ast.Attribute, ast.Call, ast.Subscript)):
            root = root.value if not isinstance(root, ast.Call) else root.func
        if isinstance(root, ast.Name):
            return scope.is_plain(root.id) and not scope.is_unreal(root.id) and scope.type_of(root.id) is None
        return isinstance(root, (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.JoinedStr, ast.BinOp,
                                 ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp, ast.BoolOp, ast.Compare,
                                 ast.UnaryOp, ast.IfExp))

    # ---- bindings ---------------------------------------------------------------------------

    def bind_targets(self, target: ast.AST, scope: Scope, type_name: Optional[str], plain: bool) -> None:
        if isinstance(target, ast.Name):
            if type_name:
                scope.types.setdefault(target.id, type_name)
            elif plain:
                scope.plain.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self.bind_targets(t, scope, None, plain)

    def collect_bindings(self, body: Iterable[ast.AST], scope: Scope) -> None:
        for stmt in body:
            if _is_type_checking_block(stmt):
                continue   # `import unreal` for annotations only: it binds nothing at run time
            for node in _walk_no_nested(stmt):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for alias in node.names:
                        name = (alias.asname or alias.name).split(".")[0]
                        if name == "unreal":
                            scope.modules.add(name)
                        else:
                            scope.plain.add(name)
                elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    scope.plain.add(node.name)
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    t, is_ue = self._annotation_type(node.annotation)
                    if is_ue:
                        if t:
                            scope.types[node.target.id] = t
                        else:
                            self.problem(node.annotation, "annotation names a class that is not in the stub")
                    else:
                        scope.plain.add(node.target.id)
                elif isinstance(node, ast.Assign):
                    t = self.infer(node.value, scope)
                    plain = t is None and self._plain_expr(node.value, scope)
                    for target in node.targets:
                        self.bind_targets(target, scope, t, plain)
                elif isinstance(node, (ast.For, ast.comprehension)):
                    t = self.infer(node.iter, scope, element=True)
                    self.bind_targets(node.target, scope, t, t is None and self._plain_expr(node.iter, scope))
                elif isinstance(node, ast.ExceptHandler) and node.name:
                    scope.plain.add(node.name)
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    self.bind_targets(node.optional_vars, scope, None, True)

    def function_scope(self, node: ast.AST, parent: Scope) -> Scope:
        scope = Scope(parent)
        args = node.args
        all_args = list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs)
        all_args += [a for a in (args.vararg, args.kwarg) if a is not None]
        for a in all_args:
            if a.arg == "unreal":
                scope.modules.add(a.arg)
                continue
            t, is_ue = self._annotation_type(getattr(a, "annotation", None))
            if is_ue:
                if t:
                    scope.types[a.arg] = t
                else:
                    self.problem(a, "annotation names a class that is not in the stub")
            elif getattr(a, "annotation", None) is not None or a.arg in ("self", "cls"):
                scope.plain.add(a.arg)
        # two passes so that names bound from typed names bound later in the body are known too
        self.collect_bindings(node.body if isinstance(node.body, list) else [node.body], scope)
        self.collect_bindings(node.body if isinstance(node.body, list) else [node.body], scope)
        return scope

    # ---- checks -----------------------------------------------------------------------------

    def run(self) -> ScanResult:
        module = Scope(None)
        self.collect_bindings(self.tree.body, module)
        self.visit_block(self.tree.body, module)
        return self.result

    def visit_block(self, nodes: Iterable[ast.AST], scope: Scope) -> None:
        for node in nodes:
            if not _is_type_checking_block(node):
                self.visit(node, scope)

    def visit(self, node: ast.AST, scope: Scope) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for d in getattr(node, "decorator_list", []):
                self.visit(d, scope)
            inner = self.function_scope(node, scope)
            body = node.body if isinstance(node.body, list) else [node.body]
            self.visit_block(body, inner)
            return
        if isinstance(node, ast.ClassDef):
            for d in node.decorator_list + node.bases:
                self.visit(d, scope)
            self.collect_bindings(node.body, scope)
            self.visit_block(node.body, scope)
            return
        if isinstance(node, ast.AnnAssign):   # the annotation is a type, not code that runs
            for child in (node.target, node.value):
                if child is not None:
                    self.visit(child, scope)
            return
        if isinstance(node, ast.arg):
            return
        if isinstance(node, ast.Call):
            self.check_call(node, scope)
        elif isinstance(node, ast.Attribute):
            self.check_attribute(node, scope)
            # do not descend into the receiver chain twice: check_attribute handled the whole chain
            inner = node.value
            while isinstance(inner, ast.Attribute):
                inner = inner.value
            if not isinstance(inner, ast.Name):
                self.visit(inner, scope)
            return
        for child in ast.iter_child_nodes(node):
            self.visit(child, scope)

    def check_attribute(self, node: ast.Attribute, scope: Scope) -> Optional[str]:
        """Check `<receiver>.attr`; returns the stub class that owns attr (None when not an engine access)."""
        recv = node.value
        if self._is_unreal(recv, scope):
            name = node.attr
            if name in self.index.classes:
                self.result.used.add(name)
                self.result.classes.add(name)
            elif name in self.index.functions:
                self.result.used.add(f"{name}()")
            else:
                self.problem(node, f"unreal.{name} does not exist in the stub")
            return None
        if isinstance(recv, ast.Attribute) and self._is_unreal(recv.value, scope):
            cls = recv.attr
            self.check_attribute(recv, scope)
            if cls in self.index.classes:
                m = self.index.member(cls, node.attr)
                if m is None:
                    self.problem(node, f"{cls} has no member {node.attr!r}")
                else:
                    self.result.used.add(f"{cls}.{node.attr}")
                return cls
            return None
        owner = self.infer(recv, scope)
        if owner is not None:
            if not isinstance(recv, ast.Name):
                self.check_attribute_chain(recv, scope)
            m = self.index.member(owner, node.attr)
            if m is None and node.attr not in ("set_editor_property", "get_editor_property",
                                               "set_editor_properties"):
                self.problem(node, f"{owner} has no attribute {node.attr!r}")
            else:
                self.result.used.add(f"{owner}.{node.attr}")
                self.result.classes.add(owner)
                if isinstance(node.ctx, ast.Store) and m is not None and m.kind == "property" and not m.writable:
                    self.problem(node, f"{owner}.{node.attr} is read-only")
            return owner
        # unknown receiver: fine when it is plain data, reported otherwise
        root = recv
        while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
            root = root.func if isinstance(root, ast.Call) else root.value
        if isinstance(root, ast.Name):
            if scope.is_plain(root.id) or root.id == "self":
                if not isinstance(recv, ast.Name):
                    self.visit(recv, scope)
                return None
            self.unresolved(node, f"type of {root.id!r} unknown: annotate it (x: unreal.T) or make it plain")
        else:
            self.visit(recv, scope)
        return None

    def check_attribute_chain(self, node: ast.AST, scope: Scope) -> None:
        if isinstance(node, ast.Attribute):
            self.check_attribute(node, scope)
        elif isinstance(node, ast.Call):
            self.check_call(node, scope)

    def check_call(self, node: ast.Call, scope: Scope) -> None:
        f = node.func
        for a in node.args:
            self.visit(a, scope)
        for kw in node.keywords:
            self.visit(kw.value, scope)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(kw.arg is None for kw in node.keywords):
            shape_checkable = False
        else:
            shape_checkable = True
        n_pos = len(node.args)
        kws = [kw.arg for kw in node.keywords if kw.arg]

        if not isinstance(f, ast.Attribute):
            self.visit(f, scope)
            return
        self.result.calls += 1
        # unreal.f(...) / unreal.C(...)
        if self._is_unreal(f.value, scope):
            self.check_attribute(f, scope)
            if f.attr in self.index.functions:
                self._check_params(node, f"unreal.{f.attr}", self.index.functions[f.attr].params, n_pos, kws,
                                   shape_checkable)
            elif f.attr in self.index.classes:
                params = self.index.init_params(f.attr)
                if params is not None:
                    self._check_params(node, f"unreal.{f.attr}()", params, n_pos, kws, shape_checkable)
            return
        owner = self.check_attribute(f, scope)
        if owner is None:
            return
        class_level = isinstance(f.value, ast.Attribute) and self._is_unreal(f.value.value, scope)
        if f.attr in ("set_editor_property", "get_editor_property"):
            self._check_editor_property(node, owner, f.attr == "set_editor_property")
            return
        if f.attr == "set_editor_properties":
            if node.args and isinstance(node.args[0], ast.Dict):
                for k in node.args[0].keys:
                    self._check_editor_property_name(node, owner, k, True)
            return
        m = self.index.member(owner, f.attr)
        if m is None or m.params is None:
            if m is not None and m.kind in ("property", "attr", "enum"):
                self.problem(node, f"{owner}.{f.attr} is a {m.kind}, not callable")
            return
        if class_level and m.kind == "method":   # unbound call: the first argument is the instance
            n_pos -= 1
        self._check_params(node, f"{owner}.{f.attr}", m.params, n_pos, kws, shape_checkable)

    def _check_params(self, node, what: str, params: Params, n_pos: int, kws: list, checkable: bool) -> None:
        if not checkable:
            return
        reason = params.accepts(n_pos, kws)
        if reason:
            self.problem(node, f"{what} {reason}")
        for kw in kws:
            self.result.used.add(f"{what}({kw}=)")

    def _check_editor_property(self, node: ast.Call, owner: str, setting: bool) -> None:
        if not node.args:
            self.problem(node, "editor property name missing")
            return
        self._check_editor_property_name(node, owner, node.args[0], setting)

    def _check_editor_property_name(self, node, owner: str, name_node: ast.AST, setting: bool) -> None:
        if not (isinstance(name_node, ast.Constant) and isinstance(name_node.value, str)):
            self.problem(node, f"{owner}: editor property name must be a string literal to be checkable")
            return
        name = name_node.value
        prop = self.index.editor_property(owner, name)
        if prop is None:
            self.problem(node, f"{owner} has no editor property {name!r}")
            return
        self.result.used.add(f"{owner}[{name}]")
        if setting and prop.startswith("[Read-Only]"):
            self.problem(node, f"{owner} editor property {name!r} is read-only")


def _is_type_checking_block(stmt: ast.AST) -> bool:
    return isinstance(stmt, ast.If) and ast.unparse(stmt.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _walk_no_nested(node: ast.AST):
    """ast.walk that does not enter nested functions (they get their own scope)."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        for child in ast.iter_child_nodes(n):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield child   # its name is bound here; its body is scanned with its own scope
                continue
            todo.append(child)


def _src(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001
        text = type(node).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def scan_files(index: StubIndex, paths: Iterable[Path]) -> ScanResult:
    total = ScanResult()
    for path in paths:
        r = Scanner(index, path.name, path.read_text(encoding="utf-8")).run()
        total.problems += _dedupe(r.problems)
        total.unresolved += _dedupe(r.unresolved)
        total.used |= r.used
        total.classes |= r.classes
        total.calls += r.calls
    return total


def scan_source(index: StubIndex, source: str, filename: str = "<snippet>") -> ScanResult:
    r = Scanner(index, filename, source).run()
    r.problems, r.unresolved = _dedupe(r.problems), _dedupe(r.unresolved)
    return r


def _dedupe(findings: list) -> list:
    seen, out = set(), []
    for f in findings:
        key = (f.file, f.line, f.expr, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
