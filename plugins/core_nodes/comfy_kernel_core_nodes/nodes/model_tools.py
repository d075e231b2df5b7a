"""Other MODEL (and CLIP) patches: Differential Diffusion, attention multipliers, torch.compile, caching, RoPE.

The attention multipliers are weight patches (``add_patches`` with a
``strength_model`` factor and no delta): the patched weights are a separate
entry in the model manager, loaded once and reused by every run of the clone.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

ATTENTION = "_for_testing/attention_experiments"


class DifferentialDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="DifferentialDiffusion", display_name="Differential Diffusion",
                         category="_for_testing", is_experimental=True,
                         inputs=[io.Model.Input("model"),
                                 io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01, optional=True)],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, strength: float = 1.0) -> io.NodeOutput:
        """Inpainting with a soft mask: each mask value sets how late in the run its pixels are denoised."""
        from ..patches.denoise_mask import differential_diffusion

        m = model.clone()
        m.set_model_denoise_mask_function(differential_diffusion(strength))
        return io.NodeOutput(m)


def _factor(name: str) -> io.Input:
    return io.Float.Input(name, default=1.0, min=0.0, max=10.0, step=0.01)


def scale_weights(patcher: Any, keys: Any, factors: dict[str, float], tag: str = "") -> None:
    """Multiply each weight and bias whose key ends with a suffix of ``factors`` by its factor (on ``patcher``).

    One patch batch per suffix, named by it, so the same factors map to the same
    loaded weights across prompts; a factor of 1 changes nothing and is skipped.
    """
    from ..model.patcher import KeyedPatches

    for suffix, factor in factors.items():
        matching = [k for k in sorted(keys) if k.endswith(f"{suffix}.weight") or k.endswith(f"{suffix}.bias")]
        if matching and factor != 1.0:
            patcher.add_patches(KeyedPatches({k: (None,) for k in matching}, f"scale:{tag}{suffix}"), 0.0, factor)


def attention_multiply(attn: str, model: Any, q: float, k: float, v: float, out: float) -> Any:
    m = model.clone()
    scale_weights(m, m.model.state_dict_keys(),
                  {f"{attn}.to_q": q, f"{attn}.to_k": k, f"{attn}.to_v": v, f"{attn}.to_out.0": out})
    return m


class UNetSelfAttentionMultiply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="UNetSelfAttentionMultiply", category=ATTENTION, is_experimental=True,
                         inputs=[io.Model.Input("model"), _factor("q"), _factor("k"), _factor("v"), _factor("out")],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, q: float, k: float, v: float, out: float) -> io.NodeOutput:
        """The self-attention projections (attn1) of every transformer block scaled."""
        return io.NodeOutput(attention_multiply("attn1", model, q, k, v, out))


class UNetCrossAttentionMultiply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="UNetCrossAttentionMultiply", category=ATTENTION, is_experimental=True,
                         inputs=[io.Model.Input("model"), _factor("q"), _factor("k"), _factor("v"), _factor("out")],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, q: float, k: float, v: float, out: float) -> io.NodeOutput:
        """The cross-attention projections (attn2, to the text) scaled."""
        return io.NodeOutput(attention_multiply("attn2", model, q, k, v, out))


class CLIPAttentionMultiply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CLIPAttentionMultiply", category=ATTENTION, is_experimental=True,
                         inputs=[io.Clip.Input("clip"), _factor("q"), _factor("k"), _factor("v"), _factor("out")],
                         outputs=[io.Clip.Output()])

    @classmethod
    def execute(cls, clip: Any, q: float, k: float, v: float, out: float) -> io.NodeOutput:
        """The text encoder's self-attention projections scaled."""
        c = clip.clone()
        scale_weights(c.patcher, c.patcher.model.state_dict_keys(),
                      {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v,
                       "self_attn.out_proj": out})
        return io.NodeOutput(c)


class UNetTemporalAttentionMultiply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="UNetTemporalAttentionMultiply", category=ATTENTION, is_experimental=True,
                         inputs=[io.Model.Input("model"), _factor("self_structural"), _factor("self_temporal"),
                                 _factor("cross_structural"), _factor("cross_temporal")],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, self_structural: float, self_temporal: float, cross_structural: float,
                cross_temporal: float) -> io.NodeOutput:
        """Attention output projections scaled, separately in the temporal layers (``.time_stack.``) of video
        UNets and in the spatial ones."""
        m = model.clone()
        keys = m.model.state_dict_keys()
        temporal = {k for k in keys if ".time_stack." in k}
        scale_weights(m, temporal, {"attn1.to_out.0": self_temporal, "attn2.to_out.0": cross_temporal}, "temporal:")
        scale_weights(m, keys - temporal, {"attn1.to_out.0": self_structural, "attn2.to_out.0": cross_structural})
        return io.NodeOutput(m)


class TorchCompileModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TorchCompileModel", category="_for_testing", is_experimental=True,
                         inputs=[io.Model.Input("model"), io.Combo.Input("backend", options=["inductor", "cudagraphs"])],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, backend: str) -> io.NodeOutput:
        """The diffusion model compiled with ``torch.compile(backend=...)`` at its first evaluation."""
        from ..patches.compile import set_torch_compile_wrapper

        m = model.clone()
        set_torch_compile_wrapper(m, backend=backend)
        return io.NodeOutput(m)


def _cache_inputs(name: str) -> list[io.Input]:
    return [io.Model.Input("model", tooltip=f"The model to add {name} to."),
            io.Float.Input("reuse_threshold", min=0.0, default=0.2, max=3.0, step=0.01,
                           tooltip="Largest predicted relative change of the output for which a step reuses the "
                                   "last one's."),
            io.Float.Input("start_percent", min=0.0, default=0.15, max=1.0, step=0.01,
                           tooltip="Where in the schedule steps may start being reused."),
            io.Float.Input("end_percent", min=0.0, default=0.95, max=1.0, step=0.01,
                           tooltip="Where in the schedule reuse stops."),
            io.Boolean.Input("verbose", default=False, tooltip="Log the change rates of every step.")]


class EasyCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="EasyCache", display_name="EasyCache", category="advanced/debug/model",
                         description="Skips network evaluations whose output can be predicted from the last one.",
                         is_experimental=True, inputs=_cache_inputs("EasyCache"),
                         outputs=[io.Model.Output(tooltip="The model with EasyCache.")])

    @classmethod
    def execute(cls, model: Any, reuse_threshold: float, start_percent: float, end_percent: float,
                verbose: bool) -> io.NodeOutput:
        from ..model.extension import WrappersMP
        from ..patches import cache

        m = model.clone()
        m.model_options["transformer_options"][cache.STATE_KEY] = cache.EasyCacheState(
            reuse_threshold, start_percent, end_percent, subsample_factor=8, verbose=verbose)
        m.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "easycache", cache.cache_sample_wrapper)
        m.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, "easycache", cache.easycache_calc_cond_batch_wrapper)
        m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "easycache", cache.easycache_forward_wrapper)
        return io.NodeOutput(m)


class LazyCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LazyCache", display_name="LazyCache", category="advanced/debug/model",
                         description="A simpler EasyCache on the guided prediction: coarser, but works with every "
                                     "model.",
                         is_experimental=True, inputs=_cache_inputs("LazyCache"),
                         outputs=[io.Model.Output(tooltip="The model with LazyCache.")])

    @classmethod
    def execute(cls, model: Any, reuse_threshold: float, start_percent: float, end_percent: float,
                verbose: bool) -> io.NodeOutput:
        from ..model.extension import WrappersMP
        from ..patches import cache

        m = model.clone()
        m.model_options["transformer_options"][cache.STATE_KEY] = cache.LazyCacheState(
            reuse_threshold, start_percent, end_percent, subsample_factor=8, verbose=verbose)
        m.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "lazycache", cache.cache_sample_wrapper)
        m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, "lazycache", cache.lazycache_predict_noise_wrapper)
        return io.NodeOutput(m)


class ScaleROPE(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        def scale(axis: str) -> io.Input:
            return io.Float.Input(f"scale_{axis}", default=1.0, min=0.0, max=100.0, step=0.1)

        def shift(axis: str) -> io.Input:
            return io.Float.Input(f"shift_{axis}", default=0.0, min=-256.0, max=256.0, step=0.1)

        return io.Schema(node_id="ScaleROPE", category="model/patch", is_experimental=True,
                         description="Scale and shift the rotary position embedding of the model's tokens.",
                         inputs=[io.Model.Input("model"), scale("x"), shift("x"), scale("y"), shift("y"),
                                 scale("t"), shift("t")],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, scale_x: float, shift_x: float, scale_y: float, shift_y: float, scale_t: float,
                shift_t: float) -> io.NodeOutput:
        """Token positions along x, y and t become shift + index * scale (honoured by the Wan transformer)."""
        m = model.clone()
        m.set_model_rope_options(scale_x, shift_x, scale_y, shift_y, scale_t, shift_t)
        return io.NodeOutput(m)


NODES = [
    NodeDef("DifferentialDiffusion", DifferentialDiffusion, "Differential Diffusion",
            "comfy_extras.nodes_differential_diffusion"),
    NodeDef("UNetSelfAttentionMultiply", UNetSelfAttentionMultiply, None, "comfy_extras.nodes_attention_multiply"),
    NodeDef("UNetCrossAttentionMultiply", UNetCrossAttentionMultiply, None, "comfy_extras.nodes_attention_multiply"),
    NodeDef("CLIPAttentionMultiply", CLIPAttentionMultiply, None, "comfy_extras.nodes_attention_multiply"),
    NodeDef("UNetTemporalAttentionMultiply", UNetTemporalAttentionMultiply, None,
            "comfy_extras.nodes_attention_multiply"),
    NodeDef("TorchCompileModel", TorchCompileModel, None, "comfy_extras.nodes_torch_compile"),
    NodeDef("EasyCache", EasyCache, "EasyCache", "comfy_extras.nodes_easycache"),
    NodeDef("LazyCache", LazyCache, "LazyCache", "comfy_extras.nodes_easycache"),
    NodeDef("ScaleROPE", ScaleROPE, None, "comfy_extras.nodes_rope"),
]
