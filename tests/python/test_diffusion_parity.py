"""The diffusion transformers (nn/diffusion: DiT, UViT/USiT) against a PyTorch reference (diffusion_reference.py,
written from efficientvit's dit.py/uvit.py), CPU, float32.

Same weights (the reference's state_dict, every tensor random so nothing passes by being 0 or 1, written as
safetensors and loaded by name with every key required), same latents, timesteps and labels (the no-class id
included): outputs within 1e-5 and the gradients of every parameter and of the input within 1e-4, each relative to
its largest magnitude. Our side runs through the test tool dcae-diffusion-parity (built with the nn tests).

Run: build/pyenv/bin/python -m pytest -q tests/python/test_diffusion_parity.py   (DCAE_BIN = folder of the tools)
Pass -s to see the measured errors.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusion_reference import DiT, UViT, sincos_2d, timestep_embedding  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DCAE_BIN", REPO / "build" / "bin"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
FORWARD_RTOL, GRAD_RTOL = 1e-5, 1e-4
MEASURED = {}

SHAPE = dict(in_channels=4, input_size=8, num_classes=10)
CONFIGS = {  # name -> (zoo name, overrides); each covers a different path
    "uvit_p2_time_mlp": ("uvit-s", dict(depth=4, hidden_size=32, num_heads=4, patch_size=2, mlp_time_embed=True,
                                        qkv_bias=True)),
    "uvit_p1": ("usit-h", dict(depth=2, hidden_size=24, num_heads=3)),
    "uvit_silu": ("uvit-s", dict(depth=2, hidden_size=16, num_heads=2, activation="silu")),
    "dit_p2_sigma": ("dit-xl", dict(depth=2, hidden_size=32, num_heads=4, patch_size=2, frequency_embedding_size=20)),
    "dit_p1": ("dit-s", dict(depth=1, hidden_size=24, num_heads=2, learn_sigma=False)),
}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nmax relative error vs the PyTorch reference:")
    for key, value in sorted(MEASURED.items()):
        print(f"  {key:45s} {value:.2e}")


def tool(*args):
    exe = BIN / "dcae-diffusion-parity"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: build it first (ninja -C build dcae-diffusion-parity) or set DCAE_BIN")
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dcae-diffusion-parity {' '.join(map(str, args))}:\n{result.stderr}"
    return result


def model_args(name):
    zoo_name, overrides = CONFIGS[name]
    return ["--model", zoo_name, "--in-channels", SHAPE["in_channels"], "--input-size", SHAPE["input_size"],
            "--num-classes", SHAPE["num_classes"], "--overrides", json.dumps(overrides)]


def reference(name):
    zoo_name, overrides = CONFIGS[name]
    cls = DiT if zoo_name.startswith("dit") else UViT
    defaults = {"uvit-s": dict(depth=12, hidden_size=512, num_heads=8)}.get(zoo_name, {})
    return cls(**SHAPE, **{**defaults, **overrides})


def rel_err(ours, ref):
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"
    return (ours - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_and_gradients_match_the_reference(tmp_path, name):
    torch.manual_seed(len(name))
    model = reference(name)
    with torch.no_grad():  # every weight random, biases and norms included; pre-activations O(1) to O(3)
        for key, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if p.dim() > 1:
                fan_in = p[0].numel() if "embedding_table" not in key else 1
                p.copy_(torch.randn_like(p) * 1.5 / fan_in ** 0.5)
            else:
                p.copy_((1.0 if "norm" in key and key.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "weights.safetensors"))

    g = torch.Generator().manual_seed(3)
    n, c, s = 3, SHAPE["in_channels"], SHAPE["input_size"]
    x = torch.randn(n, c, s, s, generator=g).requires_grad_(True)
    t = torch.tensor([0.0, 417.25, 999.0])
    labels = torch.tensor([0, 7, SHAPE["num_classes"]])  # the last is the no-class id
    out = model(x, t, labels)
    direction = torch.randn(out.shape, generator=g)
    (out * direction).sum().backward()

    save_file({"x": x.detach().permute(0, 2, 3, 1).contiguous(), "t": t, "labels": labels,
               "direction": direction.permute(0, 2, 3, 1).contiguous()}, str(tmp_path / "inputs.safetensors"))
    tool(*model_args(name), "--weights", tmp_path / "weights.safetensors", "--inputs", tmp_path / "inputs.safetensors",
         "--output", tmp_path / "ours.safetensors")
    ours = load_file(str(tmp_path / "ours.safetensors"))

    err = rel_err(ours["output"].permute(0, 3, 1, 2), out)
    MEASURED[f"{name} output"] = err
    assert err <= FORWARD_RTOL, f"{name}: output differs by {err:.2e}"
    worst = (rel_err(ours["grad.x"].permute(0, 3, 1, 2), x.grad), "x")
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert {k[5:] for k in ours if k.startswith("grad.") and k != "grad.x"} == trainable
    for key, p in model.named_parameters():
        if p.requires_grad:
            worst = max(worst, (rel_err(ours[f"grad.{key}"], p.grad), key))
    MEASURED[f"{name} gradients"] = worst[0]
    assert worst[0] <= GRAD_RTOL, f"{name}: gradient of {worst[1]} differs by {worst[0]:.2e}"


@pytest.mark.parametrize("name", ["uvit_p2_time_mlp", "dit_p2_sigma"])
def test_our_initialisation_loads_into_the_reference_strictly(tmp_path, name):
    tool(*model_args(name), "--seed", 5, "--save-init", tmp_path / "init.safetensors")
    ours = load_file(str(tmp_path / "init.safetensors"))
    model = reference(name)
    model.load_state_dict(ours, strict=True)  # same keys, same shapes
    assert list(ours) == list(model.state_dict()) or sorted(ours) == sorted(model.state_dict())
    if name.startswith("dit"):
        d, grid = CONFIGS[name][1]["hidden_size"], SHAPE["input_size"] // CONFIGS[name][1]["patch_size"]
        table = torch.from_numpy(sincos_2d(d, grid)).float()[None]
        assert rel_err(ours["pos_embed"], table) < 1e-6
        for key, value in ours.items():
            if "adaLN_modulation" in key or key.startswith("final_layer.linear"):
                assert value.abs().max() == 0, key


def test_float64_timestep_embedding_is_the_reference_up_to_its_float32_rounding():
    t = torch.tensor([0.0, 1.0, 250.5, 999.0])
    ref32, ref64 = timestep_embedding(t, 256, float32=True), timestep_embedding(t, 256)
    diff = (ref32 - ref64).abs().max().item()
    MEASURED["timestep embedding f32 vs f64 (absolute)"] = diff
    assert diff < 1e-3
