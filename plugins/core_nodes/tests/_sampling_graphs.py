"""The API prompts of the custom-sampling and model-patch tests, with a ``TestProbe`` per checked value.

Pure Python (no torch), so the same graphs can be evaluated by ComfyUI itself:
``data/sampling_nodes`` holds what ComfyUI 0.3.64 recorded for each probe name
(see its README). Every prompt starts from the tiny SD1.5 checkpoint, the
prompts "a photo of a cat" / "blurry" and a 64x64 empty latent.
"""

from __future__ import annotations

from typing import Any

CHECKPOINT = "sd15-tiny-seed0.safetensors"
MASK_IMAGE = "gradient_mask.png"
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]

Prompt = dict[str, dict[str, Any]]


class Graph:
    """Builds one API prompt; ``add`` returns a link ``[id, 0]`` (``out(id, i)`` for other outputs)."""

    def __init__(self) -> None:
        self.nodes: Prompt = {}
        self.add("ckpt", "CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
        self.model, self.clip = ["ckpt", 0], ["ckpt", 1]
        self.pos = self.add("pos", "CLIPTextEncode", clip=self.clip, text="a photo of a cat")
        self.neg = self.add("neg", "CLIPTextEncode", clip=self.clip, text="blurry")
        self.empty = self.add("empty", "EmptyLatentImage", width=64, height=64, batch_size=1)

    def add(self, node_id: str, class_type: str, **inputs: Any) -> list:
        assert node_id not in self.nodes, node_id
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]

    @staticmethod
    def out(link: list, index: int) -> list:
        return [link[0], index]

    def probe(self, name: str, value: list) -> None:
        self.add(f"probe_{name}", "TestProbe", value=value, name=name)

    def ksampler(self, name: str, model: list, latent: list | None = None, positive: list | None = None,
                 **settings: Any) -> list:
        inputs = {"seed": 42, "steps": 4, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                  "denoise": 1.0, **settings}
        out = self.add(f"ks_{name}", "KSampler", model=model, positive=positive or self.pos, negative=self.neg,
                       latent_image=latent or self.empty, **inputs)
        self.probe(name, out)
        return out

    def source_latent(self) -> list:
        """A non-empty latent without a VAE: seeded noise added at sigma 1 (AddNoise)."""
        if "src" not in self.nodes:
            sigmas = self.add("src_sigmas", "KarrasScheduler", steps=1, sigma_max=1.0, sigma_min=1.0, rho=7.0)
            noise = self.add("src_noise", "RandomNoise", noise_seed=3)
            self.add("src", "AddNoise", model=self.model, noise=noise, sigmas=sigmas, latent_image=self.empty)
        return ["src", 0]


def sigma_graph() -> Prompt:
    """Schedulers, sigma operations and the ModelSampling* schedules: SIGMAS and FLOAT probes only."""
    g = Graph()
    for name in SCHEDULERS:
        g.probe(f"basic_{name}", g.add(f"basic_{name}", "BasicScheduler", model=g.model, scheduler=name, steps=7,
                                       denoise=1.0))
    g.probe("basic_normal_d06", g.add("basic_d06", "BasicScheduler", model=g.model, scheduler="normal", steps=5,
                                      denoise=0.6))
    karras = g.add("karras", "KarrasScheduler", steps=6, sigma_max=14.614642, sigma_min=0.03, rho=5.0)
    g.probe("karras", karras)
    g.probe("exponential", g.add("exponential", "ExponentialScheduler", steps=6, sigma_max=10.0, sigma_min=0.1))
    g.probe("polyexponential", g.add("polyexp", "PolyexponentialScheduler", steps=6, sigma_max=10.0,
                                     sigma_min=0.1, rho=2.0))
    g.probe("laplace", g.add("laplace", "LaplaceScheduler", steps=6, sigma_max=14.614642, sigma_min=0.03, mu=0.5,
                             beta=0.7))
    g.probe("vp", g.add("vp", "VPScheduler", steps=6, beta_d=19.9, beta_min=0.1, eps_s=0.001))
    g.probe("sdturbo", g.add("sdturbo", "SDTurboScheduler", model=g.model, steps=3, denoise=0.7))
    g.probe("beta", g.add("beta", "BetaSamplingScheduler", model=g.model, steps=7, alpha=0.5, beta=0.7))
    for i, (kind, steps, denoise) in enumerate([("SD1", 10, 1.0), ("SDXL", 7, 1.0), ("SVD", 13, 0.5)]):
        g.probe(f"ays_{i}", g.add(f"ays_{i}", "AlignYourStepsScheduler", model_type=kind, steps=steps,
                                  denoise=denoise))
    for i, (coeff, steps, denoise) in enumerate([(1.2, 10, 1.0), (0.85, 5, 0.6), (1.5, 25, 1.0)]):
        g.probe(f"gits_{i}", g.add(f"gits_{i}", "GITSScheduler", coeff=coeff, steps=steps, denoise=denoise))
    for i, (kind, steps, denoise) in enumerate([("FLUX", 8, 1.0), ("Wan", 20, 1.0), ("Chroma", 5, 0.5)]):
        g.probe(f"optimal_{i}", g.add(f"optimal_{i}", "OptimalStepsScheduler", model_type=kind, steps=steps,
                                      denoise=denoise))
    split = g.add("split", "SplitSigmas", sigmas=karras, step=2)
    g.probe("split_high", split)
    g.probe("split_low", g.out(split, 1))
    split_d = g.add("split_d", "SplitSigmasDenoise", sigmas=karras, denoise=0.4)
    g.probe("split_denoise_high", split_d)
    g.probe("split_denoise_low", g.out(split_d, 1))
    g.probe("flip", g.add("flip", "FlipSigmas", sigmas=karras))
    g.probe("first_sigma", g.add("first", "SetFirstSigma", sigmas=karras, sigma=20.0))
    for spacing in ("linear", "cosine", "sine"):
        g.probe(f"extend_{spacing}", g.add(f"extend_{spacing}", "ExtendIntermediateSigmas", sigmas=karras, steps=3,
                                           start_at_sigma=-1.0, end_at_sigma=1.0, spacing=spacing))
    for i, (percent, actual) in enumerate([(0.0, True), (0.0, False), (0.3, False), (1.0, True), (1.0, False)]):
        g.probe(f"percent_{i}", g.add(f"percent_{i}", "SamplingPercentToSigma", model=g.model,
                                      sampling_percent=percent, return_actual_sigma=actual))
    patched = {
        "vpred_zsnr": ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": True}, "normal"),
        "lcm": ("ModelSamplingDiscrete", {"sampling": "lcm", "zsnr": False}, "sgm_uniform"),
        "edm": ("ModelSamplingContinuousEDM", {"sampling": "edm", "sigma_max": 80.0, "sigma_min": 0.002}, "karras"),
        "cosmos": ("ModelSamplingContinuousEDM", {"sampling": "cosmos_rflow", "sigma_max": 80.0, "sigma_min": 0.002},
                   "normal"),
        "cont_v": ("ModelSamplingContinuousV", {"sampling": "v_prediction", "sigma_max": 500.0, "sigma_min": 0.03},
                   "normal"),
        "cascade": ("ModelSamplingStableCascade", {"shift": 2.0}, "simple"),
        "sd3": ("ModelSamplingSD3", {"shift": 3.0}, "simple"),
        "aura": ("ModelSamplingAuraFlow", {"shift": 1.73}, "normal"),
        "flux": ("ModelSamplingFlux", {"max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 768},
                 "simple"),
    }
    for name, (class_type, inputs, scheduler) in patched.items():
        model = g.add(f"ms_{name}", class_type, model=g.model, **inputs)
        g.probe(f"ms_{name}", g.add(f"ms_{name}_sigmas", "BasicScheduler", model=model, scheduler=scheduler,
                                    steps=5, denoise=1.0))
        g.probe(f"ms_{name}_percent", g.add(f"ms_{name}_percent", "SamplingPercentToSigma", model=model,
                                            sampling_percent=0.3, return_actual_sigma=False))
    return g.nodes


def custom_sampler_graph() -> Prompt:
    """SamplerCustom(Advanced) with every SAMPLER and GUIDER node; LATENT probes (``<name>`` and ``<name>_x0``)."""
    g = Graph()
    src = g.source_latent()
    g.probe("src", src)
    normal4 = g.add("normal4", "BasicScheduler", model=g.model, scheduler="normal", steps=4, denoise=1.0)
    cfg5 = g.add("cfg5", "CFGGuider", model=g.model, positive=g.pos, negative=g.neg, cfg=5.0)
    seed42 = g.add("seed42", "RandomNoise", noise_seed=42)

    def advanced(name: str, sampler: list, guider: list = cfg5, sigmas: list = normal4, noise: list = seed42,
                 latent: list | None = None) -> None:
        out = g.add(f"adv_{name}", "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler,
                    sigmas=sigmas, latent_image=latent or g.empty)
        g.probe(name, out)
        g.probe(f"{name}_x0", g.out(out, 1))

    euler_a = g.add("euler_a", "SamplerEulerAncestral", eta=0.7, s_noise=0.9)
    karras4 = g.add("karras4", "KarrasScheduler", steps=4, sigma_max=14.614642, sigma_min=0.0291675, rho=7.0)
    custom = g.add("custom", "SamplerCustom", model=g.model, add_noise=True, noise_seed=7, cfg=6.0, positive=g.pos,
                   negative=g.neg, sampler=euler_a, sigmas=karras4, latent_image=g.empty)
    g.probe("custom", custom)
    g.probe("custom_x0", g.out(custom, 1))
    euler = g.add("euler", "KSamplerSelect", sampler_name="euler")
    normal6 = g.add("normal6", "BasicScheduler", model=g.model, scheduler="normal", steps=6, denoise=1.0)
    low = g.out(g.add("split6", "SplitSigmas", sigmas=normal6, step=3), 1)
    custom_nn = g.add("custom_nn", "SamplerCustom", model=g.model, add_noise=False, noise_seed=0, cfg=4.0,
                      positive=g.pos, negative=g.neg, sampler=euler, sigmas=low, latent_image=src)
    g.probe("custom_no_noise", custom_nn)

    advanced("basic_guider", g.add("heun", "KSamplerSelect", sampler_name="heun"),
             guider=g.add("basic_g", "BasicGuider", model=g.model, conditioning=g.pos),
             sigmas=g.add("normal3", "BasicScheduler", model=g.model, scheduler="normal", steps=3, denoise=1.0),
             noise=g.add("seed11", "RandomNoise", noise_seed=11))
    dog = g.add("dog", "CLIPTextEncode", clip=g.clip, text="a painting of a dog")
    dpmpp_2m = g.add("dpmpp_2m", "KSamplerSelect", sampler_name="dpmpp_2m")
    karras_b = g.add("karras_b", "BasicScheduler", model=g.model, scheduler="karras", steps=4, denoise=1.0)
    for style in ("regular", "nested"):
        guider = g.add(f"dual_{style}", "DualCFGGuider", model=g.model, cond1=g.pos, cond2=dog, negative=g.neg,
                       cfg_conds=5.0, cfg_cond2_negative=3.0, style=style)
        advanced(f"dual_{style}", dpmpp_2m, guider=guider, sigmas=karras_b)
    advanced("disable_noise", euler, sigmas=low, noise=g.add("no_noise", "DisableNoise"), latent=src)
    empty_cond = g.add("empty_cond", "CLIPTextEncode", clip=g.clip, text="")
    advanced("perpneg_guider", euler, guider=g.add("perpneg_g", "PerpNegGuider", model=g.model, positive=g.pos,
                                                   negative=g.neg, empty_conditioning=empty_cond, cfg=6.0,
                                                   neg_scale=0.8))
    samplers = {
        "dpmpp_2m_sde": ("SamplerDPMPP_2M_SDE", {"solver_type": "heun", "eta": 0.8, "s_noise": 1.0,
                                                 "noise_device": "cpu"}),
        "dpmpp_2m_sde_gpu": ("SamplerDPMPP_2M_SDE", {"solver_type": "midpoint", "eta": 1.0, "s_noise": 0.9,
                                                     "noise_device": "gpu"}),
        "dpmpp_3m_sde": ("SamplerDPMPP_3M_SDE", {"eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}),
        "dpmpp_sde": ("SamplerDPMPP_SDE", {"eta": 1.0, "s_noise": 1.0, "r": 0.4, "noise_device": "cpu"}),
        "dpmpp_2s_a": ("SamplerDPMPP_2S_Ancestral", {"eta": 0.9, "s_noise": 1.0}),
        "lms": ("SamplerLMS", {"order": 3}),
        "dpm_adaptive": ("SamplerDPMAdaptative", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05,
                                                  "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0, "accept_safety": 0.81,
                                                  "eta": 0.0, "s_noise": 1.0}),
        "er_sde": ("SamplerER_SDE", {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}),
        "er_sde_reverse": ("SamplerER_SDE", {"solver_type": "Reverse-time SDE", "max_stage": 2, "eta": 0.5,
                                             "s_noise": 1.0}),
        "er_sde_ode": ("SamplerER_SDE", {"solver_type": "ODE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}),
        "sa_solver": ("SamplerSASolver", {"model": g.model, "eta": 1.0, "sde_start_percent": 0.2,
                                          "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
                                          "corrector_order": 4, "use_pece": False, "simple_order_2": False}),
        "sa_solver_pece": ("SamplerSASolver", {"model": g.model, "eta": 0.7, "sde_start_percent": 0.0,
                                               "sde_end_percent": 0.9, "s_noise": 1.0, "predictor_order": 2,
                                               "corrector_order": 2, "use_pece": True, "simple_order_2": True}),
        "euler_a_cfgpp": ("SamplerEulerAncestralCFGPP", {"eta": 0.5, "s_noise": 1.0}),
        "euler_cfgpp": ("SamplerEulerCFGpp", {"version": "regular"}),
        "euler_cfgpp_alt": ("SamplerEulerCFGpp", {"version": "alternative"}),
        "lcm_upscale": ("SamplerLCMUpscale", {"scale_ratio": 1.5, "scale_steps": 2, "upscale_method": "nearest-exact"}),
        "dpmpp_2m_select": ("KSamplerSelect", {"sampler_name": "dpmpp_2m"}),
    }
    for name, (class_type, inputs) in samplers.items():
        advanced(name, g.add(f"sampler_{name}", class_type, **inputs))
    return g.nodes


#: The model patches compared with ComfyUI: name -> (class_type, inputs after ``model``); each one is
#: sampled with KSampler (euler, normal, 4 steps, cfg 7, seed 42).
PATCHES: dict[str, tuple[str, dict[str, Any]]] = {
    "freeu": ("FreeU", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
    "freeu_v2": ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
    "pag": ("PerturbedAttentionGuidance", {"scale": 2.0}),
    "sag": ("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 2.0}),
    "deep_shrink": ("PatchModelAddDownscale", {"block_number": 1, "downscale_factor": 2.0, "start_percent": 0.0,
                                               "end_percent": 0.5, "downscale_after_skip": True,
                                               "downscale_method": "bicubic", "upscale_method": "bicubic"}),
    "deep_shrink_before_skip": ("PatchModelAddDownscale", {"block_number": 1, "downscale_factor": 2.0,
                                                           "start_percent": 0.0, "end_percent": 1.0,
                                                           "downscale_after_skip": False,
                                                           "downscale_method": "bilinear",
                                                           "upscale_method": "nearest-exact"}),
    "hypertile": ("HyperTile", {"tile_size": 32, "swap_size": 2, "max_depth": 0, "scale_depth": False}),
    "tome": ("TomePatchModel", {"ratio": 0.5}),
    "epsilon": ("Epsilon Scaling", {"scaling_factor": 1.01}),
    "rescale_cfg": ("RescaleCFG", {"multiplier": 0.7}),
    "apg": ("APG", {"eta": 0.5, "norm_threshold": 3.0, "momentum": 0.3}),
    "cfg_norm": ("CFGNorm", {"strength": 0.8}),
    "cfg_zero_star": ("CFGZeroStar", {}),
    "mahiro": ("Mahiro", {}),
    "tcfg": ("TCFG", {}),
    "fresca": ("FreSca", {"scale_low": 1.0, "scale_high": 1.5, "freq_cutoff": 2}),
    "self_attention_x": ("UNetSelfAttentionMultiply", {"q": 1.2, "k": 0.8, "v": 1.1, "out": 0.9}),
    "cross_attention_x": ("UNetCrossAttentionMultiply", {"q": 0.9, "k": 1.1, "v": 1.2, "out": 0.8}),
    "temporal_attention_x": ("UNetTemporalAttentionMultiply", {"self_structural": 1.1, "self_temporal": 1.0,
                                                               "cross_structural": 0.9, "cross_temporal": 1.0}),
    "vpred_zsnr": ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": True}),
    "edm": ("ModelSamplingContinuousEDM", {"sampling": "edm", "sigma_max": 80.0, "sigma_min": 0.002}),
    "sd3_shift": ("ModelSamplingSD3", {"shift": 3.0}),
}


def patch_graph() -> Prompt:
    """Every patch node of :data:`PATCHES` plus those needing more inputs; LATENT probes named by patch."""
    g = Graph()
    g.ksampler("baseline", g.model)
    for name, (class_type, inputs) in PATCHES.items():
        g.ksampler(name, g.add(name, class_type, model=g.model, **inputs))
    empty_cond = g.add("empty_cond", "CLIPTextEncode", clip=g.clip, text="")
    g.ksampler("perpneg", g.add("perpneg", "PerpNeg", model=g.model, empty_conditioning=empty_cond, neg_scale=1.0))
    sharpen = g.add("sharpen", "LatentOperationSharpen", sharpen_radius=1, sigma=0.5, alpha=0.2)
    g.ksampler("latent_op_cfg", g.add("latent_op_cfg", "LatentApplyOperationCFG", model=g.model, operation=sharpen))
    clip_x = g.add("clip_x", "CLIPAttentionMultiply", clip=g.clip, q=1.1, k=0.9, v=1.2, out=0.8)
    g.ksampler("clip_attention_x", g.model,
               positive=g.add("pos_clip_x", "CLIPTextEncode", clip=clip_x, text="a photo of a cat"))
    g.ksampler("lcm", g.add("lcm", "ModelSamplingDiscrete", model=g.model, sampling="lcm", zsnr=False),
               sampler_name="lcm", scheduler="sgm_uniform")
    batch3 = g.add("batch3", "EmptyLatentImage", width=64, height=64, batch_size=3)
    g.ksampler("video_linear", g.add("video_linear", "VideoLinearCFGGuidance", model=g.model, min_cfg=1.0),
               latent=batch3)
    g.ksampler("video_triangle", g.add("video_triangle", "VideoTriangleCFGGuidance", model=g.model, min_cfg=2.0),
               latent=batch3)
    mask = g.add("mask", "LoadImageMask", image=MASK_IMAGE, channel="red")
    masked = g.add("masked", "SetLatentNoiseMask", samples=g.source_latent(), mask=mask)
    g.ksampler("inpaint", g.model, latent=masked, denoise=0.8)
    for name, strength in (("diff_diffusion", 1.0), ("diff_diffusion_06", 0.6)):
        g.ksampler(name, g.add(name, "DifferentialDiffusion", model=g.model, strength=strength), latent=masked,
                   denoise=0.8)
    return g.nodes


def cache_graph() -> Prompt:
    """EasyCache and LazyCache over 10 steps (the caches need a few steps to learn and then skip)."""
    g = Graph()
    g.ksampler("cache_baseline", g.model, steps=10)
    for name, class_type in (("easycache", "EasyCache"), ("lazycache", "LazyCache")):
        g.ksampler(name, g.add(name, class_type, model=g.model, reuse_threshold=1.0, start_percent=0.1,
                               end_percent=0.9, verbose=False), steps=10)
    return g.nodes


GRAPHS = {"sigmas": sigma_graph, "custom_sampler": custom_sampler_graph, "patches": patch_graph,
          "cache": cache_graph}
