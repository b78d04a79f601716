"""signalbus is typed for its users: a plugin type-checks under ``mypy --strict`` against the
installed package (the editable install ``make test`` makes, as a plugin author's), and the
wheel carries ``py.typed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

PLUGIN = '''\
from __future__ import annotations

from typing import Any

import signalbus
from signalbus import Event, Permanent, changed


def on_registered(sender: Any, event: Event, **kwargs: Any) -> None:
    email = event.data["email"]
    if not isinstance(email, str):
        raise Permanent(f"event {event.id} has no email")


def plugin(bus: Any) -> None:
    bus.connect("user_registered", on_registered)


signalbus.bind("app.models:User", "update", "plan_changed", when=changed("plan"))
'''

WRONG = '''\
from signalbus import Event


def attempts_left(event: Event) -> str:
    return event.attempt
'''


def _mypy(tmp_path: Path, *files: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / ".mypy_cache"), *files],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_a_plugin_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    (tmp_path / "hello_plugin.py").write_text(PLUGIN)
    (tmp_path / "wrong_plugin.py").write_text(WRONG)
    result = _mypy(tmp_path, "hello_plugin.py", "wrong_plugin.py")
    out = result.stdout + result.stderr
    assert "import-not-found" not in out, out
    assert "hello_plugin.py" not in out, out
    # mypy read Event's annotations: returning the int attempt as a str is caught
    assert ('wrong_plugin.py:5: error: Incompatible return value type (got "int", '
            'expected "str")  [return-value]') in out, out
    assert result.returncode == 1, out


def test_the_wheel_ships_py_typed(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(root)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("sqlalchemy_signalbus-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "signalbus/py.typed" in names
    assert "signalbus/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
