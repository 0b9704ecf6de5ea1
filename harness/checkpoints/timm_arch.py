"""timm's ViT architectures, as a table: what a state dict does not show of each (heads, MLP activation,
pooling), or why the harness's ViT cannot compute it (`harness.checkpoints.timm` reads it).
"""

# Made by tests/data/make_timm_arch_table.py from timm 1.0.31, timm/models/vision_transformer.py (every
# registered VisionTransformer built on the meta device and inspected); checked against the installed timm
# by tests/test_timm_open_clip.py::test_arch_table_is_timms.
# name: (num_heads, gelu, global_pool). Every row: timm's `Block` / `Mlp` / `Attention`, LayerNorm eps 1e-6,
# no register tokens, layer scale, ln_pre, fc_norm or qk_norm; the class token (and `no_embed_class`) and all
# sizes are read off the tensors. "exact" is torch's nn.GELU() (timm's default act_layer): the v1 SigLIP and
# augreg families; "tanh" is timm's `gelu_tanh` (GELUTanh), set by several SigLIP 2-era architectures.
TIMM_VIT: dict[str, tuple[int, str, str]] = {
    "flexivit_base": (12, "exact", "token"),
    "flexivit_large": (16, "exact", "token"),
    "flexivit_small": (6, "exact", "token"),
    "test_vit": (2, "exact", "token"),
    "vit_base_patch16_224": (12, "exact", "token"),
    "vit_base_patch16_224_miil": (12, "exact", "token"),
    "vit_base_patch16_384": (12, "exact", "token"),
    "vit_base_patch16_gap_224": (16, "exact", "avg"),
    "vit_base_patch16_siglip_224": (12, "exact", "map"),
    "vit_base_patch16_siglip_256": (12, "exact", "map"),
    "vit_base_patch16_siglip_384": (12, "exact", "map"),
    "vit_base_patch16_siglip_512": (12, "exact", "map"),
    "vit_base_patch16_siglip_gap_224": (12, "exact", "avg"),
    "vit_base_patch16_siglip_gap_256": (12, "exact", "avg"),
    "vit_base_patch16_siglip_gap_384": (12, "exact", "avg"),
    "vit_base_patch16_siglip_gap_512": (12, "exact", "avg"),
    "vit_base_patch32_224": (12, "exact", "token"),
    "vit_base_patch32_384": (12, "exact", "token"),
    "vit_base_patch32_siglip_256": (12, "tanh", "map"),
    "vit_base_patch32_siglip_gap_256": (12, "tanh", "avg"),
    "vit_base_patch8_224": (12, "exact", "token"),
    "vit_giant_patch14_224": (16, "exact", "token"),
    "vit_giant_patch16_gap_224": (16, "exact", "avg"),
    "vit_giantopt_patch16_siglip_256": (16, "tanh", "map"),
    "vit_giantopt_patch16_siglip_384": (16, "tanh", "map"),
    "vit_giantopt_patch16_siglip_gap_256": (16, "tanh", "avg"),
    "vit_giantopt_patch16_siglip_gap_384": (16, "tanh", "avg"),
    "vit_gigantic_patch14_224": (16, "exact", "token"),
    "vit_huge_patch14_224": (16, "exact", "token"),
    "vit_huge_patch14_gap_224": (16, "exact", "avg"),
    "vit_huge_patch16_gap_448": (16, "exact", "avg"),
    "vit_large_patch14_224": (16, "exact", "token"),
    "vit_large_patch16_224": (16, "exact", "token"),
    "vit_large_patch16_384": (16, "exact", "token"),
    "vit_large_patch16_siglip_256": (16, "exact", "map"),
    "vit_large_patch16_siglip_384": (16, "exact", "map"),
    "vit_large_patch16_siglip_512": (16, "tanh", "map"),
    "vit_large_patch16_siglip_gap_256": (16, "exact", "avg"),
    "vit_large_patch16_siglip_gap_384": (16, "exact", "avg"),
    "vit_large_patch16_siglip_gap_512": (16, "tanh", "avg"),
    "vit_large_patch32_224": (16, "exact", "token"),
    "vit_large_patch32_384": (16, "exact", "token"),
    "vit_small_patch16_224": (6, "exact", "token"),
    "vit_small_patch16_384": (6, "exact", "token"),
    "vit_small_patch32_224": (6, "exact", "token"),
    "vit_small_patch32_384": (6, "exact", "token"),
    "vit_small_patch8_224": (6, "exact", "token"),
    "vit_so400m_patch14_siglip_224": (16, "exact", "map"),
    "vit_so400m_patch14_siglip_378": (16, "exact", "map"),
    "vit_so400m_patch14_siglip_384": (16, "exact", "map"),
    "vit_so400m_patch14_siglip_gap_224": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_378": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_384": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_448": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_896": (16, "exact", "avg"),
    "vit_so400m_patch16_siglip_256": (16, "tanh", "map"),
    "vit_so400m_patch16_siglip_384": (16, "tanh", "map"),
    "vit_so400m_patch16_siglip_512": (16, "tanh", "map"),
    "vit_so400m_patch16_siglip_gap_256": (16, "tanh", "avg"),
    "vit_so400m_patch16_siglip_gap_384": (16, "tanh", "avg"),
    "vit_so400m_patch16_siglip_gap_512": (16, "tanh", "avg"),
    "vit_tiny_patch16_224": (3, "exact", "token"),
    "vit_tiny_patch16_384": (3, "exact", "token"),
}
# name: why the harness's ViT cannot compute it.
TIMM_VIT_REFUSED: dict[str, str] = {
    "aimv2_1b_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_1b_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_1b_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_3b_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_3b_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_3b_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_huge_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_huge_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_huge_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_large_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_large_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_large_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "beit3_base_patch16_224":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "beit3_giant_patch14_224":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "beit3_giant_patch14_336":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "beit3_large_patch16_224":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "eva_large_patch14_196": "fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "eva_large_patch14_336": "fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "test_vit2":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "test_vit3": "register tokens (reg_tokens=1), layer scale (init_values), pooling over the prefix tokens",
    "test_vit4":
        "RmsNorm, register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_base_patch14_dinov2": "layer scale (init_values)",
    "vit_base_patch14_reg1_tipsv2": "register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_base_patch14_reg4_dinov2": "register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_base_patch16_18x2_224": "ParallelThingsBlock blocks (not timm's pre-LN Block)",
    "vit_base_patch16_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_clip_384": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_plus_240": "layer scale (init_values)",
    "vit_base_patch16_plus_clip_240": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_radio_v3":
        "register tokens (reg_tokens=7), layer scale (init_values), no final LayerNorm (final_norm=False)",
    "vit_base_patch16_reg4_gap_256": "register tokens (reg_tokens=4), fc_norm (the final LayerNorm after pooling)",
    "vit_base_patch16_rpn_224": "ResPostBlock blocks (not timm's pre-LN Block)",
    "vit_base_patch16_xp_224": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_base_patch32_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_256": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_384": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_448": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_plus_256": "layer scale (init_values)",
    "vit_betwixt_patch16_gap_256": "layer scale (init_values)",
    "vit_betwixt_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_betwixt_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_betwixt_patch16_reg4_gap_384":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_betwixt_patch32_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_dlittle_patch16_reg1_gap_256":
        "DiffAttention attention, register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_dpwee_patch16_reg1_gap_256": "DiffParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_dwee_patch16_reg1_gap_256":
        "DiffAttention attention, register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_giant_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_giant_patch14_dinov2": "GluMlp MLP, SiLU, layer scale (init_values)",
    "vit_giant_patch14_reg1_tipsv2": "GluMlp MLP, SiLU, register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_giant_patch14_reg4_dinov2": "GluMlp MLP, SiLU, register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_giant_patch16_radio_v3": "register tokens (reg_tokens=7), no final LayerNorm (final_norm=False)",
    "vit_gigantic_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_gigantic_patch14_clip_378": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_gigantic_patch14_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_336": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_378": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_quickgelu_378":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_xp_224": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_huge_patch16_radio_v3": "register tokens (reg_tokens=7), no final LayerNorm (final_norm=False)",
    "vit_huge_patch16_radio_v4": "register tokens (reg_tokens=9), no final LayerNorm (final_norm=False)",
    "vit_intern300m_patch14_448": "layer scale (init_values), no final LayerNorm (final_norm=False)",
    "vit_large_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_clip_336": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_clip_quickgelu_336":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_dinov2": "layer scale (init_values)",
    "vit_large_patch14_reg1_tipsv2": "register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_large_patch14_reg4_dinov2": "register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_large_patch14_xp_224": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_large_patch16_radio_v3":
        "register tokens (reg_tokens=7), layer scale (init_values), no final LayerNorm (final_norm=False)",
    "vit_little_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_little_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_medium_patch16_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_medium_patch16_gap_240": "layer scale (init_values)",
    "vit_medium_patch16_gap_256": "layer scale (init_values)",
    "vit_medium_patch16_gap_384": "layer scale (init_values)",
    "vit_medium_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_medium_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_medium_patch32_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_mediumd_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_mediumd_patch16_reg4_gap_384":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_pwee_patch16_reg1_gap_256": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_small_patch14_dinov2": "layer scale (init_values)",
    "vit_small_patch14_reg4_dinov2": "register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_small_patch16_18x2_224": "ParallelThingsBlock blocks (not timm's pre-LN Block)",
    "vit_small_patch16_36x1_224": "layer scale (init_values)",
    "vit_so150m2_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_so150m2_patch16_reg1_gap_384":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_so150m2_patch16_reg1_gap_448":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_so150m_patch16_reg4_gap_256": "register tokens (reg_tokens=4)",
    "vit_so150m_patch16_reg4_gap_384": "register tokens (reg_tokens=4)",
    "vit_so150m_patch16_reg4_map_256": "register tokens (reg_tokens=4)",
    "vit_so400m_patch14_reg1_tipsv2": "register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_so400m_patch16_radio_v4": "register tokens (reg_tokens=9), no final LayerNorm (final_norm=False)",
    "vit_wee_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_xsmall_patch16_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
}
