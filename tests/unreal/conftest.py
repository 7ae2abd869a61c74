"""Fixtures for the Unreal plugin's tests: the plugin's Python on sys.path, Epic's API stub, the fake editor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ue_paths import PLUGIN_PYTHON  # noqa: E402

if str(PLUGIN_PYTHON) not in sys.path:
    sys.path.insert(0, str(PLUGIN_PYTHON))


@pytest.fixture(scope="session")
def stub():
    import stub_index

    try:
        return stub_index.load_index()
    except stub_index.StubNotFound as e:   # a contract check that silently skips would prove nothing
        pytest.fail(str(e))


@pytest.fixture
def fake_editor(tmp_path):
    """(editor state, `unreal` stand-in) with the stand-in active for the test."""
    from fake_unreal import FakeEditor, FakeUnrealModule

    editor = FakeEditor(saved_dir=str(tmp_path / "Saved"))
    module = FakeUnrealModule(editor)
    with module:
        yield editor, module
