"""Golden output of FaRL ViT-B/16 token features as FALCO's attribute loss extracts them.

Official code: openai/CLIP ``clip/model.py`` (the ``CLIP`` model that ``clip.load("ViT-B/16")`` builds;
FALCO keeps its ``.visual`` tower) and chi0tzp/FALCO ``lib/attr_loss.py`` (``AttrLoss.extract_visual``:
the tokens after the last transformer block, before ``ln_post``, and the projected embedding). Seeded
random weights stand in for the FaRL file; the input is a seeded 224x224 batch, so FALCO's
``Resize(224) + CenterCrop(224)`` (torchvision, not run) leaves it unchanged. Writes
``tests/golden/farl_vit_b16.{json,pt}`` with every 4th token (CLS included) to keep the file small.

    python experiments/golden/make_farl.py --official-git <mirror>/openai+CLIP/repo \
        --falco-git <mirror>/chi0tzp+FALCO/repo
"""
from __future__ import annotations

import torch

from official import export_sources, load_file, parse_args, source_record, stub_module
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

WEIGHT_SEED, INPUT_SEED, BATCH, TOKEN_STEP = 15011, 15012, 1, 4
# clip.model.build_model's reading of the ViT-B/16 checkpoint (vision heads = width // 64)
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], falco_git="git directory of chi0tzp/FALCO")
    clip_src, clip_commit = export_sources(args.official_git)
    falco_src, falco_commit = export_sources(args.falco_git)
    clip_model = load_file("clip.model", clip_src / "clip" / "model.py")
    stub_module("clip", model=clip_model)  # attr_loss.py imports clip only for clip.load (not run)
    stub_module("torchvision.transforms")
    stub_module("lib", FARL_PRETRAIN_MODEL="unused")
    attr_loss = load_file("falco_attr_loss", falco_src / "lib" / "attr_loss.py")

    model = clip_model.CLIP(**VIT_B16)
    layout = [entry for entry in state_layout(model.state_dict()) if entry[0].startswith("visual.")]
    result = model.load_state_dict(seeded_state(layout, WEIGHT_SEED), strict=False)  # as FALCO loads FaRL
    assert not result.unexpected_keys and all(not k.startswith("visual.") for k in result.missing_keys)
    model.eval()
    model.float()
    extractor = attr_loss.AttrLoss.__new__(attr_loss.AttrLoss)  # AttrLoss.__init__ downloads CLIP weights
    torch.nn.Module.__init__(extractor)
    extractor.feat_ext_model = model.visual

    images = seeded_tensor((BATCH, 3, 224, 224), INPUT_SEED)
    with torch.no_grad():
        embedding, tokens = extractor.extract_visual(images)
    meta = source_record("openai/CLIP", clip_commit, ["clip/model.py"],
                         falco_repository="https://github.com/chi0tzp/FALCO", falco_commit=falco_commit,
                         falco_files=["lib/attr_loss.py"],
                         call="AttrLoss.extract_visual with feat_ext_model = CLIP(ViT-B/16).visual, eval, float32",
                         outputs={"tokens": f"tokens[:, ::{TOKEN_STEP}] (B x 50 x 768)",
                                  "embedding": "ln_post(CLS) @ proj (B x 512), not normalised"},
                         weight_seed=WEIGHT_SEED, input_seed=INPUT_SEED, input_shape=[BATCH, 3, 224, 224],
                         input_range=[-1, 1], token_step=TOKEN_STEP, torch_version=torch.__version__, layout=layout)
    write_golden("farl_vit_b16", meta, {"tokens": tokens[:, ::TOKEN_STEP], "embedding": embedding})
    print(f"tokens {tuple(tokens.shape)} |mean| {tokens.abs().mean():.4f}, embedding |mean| "
          f"{embedding.abs().mean():.4f}, commits {clip_commit} {falco_commit}")


if __name__ == "__main__":
    main()
