"""The ComfyUI import surface: every tier-1 name resolves, in-process and without a server."""

from __future__ import annotations

import importlib
import sys

import pytest

from comfy_kernel_compat import finder

TIER1 = {
    "folder_paths": ["get_filename_list", "get_full_path", "get_full_path_or_raise", "get_folder_paths",
                     "add_model_folder_path", "folder_names_and_paths", "models_dir", "base_path",
                     "supported_pt_extensions", "get_input_directory", "get_output_directory",
                     "get_temp_directory", "get_user_directory", "get_annotated_filepath",
                     "exists_annotated_filepath", "get_save_image_path", "filter_files_content_types",
                     "get_directory_by_type", "cache_helper"],
    "comfy.model_management": ["get_torch_device", "intermediate_device", "unet_offload_device",
                               "text_encoder_device", "vae_device", "soft_empty_cache", "load_models_gpu",
                               "unload_all_models", "free_memory", "get_free_memory",
                               "throw_exception_if_processing_interrupted", "processing_interrupted",
                               "interrupt_current_processing", "InterruptProcessingException",
                               "OOM_EXCEPTION", "cast_to_device", "xformers_enabled", "is_device_mps",
                               "cpu_mode", "unet_dtype", "vae_dtype", "should_use_fp16", "should_use_bf16"],
    "comfy.utils": ["ProgressBar", "load_torch_file", "save_torch_file", "common_upscale", "tiled_scale",
                    "lanczos", "repeat_to_batch_size", "PROGRESS_BAR_ENABLED", "set_progress_bar_global_hook",
                    "get_attr", "set_attr", "state_dict_prefix_replace", "calculate_parameters"],
    "nodes": ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "MAX_RESOLUTION", "common_ksampler",
              "interrupt_processing", "before_node_execution", "load_custom_node"],
    "server": ["PromptServer", "BinaryEventTypes"],
    "comfy.cli_args": ["args", "LatentPreviewMethod"],
    "latent_preview": ["prepare_callback", "get_previewer", "Latent2RGBPreviewer", "TAESDPreviewerImpl", "TAESD"],
    "node_helpers": ["conditioning_set_values", "pillow", "hasher", "string_to_torch_dtype", "image_alpha_fix"],
    "comfy_execution.graph_utils": ["GraphBuilder", "is_link", "ExecutionBlocker", "add_graph_prefix"],
    "comfy_execution.graph": ["ExecutionBlocker", "DynamicPrompt"],
    "comfy_execution.utils": ["get_executing_context", "CurrentNodeContext"],
    "comfy_execution.progress": ["get_progress_state", "ProgressHandler", "add_progress_handler"],
    "comfy.comfy_types": ["IO", "ComfyNodeABC", "InputTypeDict", "CheckLazyMixin", "FileLocator",
                          "UnetWrapperFunction"],
    "comfy.comfy_types.node_typing": ["IO", "ComfyNodeABC"],
    "comfy_api.latest": ["io", "ui", "ComfyExtension", "ComfyAPI", "ComfyAPISync"],
    "comfy_api.latest.io": ["ComfyNode", "Schema", "Combo", "MultiCombo", "MatchType", "Autogrow",
                            "DynamicCombo", "Color", "Curve", "ImageCompare", "BoundingBox"],
    "comfy_api.v0_0_2": ["io", "ui", "ComfyExtension", "ComfyAPI", "ComfyAPISync"],
    "comfy.samplers": ["KSampler", "KSAMPLER", "sampler_object"],
    "comfy.sample": ["prepare_noise", "fix_empty_latent_channels"],
    "comfy.sd": ["load_checkpoint_guess_config"],
    "protocol": ["BinaryEventTypes"],
    "execution": ["validate_node_input", "ExecutionBlocker", "DynamicPrompt", "map_node_over_list"],
    "comfyui_version": ["__version__"],
    "comfy.model_patcher": ["ModelPatcher", "set_model_options_patch_replace"],
    "comfy.latent_formats": ["LatentFormat", "SD15"],
    "comfy.k_diffusion.sampling": ["sample_euler", "sample_dpmpp_2m", "get_sigmas_karras", "default_noise_sampler"],
    "comfy_extras.nodes_mask": [],
    "comfy_api.input": ["VideoInput", "ImageInput", "CurveInput", "CurvePoint", "MonotoneCubicCurve", "LinearCurve"],
    "comfy_api.input_impl": ["VideoFromFile"],
    "comfy_api.util": ["VideoContainer", "VideoCodec"],
    "comfy_execution.validation": ["validate_node_input"],
    "comfy_execution.caching": ["HierarchicalCache", "LRUCache"],
}


@pytest.fixture
def surface():
    finder.install()
    yield
    finder.uninstall()


@pytest.mark.parametrize("module", sorted(TIER1))
def test_names_resolve(surface, module):
    mod = importlib.import_module(module)
    missing = [name for name in TIER1[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks {missing}"
    if module.startswith("comfy_extras."):  # built from the core nodes that declare the module
        assert finder._provided(mod)
    else:
        assert mod.__file__.startswith(finder.SURFACE_DIR) or module == "comfy_api.latest.io"


def test_shared_classes_are_the_kernels(surface):
    from comfy_api.latest import io
    from comfy_execution.graph_utils import ExecutionBlocker, GraphBuilder

    from comfy_kernel.nodes import graph_utils
    from comfy_kernel.nodes import io as kernel_io

    assert io is kernel_io
    assert ExecutionBlocker is graph_utils.ExecutionBlocker and GraphBuilder is graph_utils.GraphBuilder
    assert importlib.import_module("comfy_api.latest.io") is kernel_io


def test_names_vanish_without_the_finder(surface):
    import folder_paths  # noqa: F401

    finder.uninstall()
    assert "folder_paths" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("folder_paths")
    finder.install()


def test_folder_paths_semantics(surface, tmp_path, monkeypatch):
    from comfy_kernel.files.folders import DataDirs, FolderRegistry
    from comfy_kernel_compat import state

    registry = FolderRegistry(DataDirs.from_base(str(tmp_path)))
    monkeypatch.setattr(state, "folders", lambda: registry)
    import folder_paths

    assert folder_paths.models_dir == str(tmp_path / "models")
    assert folder_paths.get_folder_paths("unet") == folder_paths.get_folder_paths("diffusion_models")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "b.bin").write_text("x")
    (tmp_path / "extra" / "a.txt").write_text("x")
    folder_paths.add_model_folder_path("mine", str(tmp_path / "extra"))
    assert folder_paths.get_filename_list("mine") == ["a.txt", "b.bin"]
    folder_paths.folder_names_and_paths["ipadapter"] = ([str(tmp_path / "extra")], folder_paths.supported_pt_extensions)
    assert folder_paths.get_filename_list("ipadapter") == ["b.bin"]
    assert folder_paths.get_full_path("ipadapter", "../b.bin") == str(tmp_path / "extra" / "b.bin")
    assert "ipadapter" in folder_paths.folder_names_and_paths
    paths, exts = folder_paths.folder_names_and_paths["ipadapter"]
    assert ".safetensors" in exts
    assert folder_paths.get_annotated_filepath("x.png [output]") == str(tmp_path / "output" / "x.png")
    assert folder_paths.get_annotated_filepath("x.png") == str(tmp_path / "input" / "x.png")
    assert folder_paths.get_directory_by_type("temp") == str(tmp_path / "temp")
    assert folder_paths.get_directory_by_type("user") is None
    assert folder_paths.filter_files_content_types(["a.png", "b.mp4", "c.txt", "d.webp"], ["image"]) == ["a.png", "d.webp"]
    out = str(tmp_path / "output")
    folder, name, counter, sub, _ = folder_paths.get_save_image_path("sub/img", out, 64, 32)
    assert (folder, name, counter, sub) == (str(tmp_path / "output" / "sub"), "img", 1, "sub")
    (tmp_path / "output" / "sub" / "img_00007_.png").write_text("")
    assert folder_paths.get_save_image_path("sub/img", out)[2] == 8
    assert folder_paths.get_save_image_path("%width%x%height%", out, 64, 32)[1] == "64x32"
    with pytest.raises(ValueError):
        folder_paths.get_save_image_path("../escape", out)


def test_utils_helpers(surface, tmp_path):
    import comfy.utils
    import torch

    t = torch.arange(3).reshape(3, 1)
    assert comfy.utils.repeat_to_batch_size(t, 5).flatten().tolist() == [0, 1, 2, 0, 1]
    assert comfy.utils.repeat_to_batch_size(t, 2).flatten().tolist() == [0, 1]
    sd = {"a.x": torch.ones(2), "b.y": torch.ones(3)}
    comfy.utils.save_torch_file(sd, str(tmp_path / "w.safetensors"))
    loaded = comfy.utils.load_torch_file(str(tmp_path / "w.safetensors"))
    assert comfy.utils.calculate_parameters(loaded) == 5
    torch.save({"state_dict": sd}, tmp_path / "w.ckpt")
    assert set(comfy.utils.load_torch_file(str(tmp_path / "w.ckpt"))) == {"a.x", "b.y"}
    renamed = comfy.utils.state_dict_prefix_replace(dict(sd), {"a.": "z."}, filter_keys=True)
    assert list(renamed) == ["z.x"]
    image = torch.rand(1, 3, 8, 8)
    assert comfy.utils.common_upscale(image, 16, 4, "bilinear", "center").shape == (1, 3, 4, 16)
    assert comfy.utils.common_upscale(image, 4, 4, "lanczos", "disabled").shape == (1, 3, 4, 4)
    up = comfy.utils.tiled_scale(image, lambda x: torch.nn.functional.interpolate(x, scale_factor=2),
                                 tile_x=4, tile_y=4, overlap=1, upscale_amount=2, out_channels=3)
    assert up.shape == (1, 3, 16, 16)
    assert torch.allclose(up, torch.nn.functional.interpolate(image, scale_factor=2), atol=1e-5)
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda *a, **k: calls.append(a))
    try:
        pbar = comfy.utils.ProgressBar(2)
        pbar.update(1)
        assert calls == [(1, 2, None)]
    finally:
        from comfy_kernel.progress import default_progress_hook

        comfy.utils.set_progress_bar_global_hook(default_progress_hook)


def test_model_patcher_applies_and_reverts_weight_patches(surface):
    import torch
    from comfy.model_patcher import ModelPatcher

    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    patcher = ModelPatcher(model, "cpu", "cpu")
    clone = patcher.clone()
    assert clone.add_patches({"weight": (torch.ones(2, 2),), "missing": (torch.ones(1),)}, 0.5) == ["weight"]
    assert patcher.patches == {}
    clone.set_model_attn2_patch("p")
    assert clone.model_options["transformer_options"]["patches"]["attn2_patch"] == ["p"]
    assert "patches" not in patcher.model_options["transformer_options"]
    clone.patch_model("cpu")
    assert torch.allclose(model.weight, torch.full((2, 2), 1.5))
    clone.unpatch_model()
    assert torch.allclose(model.weight, torch.ones(2, 2))


def test_nothing_named_server_or_nodes_is_installed():
    """The names exist only through the finder, never as packages on sys.path."""
    import subprocess

    code = ("import importlib.util as u; "
            "print([u.find_spec(n) is None for n in ('server', 'nodes', 'folder_paths', 'comfy', 'comfy_api')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[True, True, True, True, True]", out.stderr


def test_validate_node_input(surface):
    from execution import validate_node_input

    assert validate_node_input("IMAGE", "IMAGE") and validate_node_input("INT", "*")
    assert validate_node_input("INT", "INT,FLOAT") and not validate_node_input("INT", "STRING")
    assert not validate_node_input("INT", "*", strict=True)


def test_video_types_are_core_nodes(surface, tmp_path):
    """Packs building videos with comfy_api get core_nodes' VIDEO values, which SaveVideo and friends take."""
    from fractions import Fraction

    import torch
    from comfy_api.input import VideoInput
    from comfy_api.input_impl import VideoFromFile
    from comfy_api.latest import Input, InputImpl, Types
    from comfy_api.util import VideoContainer

    from comfy_kernel_core_nodes.media import video

    assert VideoInput is video.VideoInput and Input.Video is video.VideoInput
    assert VideoFromFile is video.VideoFromFile and InputImpl.VideoFromComponents is video.VideoFromComponents
    assert Types.VideoComponents is video.VideoComponents and VideoContainer.as_input()[:2] == ["auto", "mp4"]
    made = InputImpl.VideoFromComponents(Types.VideoComponents(images=torch.rand(3, 16, 16, 3), frame_rate=Fraction(6)))
    made.save_to(str(tmp_path / "v.mp4"), format=Types.VideoContainer.MP4, codec=Types.VideoCodec.H264)
    loaded = InputImpl.VideoFromFile(str(tmp_path / "v.mp4"))
    assert isinstance(loaded, Input.Video) and loaded.get_frame_count() == 3 and loaded.get_dimensions() == (16, 16)


def test_reexported_modules_are_core_nodes_objects(surface):
    pytest.importorskip("comfy_kernel_core_nodes")
    import comfy.k_diffusion.sampling as k
    import comfy.model_patcher
    import comfy.samplers
    from comfy_extras.nodes_mask import GrowMask, composite

    from comfy_kernel_core_nodes.model import patcher
    from comfy_kernel_core_nodes.nodes import image_ops, mask
    from comfy_kernel_core_nodes.sampling import guider, samplers_euler

    assert comfy.model_patcher.ModelPatcher is patcher.ModelPatcher
    assert comfy.samplers.CFGGuider is guider.CFGGuider and comfy.samplers.sampling_function is guider.sampling_function
    assert k.sample_euler is samplers_euler.sample_euler
    assert GrowMask is mask.GrowMask and composite is image_ops.paste
    sigmas = k.get_sigmas_karras(4, 0.1, 10.0, device="cpu")
    assert sigmas.shape == (5,) and float(sigmas[0]) == pytest.approx(10.0) and float(sigmas[-1]) == 0.0


def test_missing_source_names_the_comfy_module(surface):
    from comfy_kernel_compat.reexport import MissingFeature, reexport

    namespace = {"__name__": "comfy.example"}
    with pytest.raises(MissingFeature, match=r"comfy\.example .*comfy_kernel_core_nodes\.model\.no_such_module"):
        reexport(namespace, ["model.no_such_module"])
    reexport(namespace, [], optional=["model.no_such_module"])  # optional sources may be absent


def test_unknown_comfy_extras_module_is_not_found(surface):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("comfy_extras.nodes_not_a_module")
    import comfy

    with pytest.raises(AttributeError):
        comfy.not_a_submodule  # noqa: B018


def test_model_management_has_comfyuis_whole_public_set(surface):
    """Every public name of ComfyUI 0.3.64's comfy.model_management (listed in tests/data) resolves."""
    import json
    import os

    path = os.path.join(os.path.dirname(__file__), "data", "comfyui_0.3.64_names.json")
    with open(path, encoding="utf-8") as f:
        names = json.load(f)
    import comfy.model_management as mm
    import comfy.sample

    assert [n for n in names["comfy.model_management"] if not hasattr(mm, n)] == []
    assert [n for n in names["comfy.sample"] if not hasattr(comfy.sample, n)] == []
    assert isinstance(mm.total_vram, float) and isinstance(mm.current_loaded_models, list)


def test_model_internals_packs_subclass_and_check(surface):
    """The names Advanced-ControlNet, AnimateDiff, Easy-Use and WAS read at import time behave as in ComfyUI."""
    pytest.importorskip("comfy_kernel_core_nodes")
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.model_base
    import comfy.ops
    import comfy.supported_models
    import comfy.utils
    from comfy.patcher_extension import PatcherInjection
    from comfy_extras.nodes_stable3d import camera_embeddings

    from comfy_kernel_core_nodes.families.sd import models, unet
    from comfy_kernel_core_nodes.model import ops

    class Ops(comfy.ops.disable_weight_init):  # Advanced-ControlNet subclasses the layer set
        pass

    assert Ops.Linear is ops.plain.Linear and comfy.ops.manual_cast.Conv2d is ops.CastConv2d
    assert isinstance(comfy.ops.manual_cast.conv_nd(2, 1, 1, 1), ops.CastConv2d)
    assert comfy.supported_models.SDXL is models.SDXL and comfy.model_base.SDXL is models.SDXLModel
    assert not issubclass(comfy.model_base.Flux, models.SDXLModel) and issubclass(comfy.model_base.Flux,
                                                                                   comfy.model_base.BaseModel)
    assert openaimodel.TimestepEmbedSequential is unet.TimestepBlock and openaimodel.TimestepBlock is unet.ResBlock
    assert ("input_blocks.0.0.weight", "conv_in.weight") in comfy.utils.UNET_MAP_BASIC
    assert comfy.utils.UNET_MAP_RESNET["skip_connection.bias"] == "conv_shortcut.bias"
    assert len(comfy.utils.TRANSFORMER_BLOCKS) == 20
    injection = PatcherInjection(inject=print, eject=print)
    assert injection.inject is print
    assert camera_embeddings(10.0, 90.0).shape == (1, 1, 4)


def test_torch_helpers_is_the_core_compile_wrapper(surface):
    pytest.importorskip("comfy_kernel_core_nodes")
    import torch
    from comfy_api.torch_helpers import remove_torch_compile_wrapper, set_torch_compile_wrapper

    from comfy_kernel_core_nodes.model.patcher import ModelPatcher
    from comfy_kernel_core_nodes.patches import compile as core_compile

    model = ModelPatcher(torch.nn.Linear(2, 2))
    set_torch_compile_wrapper(model, backend="inductor", keys=["diffusion_model"])
    assert model.model_options[core_compile.TORCH_COMPILE_KWARGS]["backend"] == "inductor"
    assert model.get_wrappers("apply_model", core_compile.COMPILE_KEY)
    remove_torch_compile_wrapper(model)
    assert not model.get_wrappers("apply_model", core_compile.COMPILE_KEY)
    with pytest.raises(ValueError, match="not supported"):
        set_torch_compile_wrapper(model, backend="inductor", keys=["diffusion_model.input_blocks"])


def test_family_modules_are_core_nodes_families(surface):
    """The family code KJNodes and Easy-Use import: core_nodes' classes under ComfyUI's module and class names."""
    pytest.importorskip("comfy_kernel_core_nodes")
    import comfy.ldm.flux.layers
    import comfy.ldm.flux.math
    import comfy.ldm.lumina.model
    import comfy.ldm.wan.model
    import comfy.ldm.wan.vae
    import comfy.taesd.taesd
    import torch

    from comfy_kernel_core_nodes.components import taesd, wan_vae
    from comfy_kernel_core_nodes.families.flux import layers
    from comfy_kernel_core_nodes.families.lumina2 import nextdit
    from comfy_kernel_core_nodes.families.wan import transformer
    from comfy_kernel_core_nodes.model import ops

    assert comfy.ldm.flux.math.apply_rope1 is layers.apply_rope and comfy.ldm.flux.layers.DoubleStreamBlock is layers.DoubleStreamBlock
    assert comfy.ldm.lumina.model.FeedForward is nextdit.FeedForward and comfy.ldm.lumina.model.JointTransformerBlock is nextdit.Block
    assert comfy.ldm.wan.model.WanModel is transformer.WanTransformer
    assert comfy.ldm.wan.vae.RMS_norm is wan_vae.RMSNorm and comfy.taesd.taesd.TAESD is taesd.TinyAutoencoder
    # A Wan VAE's causal convolutions (built per weight-casting layer set) count as ComfyUI's CausalConv3d.
    loaded = wan_vae.CausalConv3d(ops.manual_cast, 2, 2, 3, padding=1)
    assert isinstance(loaded, comfy.ldm.wan.vae.CausalConv3d) and not isinstance(torch.nn.Conv3d(2, 2, 3),
                                                                                  comfy.ldm.wan.vae.CausalConv3d)
    ids = torch.stack([torch.zeros(6), torch.arange(6.0)], dim=-1)[None]
    pe = comfy.ldm.flux.layers.EmbedND(8, 10000.0, [4, 4])(ids)
    assert pe.shape == (1, 1, 6, 4, 2, 2)


@pytest.mark.parametrize("module", ["comfy.ldm.lightricks.model", "comfy.ldm.minimax.model", "comfy_extras.nodes_lt",
                                    "comfy.taesd.taehv", "comfy.context_windows", "comfy.quant_ops"])
def test_families_not_implemented_fail_with_the_reason(surface, module):
    from comfy_kernel_compat.reexport import MissingFeature

    with pytest.raises(MissingFeature, match="is not available on comfy-kernel: .+") as caught:
        importlib.import_module(module)
    assert isinstance(caught.value, ModuleNotFoundError) and module.startswith(caught.value.name)
    import comfy

    assert not hasattr(comfy, "context_windows")  # packs probing with hasattr go on without it


def test_clip_vision_model_is_callable_as_packs_call_it(surface):
    """IPAdapter_plus preprocesses images itself and calls ``clip_vision.model(pixel_values=...)``."""
    pytest.importorskip("comfy_kernel_core_nodes")
    import comfy.clip_vision
    import torch

    from comfy_kernel_core_nodes.components.clip_vision import CLIPVisionModel, VisionConfig
    from comfy_kernel_core_nodes.model.base import WeightsSource

    config = VisionConfig("tiny_test", 32, 2, 2, 64, "gelu", 16, image_size=28)
    g = torch.Generator().manual_seed(0)  # the layers start uninitialised: fill every tensor
    sd = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in CLIPVisionModel(config).state_dict().items()}

    def build(weights: dict) -> torch.nn.Module:
        net = CLIPVisionModel(config)
        net.load_state_dict(weights)
        return net

    source = WeightsSource(key="tiny-vision-for-compat-test", read=lambda device: {k: v.clone() for k, v in sd.items()},
                           build=build, keys=frozenset(sd))
    vision = comfy.clip_vision.ClipVisionModel(config, source)
    image = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(1))
    want = vision.encode_image(image)
    with torch.no_grad():
        last, hidden, embeds = vision.model(pixel_values=comfy.clip_vision.clip_preprocess(image, size=28),
                                            intermediate_output=-2)
    assert embeds.shape == (1, 16) and torch.allclose(embeds, want.image_embeds, atol=1e-6)
    assert torch.allclose(hidden, want.penultimate_hidden_states, atol=1e-6)
    assert torch.allclose(last, want.last_hidden_state, atol=1e-6)
