"""Model-family code reached through ComfyUI's module names, by a pack of our own (tests/packs/family_pack).

The pack imports at module level what KJNodes, AnimateDiff-Evolved,
Advanced-ControlNet and IPAdapter_plus import (``comfy.ldm.flux.math``,
``comfy.ldm.lumina.model``, ``comfy.ldm.wan.vae``, ``comfy.taesd.taesd``,
``comfy.controlnet``, ``comfy.hooks`` ...), and, inside ``try`` blocks as
KJNodes does, modules of families comfy-kernel does not implement. A second
pack (ltx_pack) needs the LTX-Video family at module level and must fail alone,
by name.
"""

from __future__ import annotations

import pytest
from compat_helpers import Client, events, start

torch = pytest.importorskip("torch")
pytest.importorskip("comfy_kernel_core_nodes")

from comfy_kernel_core_nodes.components.taesd import Decoder  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    decoder = Decoder(4)
    path = tmp_path_factory.mktemp("vae_approx") / "tiny_decoder.safetensors"
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, decoder_file):
    base = tmp_path_factory.mktemp("family_pack")
    target = base / "models" / "vae_approx"
    target.mkdir(parents=True)
    (target / decoder_file.name).write_bytes(decoder_file.read_bytes())
    srv = start(base, "family_pack", "ltx_pack", "v3_family_pack", keep={"compat", "core_nodes"}, args=("--cpu",))
    yield srv
    srv.stop()
    srv.client.close()


def _records(server) -> dict:
    return {p["name"]: p for p in server.get("/api/plugins").json()}


def test_family_modules_import_and_missing_families_are_noted(server):
    record = _records(server)["family_pack"]
    assert record["status"] == "loaded", record["traceback"]
    assert sorted(record["nodes"]) == ["FPChecks", "FPStats", "FPTinyDecode"]  # not FPLTXOnly
    missing = "\n".join(record["missing"])
    assert "comfy.ldm.lightricks" in missing and "LTX-Video" in missing
    assert "comfy.quant_ops" in missing and "comfy.context_windows" in missing
    log = open(server.log_path, encoding="utf-8").read()
    assert "family_pack loaded without: comfy.ldm.lightricks" in log
    # What a V3 pack imports while its extension lists its nodes is noted as well.
    v3 = _records(server)["v3_family_pack"]
    assert v3["status"] == "loaded" and v3["nodes"] == ["V3FamilyNode"]
    assert any(m.startswith("comfy.context_windows is not available") for m in v3["missing"])


def test_a_pack_needing_ltx_at_module_level_fails_by_name(server):
    records = _records(server)
    failed = records["ltx_pack"]
    assert failed["status"] == "failed"
    assert "comfy.ldm.lightricks" in failed["error"] and "LTX-Video" in failed["error"]
    assert any("comfy.ldm.lightricks" in m for m in failed["missing"])
    assert records["family_pack"]["status"] == "loaded"
    log = open(server.log_path, encoding="utf-8").read()
    assert "ltx_pack" in log and "not available on comfy-kernel" in log


def test_family_code_behaves_as_packs_expect(server, decoder_file):
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "FPTinyDecode", "inputs": {"samples": ["1", 0], "decoder": decoder_file.name}},
        "3": {"class_type": "FPStats", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "FPChecks", "inputs": {"seed": 1}},
    }
    with Client(server) as client:
        _, messages = client.run(prompt)
    errors = events(messages, "execution_error")
    assert not errors, [(e["exception_message"], e["traceback"][-3:]) for e in errors]
    out = {e["node"]: e["output"] for e in events(messages, "executed")}

    # The pack rebuilt the decoder from the file's keys with comfy.taesd.taesd's parts: same image as core_nodes'.
    from safetensors.torch import load_file

    decoder = Decoder(4)
    decoder.load_state_dict(load_file(str(decoder_file)))
    with torch.no_grad():
        want = decoder(torch.zeros(1, 4, 8, 8)).clamp(0, 1).movedim(1, -1)
    stats = out["3"]["stats"][0]
    assert stats["shape"] == [1, 64, 64, 3]
    assert stats["sum"] == pytest.approx(float(want.double().sum()), rel=1e-5)
    assert stats["first"] == pytest.approx([float(v) for v in want.flatten()[:4]], abs=1e-6)

    checks = out["4"]["checks"][0]
    assert checks["rope"]["max_err"] < 1e-5 and checks["rope"]["k_norm_err"] < 1e-4 and checks["rope"]["moved"] > 0.1
    assert checks["wan"]["shape"] == [1, 4, 5, 8, 8]
    assert checks["wan"]["early_diff"] == 0.0 and checks["wan"]["late_diff"] > 0.1
    assert checks["wan"]["channel_rms"] == pytest.approx(1.0, abs=1e-4)
    assert checks["feed_forward"]["chunk_err"] < 1e-6 and checks["feed_forward"]["err"] < 1e-6
    assert checks["control"]["controlnet_is_control_base"] is True
    assert checks["control"]["broadcast"] == [0.0, 1.0, 0.0, 1.0, 0.0]  # the control images repeated to the batch
    assert {"CONSTANT", "LINEAR_UP"} <= set(checks["control"]["strength_types"])
    assert checks["hooks"] == {"entries": 2, "keyframes": 1, "mask_strength": 0.5, "timesteps": [0.0, 0.5]}
    assert checks["ltx"] is False and checks["minimax"] is False and checks["context_windows"] is False
