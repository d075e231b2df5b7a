import os
import subprocess
import sys
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[3] / "kernel"


def test_importing_the_scheduler_does_not_import_torch():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(KERNEL), os.environ.get("PYTHONPATH", "")]))
    code = ("import argparse, comfy_kernel.gpu as g, sys; p = argparse.ArgumentParser(); g.add_arguments(p); "
            "g.configure(g.GpuConfig.from_args(p.parse_args(['--lowvram']))); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
