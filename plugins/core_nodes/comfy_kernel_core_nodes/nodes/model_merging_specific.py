"""ModelMerge<family>: ModelMergeBlocks with one ratio per block of a model family (ComfyUI's names and order).

Each is only a list of key prefixes; a key takes the ratio of the longest
prefix it starts with (the first ratio if none).
"""

from __future__ import annotations

from typing import Any

from .common import NodeDef
from .model_merging import RATIO, ModelMergeBlocks


def _n(prefix: str, count: int, suffix: str = ".") -> list[str]:
    return [f"{prefix}{i}{suffix}" for i in range(count)]


def _unet(suffix: str, blocks: int) -> list[str]:
    return ["time_embed.", "label_emb."] + _n("input_blocks.", blocks, suffix) + _n("middle_block.", 3, suffix) + \
        _n("output_blocks.", blocks, suffix) + ["out."]


_SD3 = ["pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder."]
_COSMOS = ["pos_embedder.", "extra_pos_embedder.", "x_embedder.", "t_embedder.", "affline_norm."]
_PREDICT2 = ["pos_embedder.", "x_embedder.", "t_embedder.", "t_embedding_norm."]

#: node name -> (ratio names in ComfyUI's order, description)
FAMILIES: dict[str, tuple[list[str], str]] = {
    "ModelMergeSD1": (_unet(".", 12), ""),
    "ModelMergeSD2": (_unet(".", 12), ""),
    "ModelMergeSDXL": (_unet("", 9), ""),
    "ModelMergeSD3_2B": (_SD3 + _n("joint_blocks.", 24) + ["final_layer."], ""),
    "ModelMergeAuraflow": (["init_x_linear.", "positional_encoding", "cond_seq_linear.", "register_tokens",
                            "t_embedder."] + _n("double_layers.", 4) + _n("single_layers.", 32)
                           + ["modF.", "final_linear."], ""),
    "ModelMergeFlux1": (["img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in."] + _n("double_blocks.", 19)
                        + _n("single_blocks.", 38) + ["final_layer."], ""),
    "ModelMergeSD35_Large": (_SD3 + _n("joint_blocks.", 38) + ["final_layer."], ""),
    "ModelMergeMochiPreview": (["pos_frequencies.", "t_embedder.", "t5_y_embedder.", "t5_yproj."] + _n("blocks.", 48)
                               + ["final_layer."], ""),
    "ModelMergeLTXV": (["patchify_proj.", "adaln_single.", "caption_projection."] + _n("transformer_blocks.", 28)
                       + ["scale_shift_table", "proj_out."], ""),
    "ModelMergeCosmos7B": (_COSMOS + _n("blocks.block", 28) + ["final_layer."], ""),
    "ModelMergeCosmos14B": (_COSMOS + _n("blocks.block", 36) + ["final_layer."], ""),
    "ModelMergeWAN2_1": (["patch_embedding.", "time_embedding.", "time_projection.", "text_embedding.", "img_emb."]
                         + _n("blocks.", 40) + ["head."],
                         "1.3B model has 30 blocks, 14B model has 40 blocks. Image to video model has the extra "
                         "img_emb."),
    "ModelMergeCosmosPredict2_2B": (_PREDICT2 + _n("blocks.", 28) + ["final_layer."], ""),
    "ModelMergeCosmosPredict2_14B": (_PREDICT2 + _n("blocks.", 36) + ["final_layer."], ""),
    "ModelMergeQwenImage": (["pos_embeds.", "img_in.", "txt_norm.", "txt_in.", "time_text_embed."]
                            + _n("transformer_blocks.", 60) + ["proj_out."], ""),
}


def _node(name: str, ratios: list[str], description: str) -> type:
    def input_types(cls: type) -> dict[str, Any]:
        required: dict[str, Any] = {"model1": ("MODEL",), "model2": ("MODEL",)}
        required.update({ratio: RATIO for ratio in ratios})
        return {"required": required}

    attrs: dict[str, Any] = {"CATEGORY": "advanced/model_merging/model_specific",
                             "INPUT_TYPES": classmethod(input_types), "__doc__": f"{name}: a ratio per block."}
    if description:
        attrs["DESCRIPTION"] = description
    return type(name, (ModelMergeBlocks,), attrs)


NODES = [NodeDef(name, _node(name, ratios, description), name, "comfy_extras.nodes_model_merging_model_specific")
         for name, (ratios, description) in FAMILIES.items()]
