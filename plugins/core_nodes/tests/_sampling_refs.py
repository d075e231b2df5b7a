"""Access to the captured reference runs (``tests/data/reference``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
OUTPUTS = REFERENCE / "outputs"
WORKFLOWS = REFERENCE / "workflows"


@dataclass
class KSamplerRun:
    """One captured KSampler execution and the node inputs that produced it."""

    workflow: str
    index: int
    params: dict
    latent_raw: torch.Tensor
    seed: int
    evals: int

    def npy(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.load(OUTPUTS / self.workflow / f"ksampler{self.index}_{name}.npy"))

    @property
    def id(self) -> str:
        return f"{self.workflow}/ksampler{self.index}"


def ksampler_runs() -> list[KSamplerRun]:
    """Every captured KSampler run; missing data is an error (an empty list would skip the tests)."""
    if not OUTPUTS.is_dir() or not any(WORKFLOWS.glob("*.json")):
        raise FileNotFoundError(f"test data missing: {REFERENCE}")
    runs = []
    for wf_file in sorted(WORKFLOWS.glob("*.json")):
        name = wf_file.stem
        graph = json.loads(wf_file.read_text())
        nodes = sorted((k for k, v in graph.items() if v["class_type"] == "KSampler"), key=int)
        for k, node_id in enumerate(nodes):
            meta_file = OUTPUTS / name / f"ksampler{k}_meta.json"
            if not meta_file.exists() or not (OUTPUTS / name / f"ksampler{k}_step_cfg_denoised.npy").exists():
                continue  # captures without the guided predictions (the SDXL runs) are not replayed here
            params = graph[node_id]["inputs"]
            src = params["latent_image"][0]
            latent = np.load(OUTPUTS / name / f"latent_{graph[src]['class_type']}_node{src}.npy")
            meta = json.loads(meta_file.read_text())
            runs.append(
                KSamplerRun(name, k, params, torch.from_numpy(latent), meta["seed"], meta["num_model_evals"])
            )
    return runs


def max_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|, the reference's own error measure."""
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30))
