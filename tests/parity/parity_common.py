"""Shared pieces of the diffusers parity suite: the small DC-AE configurations, running our tools, comparing with
diffusers' AutoencoderDC, and writing weights under the original efficientvit names."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DCAE_BIN", REPO / "build" / "bin"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

FORWARD_RTOL = 1e-5  # max |ours - diffusers| / max |diffusers|, per output tensor
GRAD_RTOL = 1e-4  # the same, per parameter gradient

STAGE_TYPES = ["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"]
WIDTHS = [16, 32, 32, 64]  # f = 8; for 32x40 images the EViT stages see 8x10 (linear) and 4x5 (quadratic) maps
CONFIGS = {
    # in/mix family: stage 0 empty (pixel-unshuffle stem, pixel-shuffle head), BatchNorm + ReLU decoder ResBlocks.
    "in_like": dict(
        latent_channels=8, attention_head_dim=32, encoder_block_types=STAGE_TYPES, decoder_block_types=STAGE_TYPES,
        encoder_block_out_channels=WIDTHS, decoder_block_out_channels=WIDTHS,
        encoder_layers_per_block=[0, 1, 1, 1], decoder_layers_per_block=[0, 2, 1, 1],
        encoder_qkv_multiscales=[[], [], [], [5]], decoder_qkv_multiscales=[[], [], [], [5]],
        downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle",
        decoder_norm_types=["batch_norm", "batch_norm", "rms_norm", "rms_norm"],
        decoder_act_fns=["relu", "relu", "silu", "silu"], scaling_factor=0.3189),
    # Sana family: plain stem conv, stride-2 conv down, interpolate up, multi-scale attention, broadcast strings.
    "sana_like": dict(
        latent_channels=8, attention_head_dim=32, encoder_block_types=STAGE_TYPES, decoder_block_types=STAGE_TYPES,
        encoder_block_out_channels=WIDTHS, decoder_block_out_channels=WIDTHS,
        encoder_layers_per_block=[1, 1, 1, 1], decoder_layers_per_block=[1, 1, 1, 1],
        encoder_qkv_multiscales=[[], [], [5], [5]], decoder_qkv_multiscales=[[], [], [5], [5]],
        downsample_block_type="Conv", upsample_block_type="interpolate", decoder_norm_types="rms_norm",
        decoder_act_fns="silu", scaling_factor=0.41407),
    # The #12169 fields off their defaults, BatchNorm in the full-resolution stage, uneven depths.
    "turbo_like": dict(
        latent_channels=16, attention_head_dim=32, encoder_block_types=STAGE_TYPES, decoder_block_types=STAGE_TYPES,
        encoder_block_out_channels=WIDTHS, decoder_block_out_channels=WIDTHS,
        encoder_layers_per_block=[1, 1, 2, 1], decoder_layers_per_block=[1, 2, 1, 2],
        encoder_qkv_multiscales=[[], [], [5], []], decoder_qkv_multiscales=[[], [], [], [5]],
        downsample_block_type="pixel_unshuffle", upsample_block_type="interpolate",
        decoder_norm_types=["batch_norm", "rms_norm", "rms_norm", "rms_norm"],
        decoder_act_fns=["relu", "silu", "silu", "silu"], encoder_out_shortcut=False, decoder_in_shortcut=False,
        decoder_conv_act_fn="silu", scaling_factor=1.0),
}
HAS_BATCH_NORM = [name for name, c in CONFIGS.items() if "batch_norm" in c["decoder_norm_types"]]
MEASURED = {}  # test -> max relative error, printed at the end (pytest -s)


def tool(name, *args, check=True):
    exe = BIN / name
    if not exe.exists():
        pytest.fail(f"{exe} is missing: build the tools first (ninja -C build {name}) or set DCAE_BIN")
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


def rel_err(ours, ref):
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} vs diffusers {tuple(ref.shape)}"
    return (ours - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


def record(key, value):
    MEASURED[key] = max(MEASURED.get(key, 0.0), value)


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2).contiguous()


def images(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


def write_config(path, config):
    path.write_text(json.dumps(config, indent=2))
    return path


def randomize(model, seed):
    """Every float tensor random (norm affines and BatchNorm statistics too), so nothing passes by being 1 or 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(3)
    return model


def ours_forward(tmp, x, *model_args, grad=True, train=False, extra=()):
    """Runs dcae-parity on NCHW images x; returns its outputs with latents/reconstructions as NCHW."""
    inp, out = tmp / "images.safetensors", tmp / "ours.safetensors"
    save_file({"images": x.permute(0, 2, 3, 1).contiguous()}, str(inp))
    tool("dcae-parity", *model_args, "--input", inp, "--output", out, *(["--grad"] if grad else []),
         *(["--train"] if train else []), *extra)
    result = load_file(str(out))
    for key in ("latents", "reconstructions"):
        result[key] = nhwc_to_nchw(result[key])
    return result


def reference_forward(model, x, grad=True):
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grad):
        latents = model.encode(x).latent
        recon = model.decode(latents).sample
        loss = (recon - x).abs().mean() if recon.shape == x.shape else None
        if grad:
            loss.backward()
    return latents.detach(), recon.detach(), loss


def compare(key, ours, model, latents, recon, loss, grad=True, buffers=False):
    errors = {"latents": rel_err(ours["latents"], latents), "reconstructions": rel_err(ours["reconstructions"], recon)}
    if loss is not None:
        errors["loss"] = rel_err(ours["loss"], loss)
    for name, err in errors.items():
        record(f"{key} {name}", err)
        assert err <= FORWARD_RTOL, f"{key}: {name} differ from diffusers by {err:.2e} (relative to max)"
    if grad:
        worst = (0.0, "")
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            worst = max(worst, (rel_err(ours[f"grad.{name}"], p.grad), name))
        record(f"{key} gradients", worst[0])
        assert worst[0] <= GRAD_RTOL, f"{key}: gradient of {worst[1]} differs by {worst[0]:.2e} (relative to its max)"
    if buffers:
        worst = (0.0, "")
        for name, b in model.named_buffers():
            if b.dtype == torch.int64:
                assert ours[f"state.{name}"].item() == b.item(), name
            else:
                worst = max(worst, (rel_err(ours[f"state.{name}"], b), name))
        record(f"{key} running stats", worst[0])
        assert worst[0] <= FORWARD_RTOL, f"{key}: {worst[1]} after the pass differs by {worst[0]:.2e}"



BLOCK_PARTS = [("conv1.", "main.conv1.conv."), ("conv2.", "main.conv2.conv."), ("norm.", "main.conv2.norm."),
               ("attn.norm_out.", "context_module.main.proj.norm."),
               ("conv_out.conv_inverted.", "local_module.main.inverted_conv.conv."),
               ("conv_out.conv_depth.", "local_module.main.depth_conv.conv."),
               ("conv_out.conv_point.", "local_module.main.point_conv.conv."),
               ("conv_out.norm.", "local_module.main.point_conv.norm.")]
FIXED_PARTS = [("encoder.conv_in.conv.", "encoder.project_in.conv.conv."), ("encoder.conv_in.", "encoder.project_in.conv."),
               ("encoder.conv_out.", "encoder.project_out.main.op_list.0.conv."),
               ("decoder.conv_in.", "decoder.project_in.main.conv."), ("decoder.norm_out.", "decoder.project_out.op_list.0."),
               ("decoder.conv_out.conv.", "decoder.project_out.op_list.2.conv.conv."),
               ("decoder.conv_out.", "decoder.project_out.op_list.2.conv.")]


def original_state(model, config):
    """The model's weights under the efficientvit module tree's names (fused 4-D qkv and projection convs)."""
    plain_down = config["downsample_block_type"] != "pixel_unshuffle"
    out, fused = {}, {}
    for key, value in model.state_dict().items():
        m = re.match(r"^(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\.(\d+)\.(.*)$", key)
        if not m:
            prefix, rest = next((b, key[len(a):]) for a, b in FIXED_PARTS if key.startswith(a))
            out[prefix + rest] = value
            continue
        side, i, j, part = m.groups()
        base = f"{side}.stages.{i}.op_list.{j}."
        if part in ("attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight"):
            fused.setdefault(base, []).append(value)
        elif part == "attn.to_out.weight":
            out[base + "context_module.main.proj.conv.weight"] = value[:, :, None, None]
        elif (b := re.match(r"attn\.to_qkv_multiscale\.(\d+)\.proj_(in|out)\.weight", part)):
            out[base + f"context_module.main.aggreg.{b[1]}.{0 if b[2] == 'in' else 1}.weight"] = value
        elif part.startswith("conv."):
            out[base + ("main.conv." if side == "encoder" and plain_down else "main.conv.conv.") + part[5:]] = value
        else:
            a, b = next((a, b) for a, b in BLOCK_PARTS if part.startswith(a))
            out[base + b + part[len(a):]] = value
    for base, (q, k, v) in fused.items():
        out[base + "context_module.main.qkv.conv.weight"] = torch.cat([q, k, v])[:, :, None, None]
    return {k: v.contiguous() for k, v in out.items()}


def gaussian_ssim(a, b):
    """torchmetrics' SSIM on uint8 HWC arrays: reflect pad 5, 11x11 Gaussian (sigma 1.5), crop the pad, mean."""
    x = torch.from_numpy(a).double().permute(2, 0, 1)[None]
    y = torch.from_numpy(b).double().permute(2, 0, 1)[None]
    d = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(d / 1.5) ** 2 / 2)
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)
    x, y = F.pad(x, (5, 5, 5, 5), mode="reflect"), F.pad(y, (5, 5, 5, 5), mode="reflect")
    mu = F.conv2d(torch.cat([x, y, x * x, y * y, x * y]), kernel, groups=3)
    mx, my, xx, yy, xy = mu.split(1)
    vx, vy, cov = (xx - mx**2).clamp(min=0), (yy - my**2).clamp(min=0), xy - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s[..., 5:-5, 5:-5].mean().item()


def to_uint8(t):
    return (255 * (t * 0.5 + 0.5) + 0.5).floor().clamp(0, 255).to(torch.uint8)
