"""What each side of the worker imports: the compute child is spawned by importing
``services.adapter.compute`` (and then its engine), so that module must not pull in faust, and the
worker process must not pull in torch. A SIGKILL's replacement waits for its child before the first
recommendation; faust in the child's import path cost it ~2-3 s (measured on 2 loaded cores)."""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(stmt: str) -> set[str]:
    code = f"import sys, json; {stmt}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_compute_module_is_light() -> None:
    mods = _modules_after("import services.adapter.compute")
    assert not mods & {"faust", "aiokafka", "mode", "torch", "onnxruntime"}


def test_the_worker_process_does_not_load_torch() -> None:
    mods = _modules_after("from services.adapter import create_app; from faust.worker import Worker")
    assert "faust" in mods
    assert not mods & {"torch", "onnxruntime"}


def test_create_app_still_resolves_from_the_package() -> None:
    import services.adapter as pkg
    from services.adapter.app import create_app

    assert pkg.create_app is create_app
