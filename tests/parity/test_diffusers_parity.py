"""DC-AE parity with Hugging Face diffusers' AutoencoderDC (CPU, float32).

Small custom configurations cover every path: both attention forms (maps with H*W <= 32 = attention_head_dim take
diffusers' quadratic branch, larger ones the linear branch), multi-scale qkv branches, pixel-unshuffle and stride-2
conv down-sampling, pixel-shuffle and interpolate up-sampling, a stem with and without depth, BatchNorm decoder
stages in eval and train mode, and the #12169 config fields. Our side runs through the tools: dcae-export writes
diffusers folders, dcae-parity runs one forward/backward pass on given images, dcae-reconstruct does PNG round trips.

Run: build/pyenv/bin/python -m pytest -q tests/parity/test_diffusers_parity.py   (DCAE_BIN = folder of the tools)
Pass -s to see the measured errors.
"""

import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderDC
from PIL import Image
from safetensors.torch import load_file, save_file

from parity_common import (CONFIGS, HAS_BATCH_NORM, compare, gaussian_ssim, images, original_state, ours_forward,
                           randomize, record, reference_forward, rel_err, to_uint8, tool, write_config)


# ---------------------------------------------------------------------------------------------------------------
# (a) export -> diffusers loads it with zero missing / unexpected / mismatched keys

@pytest.mark.parametrize("name", CONFIGS)
def test_export_loads_in_diffusers_with_no_key_problems(exported, name):
    model, info = AutoencoderDC.from_pretrained(exported[name], output_loading_info=True)
    assert {k: list(v) for k, v in info.items()} == {k: [] for k in info}, info
    stored = load_file(str(exported[name] / "diffusion_pytorch_model.safetensors"))
    state = model.state_dict()
    assert sorted(stored) == sorted(state)
    for key, value in state.items():
        assert value.dtype == stored[key].dtype and torch.equal(value, stored[key]), key
    for field, value in CONFIGS[name].items():
        expected = [value] * 4 if field in ("decoder_norm_types", "decoder_act_fns") and isinstance(value, str) else value
        assert model.config[field] == expected or list(model.config[field]) == expected, field


def test_published_configuration_export_loads_in_diffusers(tmp_path):
    tool("dcae-export", "--model", "dc-ae-f32c32-in-1.0", "--init", "random", "--seed", 3, "--dtype", "bf16",
         "--out", tmp_path / "f32c32")
    model, info = AutoencoderDC.from_pretrained(tmp_path / "f32c32", output_loading_info=True)
    assert {k: list(v) for k, v in info.items()} == {k: [] for k in info}, info
    assert model.config.scaling_factor == pytest.approx(0.3189)
    assert sum(p.numel() for p in model.parameters()) == 323356460


# ---------------------------------------------------------------------------------------------------------------
# (b, c, e) same weights and images: encode/decode within 1e-5, L1 gradients within 1e-4, BatchNorm train mode

@pytest.mark.parametrize("name,mode", [(n, "eval") for n in CONFIGS] + [(n, "train") for n in HAS_BATCH_NORM])
def test_forward_and_gradients_match_diffusers(exported, tmp_path, name, mode):
    model = AutoencoderDC.from_pretrained(exported[name])
    model.train(mode == "train")
    x = images(2, 32, 40, seed=1)
    ours = ours_forward(tmp_path, x, "--model-dir", exported[name], train=mode == "train")
    compare(f"{name} {mode}", ours, model, *reference_forward(model, x), buffers=mode == "train")


# ---------------------------------------------------------------------------------------------------------------
# (d) the reverse direction: diffusers save_pretrained -> our import -> same outputs and gradients

@pytest.mark.parametrize("name", CONFIGS)
def test_diffusers_saved_model_imports_with_the_same_outputs(tmp_path, name):
    torch.manual_seed(5)
    model = randomize(AutoencoderDC(**CONFIGS[name]), seed=6).eval()
    model.save_pretrained(tmp_path / "theirs")
    x = images(2, 32, 40, seed=2)
    ours = ours_forward(tmp_path, x, "--model-dir", tmp_path / "theirs")
    compare(f"{name} diffusers-saved", ours, model, *reference_forward(model, x))


def test_diffusers_fp16_variant_imports(tmp_path):
    torch.manual_seed(7)
    model = randomize(AutoencoderDC(**CONFIGS["in_like"]), seed=8)
    model.to(torch.float16).save_pretrained(tmp_path / "half", variant="fp16")
    reference = AutoencoderDC.from_pretrained(tmp_path / "half", variant="fp16", torch_dtype=torch.float32).eval()
    x = images(1, 32, 32, seed=3)
    ours = ours_forward(tmp_path, x, "--model-dir", tmp_path / "half", "--variant", "fp16", grad=False)
    compare("in_like fp16-file", ours, reference, *reference_forward(reference, x, grad=False), grad=False)


def test_bf16_model_stays_within_bf16_accuracy(exported, tmp_path):
    """Our model loaded as bf16 (f32 accumulation inside the kernels) vs diffusers in f32: ~1e-2 relative."""
    model = AutoencoderDC.from_pretrained(exported["sana_like"]).eval()
    x = images(2, 32, 40, seed=6)
    ours = ours_forward(tmp_path, x, "--model-dir", exported["sana_like"], "--dtype", "bf16", grad=False)
    latents, recon, _ = reference_forward(model, x, grad=False)
    for key, ref in (("latents", latents), ("reconstructions", recon)):
        assert ours[key].dtype == torch.bfloat16
        err = ((ours[key].double() - ref.double()).norm() / ref.double().norm()).item()
        record(f"sana_like bf16 {key} (relative L2)", err)
        assert 1e-4 < err < 3e-2, f"bf16 {key}: relative L2 error {err:.2e}"


def test_export_from_our_checkpoint_and_from_original_naming(exported, tmp_path):
    cfg = write_config(tmp_path / "cfg.json", CONFIGS["in_like"])
    # --format safetensors, then that checkpoint back to a diffusers folder: the same tensors as the direct export.
    tool("dcae-export", "--config", cfg, "--init", "random", "--seed", 10, "--format", "safetensors",
         "--out", tmp_path / "ours.safetensors")
    tool("dcae-export", "--checkpoint", tmp_path / "ours.safetensors", "--config", cfg, "--out", tmp_path / "again")
    direct = load_file(str(exported["in_like"] / "diffusion_pytorch_model.safetensors"))
    again = load_file(str(tmp_path / "again" / "diffusion_pytorch_model.safetensors"))
    assert sorted(direct) == sorted(again) and all(torch.equal(direct[k], again[k]) for k in direct)
    # An original-naming checkpoint is detected by its keys and renamed; bf16 output keeps the int64 counters.
    torch.manual_seed(13)
    model = randomize(AutoencoderDC(**CONFIGS["in_like"]), seed=14)
    save_file(original_state(model, CONFIGS["in_like"]), str(tmp_path / "model.safetensors"))
    tool("dcae-export", "--checkpoint", tmp_path / "model.safetensors", "--config", cfg, "--dtype", "bf16",
         "--out", tmp_path / "converted")
    converted = load_file(str(tmp_path / "converted" / "diffusion_pytorch_model.safetensors"))
    state = model.state_dict()
    assert sorted(converted) == sorted(state)
    for key, value in state.items():
        want = value if value.dtype == torch.int64 else value.to(torch.bfloat16)
        assert converted[key].dtype == want.dtype and torch.equal(converted[key], want), key


# ---------------------------------------------------------------------------------------------------------------
# Tiled encode/decode against diffusers' enable_tiling (latent-space and pixel-space blending)

@pytest.mark.parametrize("height,width", [(64, 48), (60, 44)])
def test_tiled_encode_decode_matches_diffusers(tmp_path, height, width):
    torch.manual_seed(9)
    model = randomize(AutoencoderDC(**CONFIGS["sana_like"]), seed=10).eval()
    model.save_pretrained(tmp_path / "m")
    model.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                        tile_sample_stride_width=16)
    x = images(1, height, width, seed=4)
    ours = ours_forward(tmp_path, x, "--model-dir", tmp_path / "m", grad=False, extra=("--tile", 32, "--tile-stride", 16))
    latents, recon, loss = reference_forward(model, x, grad=False)
    assert latents.shape[-2:] == (height // 8, width // 8)
    compare(f"tiled {height}x{width}", ours, model, latents, recon, loss, grad=False)
    if height % 8 == 0 and width % 8 == 0:
        model.disable_tiling()
        assert rel_err(ours["latents"], model.encode(x).latent) > 1e-3  # the tiles really were blended


# ---------------------------------------------------------------------------------------------------------------
# Original efficientvit checkpoints: our importer vs diffusers' single-file converter

@pytest.mark.parametrize("name", ["in_like", "sana_like"])
def test_efficientvit_checkpoint_import_matches_diffusers_converter(tmp_path, name):
    from diffusers.loaders.single_file_utils import convert_autoencoder_dc_checkpoint_to_diffusers

    torch.manual_seed(11)
    model = randomize(AutoencoderDC(**CONFIGS[name]), seed=12).eval()
    original = original_state(model, CONFIGS[name])
    assert "decoder.stages.1.op_list.0.main.conv.conv.bias" in original  # what detection looks for
    # diffusers' own converter maps our synthetic original file back onto the model exactly.
    converted = convert_autoencoder_dc_checkpoint_to_diffusers(dict(original))
    state = model.state_dict()
    assert sorted(converted) == sorted(state)
    for key in state:
        assert torch.equal(converted[key], state[key]), key
    save_file(original, str(tmp_path / "model.safetensors"))
    cfg = write_config(tmp_path / "config.json", CONFIGS[name])
    x = images(1, 32, 40, seed=5)
    ours = ours_forward(tmp_path, x, "--efficientvit", tmp_path / "model.safetensors", "--config", cfg, grad=False)
    compare(f"{name} efficientvit-import", ours, model, *reference_forward(model, x, grad=False), grad=False)


# ---------------------------------------------------------------------------------------------------------------
# dcae-reconstruct: PNG round trip, PSNR and SSIM (uint8, torchmetrics' SSIM algorithm) and the CLI

def test_reconstruct_tool_images_psnr_and_ssim(exported, tmp_path):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    yy, xx = np.mgrid[0:45, 0:50]
    for i in range(2):  # smooth images with some texture; 45x50 is centre-cropped to 40x48
        base = np.stack([np.sin(xx / (5 + 3 * i) + c) * np.cos(yy / (7 + c)) for c in range(3)], -1)
        pixels = np.clip(127.5 + 90 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(inputs / f"img{i}.png")
    model = AutoencoderDC.from_pretrained(exported["in_like"]).eval()
    for tile in (0, 16):
        out = tmp_path / f"out{tile}"
        result = tool("dcae-reconstruct", "--model-dir", exported["in_like"], "--input", inputs, "--output", out,
                      "--tile", tile, "--tile-stride", 8 if tile else 0)
        assert "average over 2 images" in result.stdout
        rows = [line.split("\t") for line in (out / "metrics.tsv").read_text().splitlines()[1:]]
        assert [r[0] for r in rows] == ["img0.png", "img1.png"]
        if tile:
            model.enable_tiling(tile_sample_min_height=16, tile_sample_min_width=16, tile_sample_stride_height=8,
                                tile_sample_stride_width=8)
        for name, _, _, psnr, ssim in rows:
            original = np.array(Image.open(inputs / name))[2:42, 1:49]
            recon = np.array(Image.open(out / name))
            assert recon.shape == original.shape == (40, 48, 3)
            x = torch.from_numpy(original).permute(2, 0, 1)[None].float() / 127.5 - 1
            with torch.no_grad():
                reference = to_uint8(model.decode(model.encode(x).latent).sample)[0].permute(1, 2, 0).numpy()
            diff = np.abs(recon.astype(int) - reference.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"{name}: PNG differs from diffusers' reconstruction"
            mse = np.mean((original.astype(np.float64) - recon.astype(np.float64)) ** 2)
            assert float(psnr) == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-5)
            assert float(ssim) == pytest.approx(gaussian_ssim(original, recon), abs=1e-5)


def test_tools_help_and_one_line_errors(tmp_path):
    for name in ("dcae-export", "dcae-reconstruct", "dcae-parity"):
        result = tool(name, "--help")
        assert result.returncode == 0 and "--help" in result.stdout and name in result.stdout
    cases = [
        (("dcae-reconstruct", "--model-dir", tmp_path / "nope", "--input", tmp_path, "--output", tmp_path / "o"),
         "does not exist"),
        (("dcae-export", "--model", "dc-ae-f16c4", "--init", "random", "--out", tmp_path / "x"), "unknown DC-AE model"),
        (("dcae-export", "--model", "dc-ae-f32c32-in-1.0", "--out", tmp_path / "x"), "--init random or --checkpoint"),
        (("dcae-export", "--model", "dc-ae-f32c32-in-1.0", "--init", "random", "--dtype", "f8", "--out", tmp_path / "x"),
         "--dtype must be f32, bf16 or f16"),
        (("dcae-reconstruct", "--input", tmp_path), "model-dir"),
    ]
    for args, message in cases:
        result = tool(*args, check=False)
        errors = [line for line in result.stderr.splitlines() if "error" in line or "required" in line]
        assert result.returncode != 0 and len(errors) == 1 and message in errors[0], (args, result.stderr)
