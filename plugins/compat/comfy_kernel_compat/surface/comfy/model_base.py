"""ComfyUI's ``comfy.model_base``: BaseModel, ModelType and the SD family model classes of core_nodes.

ComfyUI's model classes of families comfy-kernel does not load are defined as
empty BaseModel subclasses: packs import them for ``isinstance`` checks, which
are then False for every model, as no loaded model is of that family.
"""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.base"], optional=["families.sd.models"],
         aliases={"SDXL": "SDXLModel", "SDXLRefiner": "SDXLRefinerModel"})

#: ComfyUI's model classes (0.3.64 and later); those not provided by a family above are stand-ins.
FAMILY_CLASSES = (
    "SD21UNCLIP", "SDXLRefiner", "SDXL", "SVD_img2vid", "SV3D_u", "SV3D_p", "Stable_Zero123", "SD_X4Upscaler",
    "SD15_instructpix2pix", "SDXL_instructpix2pix", "Lotus", "StableCascade_C", "StableCascade_B", "SD3",
    "AuraFlow", "StableAudio1", "HunyuanDiT", "PixArt", "Flux", "GenmoMochi", "LTXV", "HunyuanVideo",
    "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V", "CosmosVideo", "CosmosPredict2", "Lumina2", "WAN21",
    "WAN21_Vace", "WAN21_Camera", "WAN21_HuMo", "WAN22_Animate", "WAN22_S2V", "WAN22", "Hunyuan3Dv2",
    "Hunyuan3Dv2_1", "HiDream", "Chroma", "ChromaRadiance", "ACEStep", "Omnigen2", "QwenImage",
    "HunyuanImage21", "HunyuanImage21Refiner",
)

for _name in FAMILY_CLASSES:
    if _name not in globals():
        globals()[_name] = type(_name, (globals()["BaseModel"],), {
            "__module__": __name__, "__doc__": f"ComfyUI's {_name}: no model of this family is loaded here."})
del _name
