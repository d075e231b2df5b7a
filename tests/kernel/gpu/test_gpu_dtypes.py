import pytest

from comfy_kernel.gpu import GpuConfig, dtype_policy


def storage(policy):
    return {p: policy.part(p).storage for p in ("unet", "text_encoder", "vae")}


def test_cpu_defaults():
    policy = dtype_policy("cpu")
    assert storage(policy) == {"unet": "float32", "text_encoder": "float16", "vae": "float32"}
    assert policy.text_encoder.compute == "float32" and policy.text_encoder.manual_cast
    assert not policy.unet.manual_cast


def test_cuda_defaults_follow_hardware():
    ampere = dtype_policy("cuda:0", fp16=True, bf16=True)
    assert storage(ampere) == {"unet": "float16", "text_encoder": "float16", "vae": "bfloat16"}
    assert ampere.unet.compute == "float16"
    turing = dtype_policy("cuda:0", fp16=True, bf16=False)
    assert turing.vae.storage == "float32"
    old = dtype_policy("cuda:0", fp16=False, bf16=False)
    assert old.unet.storage == "float32"


def test_force_flags():
    fp32 = dtype_policy("cuda:0", GpuConfig(force_precision="fp32"), fp16=True, bf16=True)
    assert set(storage(fp32).values()) == {"float32"}
    fp16 = dtype_policy("cpu", GpuConfig(force_precision="fp16"))
    assert fp16.unet.storage == "float16" and fp16.unet.compute == "float32"
    assert fp16.vae.storage == "float32"


def test_part_flags_win_over_force():
    cfg = GpuConfig(force_precision="fp32", part_dtypes=(("unet", "bf16"), ("vae", "fp16"), ("text_encoder", "fp32")))
    policy = dtype_policy("cuda:0", cfg, fp16=True, bf16=True)
    assert storage(policy) == {"unet": "bfloat16", "text_encoder": "float32", "vae": "float16"}


def test_flags_to_policy_through_argparse():
    import argparse

    from comfy_kernel.gpu import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = GpuConfig.from_args(parser.parse_args(["--bf16-unet", "--fp32-text-enc", "--fp16-vae"]))
    assert cfg.part_dtypes == (("unet", "bf16"), ("text_encoder", "fp32"), ("vae", "fp16"))
    assert storage(dtype_policy("cpu", cfg)) == {"unet": "bfloat16", "text_encoder": "float32", "vae": "float16"}


def test_unknown_part():
    with pytest.raises(KeyError):
        dtype_policy("cpu").part("lora")
