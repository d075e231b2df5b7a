"""Registration and /object_info facts of the core nodes (names, categories, inputs, outputs)."""

from __future__ import annotations

import subprocess
import sys

from comfy_kernel.nodes.registry import NodeRegistry
from comfy_kernel_core_nodes import plugin
from comfy_kernel_core_nodes.nodes import NODES
from comfy_kernel_core_nodes.nodes.common import SAMPLER_NAMES, SCHEDULER_NAMES

REQUIRED = {
    "CheckpointLoaderSimple", "VAELoader", "CLIPLoader", "UNETLoader", "CLIPTextEncode", "CLIPSetLastLayer",
    "KSampler", "KSamplerAdvanced", "EmptyLatentImage", "VAEDecode", "VAEEncode", "VAEDecodeTiled",
    "VAEEncodeTiled", "VAEEncodeForInpaint", "SaveImage", "PreviewImage", "LoadImage", "LoadImageMask",
    "ImageScale", "ImageScaleBy", "ImageInvert", "ImageBatch", "ImagePadForOutpaint", "LatentUpscale",
    "LatentUpscaleBy", "LatentFromBatch", "RepeatLatentBatch", "LatentComposite", "SetLatentNoiseMask",
    "ConditioningCombine", "ConditioningAverage", "ConditioningConcat", "ConditioningSetArea",
    "ConditioningSetMask", "ConditioningZeroOut", "LoraLoader", "LoraLoaderModelOnly", "EmptyImage",
    "PrimitiveInt", "PreviewAny",
}


def test_plugin_import_does_not_import_torch():
    code = ("import sys, comfy_kernel_core_nodes.plugin as p; from comfy_kernel_core_nodes.nodes import NODES; "
            "[n.cls.INPUT_TYPES() for n in NODES]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_node_is_registered_as_a_reserved_core_node():
    registry = NodeRegistry()
    plugin.ck_register_nodes(registry)
    assert REQUIRED <= set(registry.names())  # the contract test checks every registered node
    for entry in registry.entries():
        assert entry.reserved and entry.source == "core_nodes"
    assert registry.entry("KSampler").python_module == "nodes"
    assert registry.entry("PrimitiveInt").python_module == "comfy_extras.nodes_primitive"
    assert registry.entry("CheckpointLoaderSimple").display_name == "Load Checkpoint"
    assert registry.entry("KSamplerAdvanced").display_name == "KSampler (Advanced)"


def test_sampler_and_scheduler_lists_match_the_sampling_package():
    from comfy_kernel_core_nodes import sampling

    assert list(SAMPLER_NAMES) == list(sampling.SAMPLER_NAMES)
    assert list(SCHEDULER_NAMES) == list(sampling.SCHEDULER_NAMES)


def test_object_info_facts_of_the_main_nodes():
    nodes = {n.name: n.cls for n in NODES}
    ks = nodes["KSampler"].INPUT_TYPES()["required"]
    assert list(ks) == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                        "latent_image", "denoise"]
    assert ks["seed"][1]["max"] == 0xFFFFFFFFFFFFFFFF and ks["seed"][1]["control_after_generate"] is True
    assert ks["steps"][1] | {} == ks["steps"][1] and ks["steps"][1]["default"] == 20
    assert (ks["cfg"][1]["default"], ks["cfg"][1]["step"], ks["cfg"][1]["round"]) == (8.0, 0.1, 0.01)
    adv = nodes["KSamplerAdvanced"].INPUT_TYPES()["required"]
    assert list(adv) == ["model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler",
                         "positive", "negative", "latent_image", "start_at_step", "end_at_step",
                         "return_with_leftover_noise"]
    assert adv["end_at_step"][1]["default"] == 10000
    empty = nodes["EmptyLatentImage"].INPUT_TYPES()["required"]
    assert empty["width"][1] == {"default": 512, "min": 16, "max": 16384, "step": 8, "tooltip": empty["width"][1]["tooltip"]}
    save = nodes["SaveImage"]
    assert save.OUTPUT_NODE is True and save.RETURN_TYPES == () and save.CATEGORY == "image"
    assert save.INPUT_TYPES()["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert nodes["CheckpointLoaderSimple"].RETURN_TYPES == ("MODEL", "CLIP", "VAE")
    assert nodes["LoadImage"].RETURN_TYPES == ("IMAGE", "MASK")
    assert nodes["CLIPSetLastLayer"].INPUT_TYPES()["required"]["stop_at_clip_layer"][1]["min"] == -24
    categories = {n.name: n.cls.CATEGORY for n in NODES}
    assert categories["VAEDecodeTiled"] == "_for_testing" and categories["UNETLoader"] == "advanced/loaders"
    assert categories["ConditioningZeroOut"] == "advanced/conditioning" and categories["LoadImageMask"] == "mask"


def test_preview_any_accepts_every_link_type():
    from comfy_kernel_core_nodes.nodes.utility import PreviewAny

    declared = PreviewAny.INPUT_TYPES()["required"]["source"][0]
    assert not (declared != "IMAGE") and not ("LATENT" != declared)
    assert PreviewAny().main(source=5) == {"ui": {"text": ("5",)}, "result": ("5",)}
    assert PreviewAny().main(source={"a": 1}) == {"ui": {"text": ('{"a": 1}',)}, "result": ('{"a": 1}',)}
