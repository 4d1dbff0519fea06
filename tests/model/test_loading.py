"""Model loading: recipe weights, local checkpoints (safely), tags offline, refused towers, devices."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from scclip_cli.errors import ConfigError, ModelLoadError
from scclip_cli.model.loading import (
    check_vision_tower,
    load_clip,
    parse_random_seed,
    read_state_dict,
    resolve_device,
    resolve_dtype,
    resolve_model_name,
)
from scclip_cli.model.random_weights import recipe_state_dict
from support.weights import state_dict_sha256

GOLDEN_TINY_SHA256 = "a690eadd68aa0e2b8db591f6f87943828b24603b60f0cbb762a855586cf7b341"
"""Content hash of the reference's ``scclip-tiny`` weights (tests/data/golden/README.md)."""
MINI_CONFIG = {
    "embed_dim": 16,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}
"""A 2-block ViT that builds in milliseconds (GELU, unlike scclip-tiny)."""


def _texts(clip) -> torch.Tensor:
    with torch.inference_mode():
        return clip.model.encode_text(clip.tokenizer(["a photo of a cat.", "sky"]))


def _image_features(clip) -> torch.Tensor:
    pixels = torch.linspace(-1, 1, 3 * 224 * 224).reshape(1, 3, 224, 224)
    with torch.inference_mode():
        return clip.model.encode_image(pixels)


# ---------------------------------------------------------------------------- recipe weights
def test_recipe_weights_reproduce_the_golden_hash(tiny_clip):
    assert state_dict_sha256(tiny_clip.model.state_dict()) == GOLDEN_TINY_SHA256
    assert tiny_clip.identity == {"model": "scclip-tiny", "pretrained": "random:7"}
    assert (tiny_clip.depth, tiny_clip.patch_size, tiny_clip.width, tiny_clip.output_dim) == (
        12,
        16,
        128,
        64,
    )
    assert tiny_clip.dtype == torch.float32 and tiny_clip.device.type == "cpu"
    assert not tiny_clip.model.training
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())


def test_recipe_follows_the_readme_scalings(tiny_clip):
    sd = recipe_state_dict(tiny_clip.model, seed=7)
    assert "attn_mask" not in sd  # a non-persistent buffer, not part of the weights
    assert float(sd["logit_scale"]) == pytest.approx(np.log(1 / 0.07), abs=2e-3)
    assert sd["logit_scale"].shape == tiny_clip.model.logit_scale.shape
    assert torch.count_nonzero(sd["visual.ln_pre.bias"]) == 0
    assert abs(float(sd["visual.ln_post.weight"].mean()) - 1) < 0.05
    for value in sd.values():  # every value survives a float16 round trip
        assert torch.equal(value.half().float(), value)
    other_seed = recipe_state_dict(tiny_clip.model, seed=8)
    assert state_dict_sha256(other_seed) != GOLDEN_TINY_SHA256


def test_random_seed_parsing():
    assert parse_random_seed("random") == 7
    assert parse_random_seed("random:123") == 123
    assert parse_random_seed("openai") is None
    with pytest.raises(ModelLoadError, match="seed"):
        parse_random_seed("random:abc")


# ---------------------------------------------------------------------------- names / configs
@pytest.mark.parametrize(
    ("model", "pretrained", "built"),
    [
        ("ViT-B-16", "openai", "ViT-B-16-quickgelu"),
        ("ViT-B/16", "openai", "ViT-B-16-quickgelu"),
        ("ViT-L-14", "openai", "ViT-L-14-quickgelu"),
        ("ViT-B-16-quickgelu", "openai", "ViT-B-16-quickgelu"),
        ("ViT-B-16", "laion2b_s34b_b88k", "ViT-B-16"),  # trained with GELU
        ("ViT-B-16", "random:3", "ViT-B-16"),
        ("ViT-B-16", "/weights/openai.pt", "ViT-B-16"),  # a file says nothing about its activation
    ],
)
def test_quickgelu_config_is_chosen_for_quickgelu_weights(model, pretrained, built):
    assert resolve_model_name(model, pretrained) == built


def test_unknown_model_says_how_to_list_models():
    with pytest.raises(ModelLoadError, match=r"ViT-Q-99.*open_clip\.list_models\(\)"):
        load_clip("ViT-Q-99", "random", device="cpu")


def test_config_json_path_builds_any_vit(tmp_path: Path):
    path = tmp_path / "mini-vit.json"
    path.write_text(json.dumps(MINI_CONFIG))
    clip = load_clip(str(path), "random:3", device="cpu")
    assert clip.model_name == str(path)
    assert clip.identity["model"] == "mini-vit"
    assert (clip.depth, clip.width, clip.output_dim) == (2, 32, 16)
    assert clip.model.visual.transformer.resblocks[0].mlp.gelu.__class__ is torch.nn.GELU
    expected = recipe_state_dict(clip.model, seed=3)
    assert state_dict_sha256(clip.model.state_dict()) == state_dict_sha256(expected)


def test_bad_config_json_is_refused(tmp_path: Path):
    path = tmp_path / "broken.json"
    path.write_text('{"embed_dim": 16}')
    with pytest.raises(ModelLoadError, match=r"broken\.json.*vision_cfg"):
        load_clip(str(path), "random", device="cpu")
    with pytest.raises(ModelLoadError, match="not found"):
        load_clip(str(tmp_path / "absent.json"), "random", device="cpu")


def test_quickgelu_tag_loads_the_quickgelu_variant_and_says_so(tmp_path, monkeypatch):
    """A registered tag (served from a local file, no download) trained with QuickGELU."""
    from open_clip import pretrained as registry

    for name, quick in (("mini-tag", False), ("mini-tag-quickgelu", True)):
        (tmp_path / f"{name}.json").write_text(json.dumps({**MINI_CONFIG, "quick_gelu": quick}))
    factory = open_clip.factory
    monkeypatch.setattr(factory, "_MODEL_CONFIG_PATHS", list(factory._MODEL_CONFIG_PATHS))
    monkeypatch.setattr(factory, "_MODEL_CONFIGS", dict(factory._MODEL_CONFIGS))
    open_clip.add_model_config(tmp_path)
    source = load_clip(str(tmp_path / "mini-tag-quickgelu.json"), "random:5", device="cpu")
    weights = tmp_path / "mini.pt"
    torch.save(source.model.state_dict(), weights)
    monkeypatch.setitem(
        registry._PRETRAINED,
        "mini-tag",
        {"fake_openai": {"file": str(weights), "quick_gelu": True}},
    )

    clip = load_clip("mini-tag", "fake-openai", device="cpu")
    assert clip.identity["model"] == "mini-tag-quickgelu"
    assert clip.identity["model_requested"] == "mini-tag"
    assert "QuickGELU" in clip.identity["note"]
    assert clip.pretrained == clip.identity["pretrained"] == "fake_openai"
    assert type(clip.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    torch.testing.assert_close(_texts(clip), _texts(source), rtol=0, atol=0)


# ---------------------------------------------------------------------------- local checkpoints
def test_pt_and_safetensors_checkpoints_equal_the_recipe(tiny_clip, tmp_path: Path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    files = {
        "plain.pt": lambda p: torch.save(state, p),
        "wrapped.pth": lambda p: torch.save(
            {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, p
        ),
        "weights.safetensors": lambda p: save_file(state, str(p)),
        # the pre-1.6 format, which cannot be memory-mapped
        "legacy.pt": lambda p: torch.save(state, p, _use_new_zipfile_serialization=False),
    }
    reference = (_texts(tiny_clip), _image_features(tiny_clip))
    for name, write in files.items():
        path = tmp_path / name
        write(path)
        clip = load_clip("scclip-tiny", str(path), device="cpu")
        assert state_dict_sha256(clip.model.state_dict()) == GOLDEN_TINY_SHA256, name
        assert clip.pretrained == str(path.resolve())
        assert len(clip.identity["weights_sha256"]) == 64
        torch.testing.assert_close(_texts(clip), reference[0], rtol=0, atol=0)
        torch.testing.assert_close(_image_features(clip), reference[1], rtol=0, atol=0)


def test_openai_torchscript_archive_is_read(tiny_clip, tmp_path: Path):
    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(tiny_clip.model).save(str(path))
    clip = load_clip("scclip-tiny", str(path), device="cpu")
    assert state_dict_sha256(clip.model.state_dict()) == GOLDEN_TINY_SHA256


class _Payload:
    """Unpickling this would create ``marker`` (it names ``open`` as its constructor)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "payload": _Payload(marker)}, path)
    with pytest.raises(ModelLoadError, match=r"refusing to load.*could run code"):
        load_clip("scclip-tiny", str(path), device="cpu")
    assert not marker.exists()


def test_unreadable_and_mismatched_checkpoints(tiny_clip, tmp_path: Path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"could not read weights file .*garbage\.pt"):
        load_clip("scclip-tiny", str(garbage), device="cpu")

    partial = {k: v for k, v in tiny_clip.model.state_dict().items() if k != "visual.proj"}
    partial["visual.conv1.weight"] = torch.zeros(8, 3, 16, 16)
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ModelLoadError, match=r"missing: visual\.proj.*wrong shape: visual\.conv1"):
        load_clip("scclip-tiny", str(tmp_path / "partial.pt"), device="cpu")

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="does not hold a state dict"):
        read_state_dict(tmp_path / "list.pt")

    with pytest.raises(ModelLoadError, match="not found"):
        load_clip("scclip-tiny", str(tmp_path / "absent.safetensors"), device="cpu")


# ---------------------------------------------------------------------------- tags offline
def test_missing_tag_weights_offline_explain_what_to_do(offline_hub):
    with pytest.raises(ModelLoadError) as info:
        load_clip("ViT-B-16", "openai", device="cpu")
    message = str(info.value)
    assert "ViT-B-16" in message and "'openai'" in message
    assert "--pretrained /path/to/weights.pt" in message
    assert "Hugging Face cache" in message
    assert not any(offline_hub.rglob("*.bin"))


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(ModelLoadError, match=r"'laion9000'.*ViT-B-16.*openai"):
        load_clip("ViT-B-16", "laion9000", device="cpu")


# ---------------------------------------------------------------------------- refused towers
def test_resnet_timm_and_attentional_pool_configs_are_refused_before_building():
    with pytest.raises(ModelLoadError, match="RN50 has a ResNet vision tower"):
        load_clip("RN50", "random", device="cpu")
    with pytest.raises(ModelLoadError, match="timm vision tower"):
        load_clip("ViT-B-16-SigLIP", "random", device="cpu")
    with pytest.raises(ModelLoadError, match="attentional pooling"):
        load_clip("coca_ViT-B-32", "random", device="cpu")


def _mini_vit(**kwargs) -> VisionTransformer:
    return VisionTransformer(
        image_size=32,
        patch_size=16,
        width=32,
        layers=2,
        heads=2,
        mlp_ratio=2.0,
        output_dim=16,
        **kwargs,
    )


def test_built_towers_sc_clip_cannot_calibrate_are_refused():
    check_vision_tower(_mini_vit())  # the supported kind passes
    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=16, heads=2, image_size=64, width=8)
    with pytest.raises(ModelLoadError, match="ResNet"):
        check_vision_tower(resnet)
    with pytest.raises(ModelLoadError, match="attentional pooling"):
        check_vision_tower(_mini_vit(attentional_pool=True))
    no_qkv = _mini_vit()
    no_qkv.transformer.resblocks[1].attn = torch.nn.Identity()
    with pytest.raises(ModelLoadError, match=r"block 1 lacks attn\.in_proj_weight, attn\.out_proj"):
        check_vision_tower(no_qkv)
    no_ln = _mini_vit()
    del no_ln.transformer.resblocks[0].ln_1
    with pytest.raises(ModelLoadError, match="block 0 lacks ln_1"):
        check_vision_tower(no_ln)


# ---------------------------------------------------------------------------- devices / precision
def test_precision_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("fp32", "cuda") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", "cpu")
    with pytest.raises(ConfigError, match="unknown precision 'float8'"):
        resolve_dtype("float8", "cpu")


def test_device_resolution(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    for asked in ("cuda", "cuda:1"):
        with pytest.raises(ModelLoadError, match=r"CUDA is not available.*--device cpu"):
            resolve_device(asked)
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_bfloat16_on_cpu_keeps_layer_norms_in_float32():
    clip = load_clip("scclip-tiny", "random:7", device="cpu", precision="bfloat16")
    assert clip.dtype == torch.bfloat16
    visual = clip.model.visual
    assert visual.conv1.weight.dtype == torch.bfloat16
    assert visual.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.bfloat16
    assert visual.ln_post.weight.dtype == torch.float32
    assert torch.isfinite(_texts(clip).float()).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_defaults_to_float16_and_matches_float32(tiny_clip):
    clip = load_clip("scclip-tiny", "random:7", device="cuda")
    assert clip.dtype == torch.float16 and clip.device.type == "cuda"
    pixels = torch.linspace(-1, 1, 3 * 224 * 224).reshape(1, 3, 224, 224)
    with torch.inference_mode():
        half = clip.model.encode_image(pixels.to("cuda", torch.float16)).float().cpu()
    full = _image_features(tiny_clip)
    cosine = torch.nn.functional.cosine_similarity(half, full).item()
    assert cosine > 0.999


def test_segmenter_load_releases_the_text_tower(tmp_path: Path):
    """Segmenting needs the vision tower only: the text tower is freed once the vocabulary is
    embedded, segmenting still works, and embedding more text says why it cannot."""
    import numpy as np

    from scclip_cli.errors import ModelLoadError
    from scclip_cli.model.text_embeddings import encode_queries
    from scclip_cli.predict.segmenter import Segmenter

    segmenter = Segmenter.load(["cat", "dog"], model="scclip-tiny", pretrained="random:7")
    clip = segmenter.clip
    assert not clip.has_text_tower
    assert clip.model.transformer is None and clip.model.token_embedding is None
    names = [name for name, _ in clip.model.named_parameters()]
    assert names and all(name.startswith(("visual.", "logit_scale")) for name in names)
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert segmenter.segment(image).labels.shape == (40, 50)
    with pytest.raises(ModelLoadError, match="text tower was released"):
        encode_queries(clip, ["bird"], ["a photo of a {}."])
