# PyTorch peer of bench/diffusion_model_bench.cpp: the same diffusion transformer (tests/python/diffusion_reference.py,
# the module tree of efficientvit's dit.py/uvit.py) trained one step at a time with fp32 weights, bf16 autocast
# (PyTorch's usual mixed precision; SDPA picks its flash kernel) and fused AdamW; median step time of --iters.
#   python3 torch_diffusion_peer.py --model uvit-h --in-channels 128 --input-size 8 --batch 128 [--compile]
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.environ.get("DIFFUSION_REFERENCE_DIR", os.path.join(os.path.dirname(__file__), "..", "tests",
                                                                           "python")))
from diffusion_reference import DiT, UViT  # noqa: E402

SIZES = {"uvit-s": (UViT, 12, 512, 8), "uvit-h": (UViT, 28, 1152, 16), "uvit-2b": (UViT, 28, 2048, 32),
         "dit-xl": (DiT, 28, 1152, 16)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="uvit-h", choices=sorted(SIZES))
    ap.add_argument("--in-channels", type=int, default=128)
    ap.add_argument("--input-size", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    cls, depth, hidden, heads = SIZES[a.model]
    model = cls(a.in_channels, a.input_size, 1000, depth=depth, hidden_size=hidden, num_heads=heads).cuda().train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
    fwd = torch.compile(model) if a.compile else model
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(a.batch, a.in_channels, a.input_size, a.input_size, device="cuda", generator=g)
    out_channels = 2 * a.in_channels if cls is DiT else a.in_channels
    target = torch.randn(a.batch, out_channels, a.input_size, a.input_size, device="cuda", generator=g)
    t = torch.rand(a.batch, device="cuda", generator=g) * 999
    labels = (torch.arange(a.batch, device="cuda") * 37) % 1001

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(x, t, labels)
        loss = F.mse_loss(out.float(), target)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return loss

    for _ in range(3):
        loss = step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        step()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    ms = times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30
    mode = "torch.compile" if a.compile else "torch eager"
    print(f"| {mode} | {a.model} | {a.in_channels}c {a.input_size}x{a.input_size} | batch {a.batch} | {ms:.2f} ms | "
          f"{a.batch / ms * 1e3:.1f} img/s | peak {peak:.2f} GiB | warm-up loss {loss.item():.4f} |", flush=True)


if __name__ == "__main__":
    main()
