"""The OpenMP wait setting the plugin makes before torch loads, and that an explicit one wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

READ = ("import os, comfy_kernel_core_nodes.plugin; "
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")


def settings(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", READ], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "10000 None"),  # short spin, then sleep
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "None PASSIVE"),  # an explicit policy is left alone
    ({"GOMP_SPINCOUNT": "0"}, "0 None"),
])
def test_idle_openmp_threads_spin_briefly_unless_told_otherwise(env, expected):
    assert settings(**env) == expected


def test_the_setting_comes_before_torch_loads():
    """libgomp reads it when torch loads its runtime: the plugin module must not import torch itself."""
    code = "import sys, comfy_kernel_core_nodes.plugin; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
