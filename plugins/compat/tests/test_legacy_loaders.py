"""``comfy.sd.load_checkpoint`` (YAML model config) and ``comfy.diffusers_load`` as packs call them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from _checkpoint import REPO_ROOT, tiny_checkpoint

from comfy_kernel_compat import finder


@pytest.fixture
def surface():
    finder.install()
    yield
    finder.uninstall()


def test_load_checkpoint_applies_the_configs_v_parameterization(surface, tmp_path):
    from comfy_kernel_core_nodes.model import model_sampling

    sd = importlib.import_module("comfy.sd")
    config = tmp_path / "v.yaml"
    config.write_text('model:\n  params:\n    parameterization: "v"\n    cond_stage_config:\n      params:\n'
                      "        layer_idx: -2\n")
    model, clip, vae = sd.load_checkpoint(str(config), str(tiny_checkpoint()))
    assert isinstance(model.get_model_object("model_sampling"), model_sampling.V_PREDICTION)
    assert clip.layer_idx == -2 and vae is not None
    plain, _, _ = sd.load_checkpoint(config=({"model": {"params": {}}}), ckpt_path=str(tiny_checkpoint()))
    assert not isinstance(plain.get_model_object("model_sampling"), model_sampling.V_PREDICTION)


def test_load_diffusers_reads_a_pipeline_folder(surface):
    sys.path.insert(0, str(REPO_ROOT / "plugins" / "core_nodes" / "tests"))
    from _files_diffusers import sd15_folder

    diffusers_load = importlib.import_module("comfy.diffusers_load")
    folder: Path = sd15_folder(tiny_checkpoint())
    model, clip, vae = diffusers_load.load_diffusers(str(folder))
    assert model.model.model_config.family == "sd15" and clip is not None and vae.latent_channels == 4
    assert diffusers_load.first_file(str(folder / "vae"), ["x.bin", "diffusion_pytorch_model.safetensors"]) \
        .endswith("diffusion_pytorch_model.safetensors")
