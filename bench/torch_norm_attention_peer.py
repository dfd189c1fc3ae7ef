# PyTorch side of the per-op CUDA benchmarks (bench/cuda_*_bench.cpp): the same ops at the same shapes, bf16,
# channels-last (NHWC) activations, eager mode, median of CUDA-event timings after warm-up. Prints the same table:
#
#   | impl | op | shape | ms | TFLOP/s | GB/s | % of limit |
#
# so that the dcae rows and the torch rows can be read side by side. Run it in the same job as the dcae benches:
#   python3 bench/torch_norm_attention_peer.py [--only norm,attention] [--reps 25]
# and softmax attention side by side with ours (bench/results/h200_sdpa.md):
#   cuda_attention_bench --sdpa > ours.txt && python3 bench/torch_norm_attention_peer.py --only sdpa --ours ours.txt
# Families register in FAMILIES below; each prints its rows with the flop and byte counts the C++ bench uses.
import argparse
import math

import torch
import torch.nn.functional as F

PEAK_TFLOPS = 790.0  # H200 dense bf16 (shared/bench/pytorch-baseline.md)
PEAK_GBPS = 4300.0   # H200 device memory copy
DEV = "cuda"
BF16 = torch.bfloat16

torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True


def median_ms(fn, warmup=5, reps=25):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def print_header():
    print("| impl | op | shape | ms | TFLOP/s | GB/s | % of limit |")
    print("| --- | --- | --- | --- | --- | --- | --- |")


def print_row(op, shape, ms, flops, nbytes):
    tflops = flops / (ms * 1e9)
    gbps = nbytes / (ms * 1e6)
    fraction = max(tflops / PEAK_TFLOPS, gbps / PEAK_GBPS)
    print(f"| torch | {op} | {shape} | {ms:.4f} | {tflops:.1f} | {gbps:.0f} | {100 * fraction:.1f} |", flush=True)


def shape_str(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


# ---- norms: DC-AE's trms2d (RMSNorm over channels, with bias) on NHWC maps -------------------------------------


def rms_norm_2d(x, weight, bias, eps=1e-5):
    # What DC-AE computes: fp32 statistics, output in the input dtype. On an NHWC tensor the channels are the last
    # dim, so F.rms_norm applies directly.
    return (F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps) + bias.float()).to(x.dtype)


def bench_norm(reps):
    for side in (64, 32):
        for channels in (512, 1024):
            shape = (8, side, side, channels)
            name = shape_str(shape) + " bf16"
            n = math.prod(shape)
            x = torch.randn(shape, device=DEV, dtype=BF16, requires_grad=True)
            w = torch.randn(channels, device=DEV, dtype=BF16, requires_grad=True)
            b = torch.randn(channels, device=DEV, dtype=BF16, requires_grad=True)
            dy = torch.randn(shape, device=DEV, dtype=BF16)
            with torch.no_grad():
                ms = median_ms(lambda: rms_norm_2d(x, w, b), reps=reps)
            print_row("rms_norm fwd", name, ms, 4 * n, 4 * n)
            y = rms_norm_2d(x, w, b)
            ms = median_ms(lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True), reps=reps)
            print_row("rms_norm bwd", name, ms, 8 * n, 6 * n)


# ---- attention: DC-AE's ReLU linear attention (LiteMLA core) and softmax SDPA ------------------------------------


def relu_linear_attention(qkv, head_dim, eps=1e-15):
    # The reference math (spec 4.2.1) on an NHWC qkv map with head-major [q, k, v] channel groups: matmuls in the
    # input dtype, the division in fp32.
    b, h, w, c3 = qkv.shape
    c = c3 // 3
    heads = c // head_dim
    x = qkv.reshape(b, h * w, heads, 3 * head_dim).permute(0, 2, 3, 1)  # [B, heads, 3d, N]
    q, k, v = x[:, :, :head_dim], x[:, :, head_dim:2 * head_dim], x[:, :, 2 * head_dim:]
    q, k = F.relu(q), F.relu(k)
    v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)  # [B, heads, d+1, N]
    vk = torch.matmul(v, k.transpose(-1, -2))                # [B, heads, d+1, d]
    out = torch.matmul(vk, q).float()                          # [B, heads, d+1, N]
    out = (out[:, :, :-1] / (out[:, :, -1:] + eps)).to(qkv.dtype)
    return out.permute(0, 3, 1, 2).reshape(b, h, w, c)


def bench_attention(reps):
    channels, head_dim, heads, batch = 1024, 32, 32, 8
    for side in (16, 32):
        shape = (batch, side, side, 3 * channels)
        name = shape_str(shape) + " d32 bf16"
        tokens = batch * side * side
        qkv = torch.randn(shape, device=DEV, dtype=BF16, requires_grad=True)
        grad = torch.randn((batch, side, side, channels), device=DEV, dtype=BF16)
        unit = 2.0 * head_dim * (head_dim + 1) * heads * tokens
        with torch.no_grad():
            ms = median_ms(lambda: relu_linear_attention(qkv, head_dim), reps=reps)
        print_row("relu_linear_attention fwd", name, ms, 2 * unit, tokens * 4 * channels * 2)
        y = relu_linear_attention(qkv, head_dim)
        ms = median_ms(lambda: torch.autograd.grad(y, qkv, grad, retain_graph=True), reps=reps)
        print_row("relu_linear_attention bwd", name, ms, 6 * unit, tokens * 7 * channels * 2)

    batch, heads, head_dim = 32, 16, 72
    for tokens in (64, 256, 1024):
        shape = (batch, heads, tokens, head_dim)
        name = shape_str(shape) + " bf16"
        q, k, v = (torch.randn(shape, device=DEV, dtype=BF16, requires_grad=True) for _ in range(3))
        g = torch.randn(shape, device=DEV, dtype=BF16)
        elements = math.prod(shape)
        flops = 4.0 * batch * heads * tokens * tokens * head_dim
        with torch.no_grad():
            ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), reps=reps)
        print_row("sdpa fwd", name, ms, flops, 4 * elements * 2)
        out = F.scaled_dot_product_attention(q, k, v)
        ms = median_ms(lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True), reps=reps)
        print_row("sdpa bwd", name, ms, 2.5 * flops, 7 * elements * 2)


# ---- softmax attention side by side: the grid of bench/cuda_attention_bench.cpp --sdpa ---------------------------


SDPA_ROWS = {}  # (op, shape) -> (ms, flops) of the torch rows, for the comparison table


def bench_sdpa(reps):
    batch, heads = 32, 16
    for head_dim in (72, 64):
        for dtype, dtype_name in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
            for tokens in (64, 256, 1024):
                shape = (batch, heads, tokens, head_dim)
                name = shape_str(shape) + " " + dtype_name
                q, k, v = (torch.randn(shape, device=DEV, dtype=dtype, requires_grad=True) for _ in range(3))
                g = torch.randn(shape, device=DEV, dtype=dtype)
                elements = math.prod(shape)
                flops = 4.0 * batch * heads * tokens * tokens * head_dim
                with torch.no_grad():
                    ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), reps=reps)
                print_row("sdpa fwd", name, ms, flops, 4 * elements * 2)
                SDPA_ROWS[("sdpa fwd", name)] = (ms, flops)
                out = F.scaled_dot_product_attention(q, k, v)
                ms = median_ms(lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True), reps=reps)
                print_row("sdpa bwd", name, ms, 2.5 * flops, 8 * elements * 2)
                SDPA_ROWS[("sdpa bwd", name)] = (ms, 2.5 * flops)


def print_sdpa_kernels():
    """Which kernels torch's SDPA runs at the DiT shape (flash / memory-efficient / cuDNN), for the notes."""
    shape = (32, 16, 1024, 72)
    q, k, v = (torch.randn(shape, device=DEV, dtype=BF16, requires_grad=True) for _ in range(3))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = F.scaled_dot_product_attention(q, k, v)
        torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
        torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
    print("torch sdpa kernels at", shape_str(shape), "bf16:", "; ".join(n[:90] for n in names))


def print_comparison(ours_path):
    """Joins the rows of `cuda_attention_bench --sdpa` (saved in ours_path) with the torch rows just measured. The
    bench prints three rows per op and shape, in this order: our kernels, cuDNN's fused attention (our kernels'
    name in the impl cell where cuDNN had no engine), and the automatic choice."""
    ours = {}  # (op, shape) -> [(ms, impl), ...] in the bench's order
    with open(ours_path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 7 and cells[0].startswith("sdpa"):
                ours.setdefault((cells[0], cells[1]), []).append((float(cells[2]), cells[6]))
    print()
    print("| op | shape | own ms | cuDNN ms | auto ms | torch ms | torch / own | torch / cuDNN | torch / auto | "
          "auto runs | auto TFLOP/s | torch TFLOP/s | auto % of 790 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, (torch_ms, flops) in SDPA_ROWS.items():
        rows = ours.get(key, [])
        if len(rows) < 3:
            print(f"| {key[0]} | {key[1]} | missing | | | {torch_ms:.4f} | | | | | | | |")
            continue
        (own_ms, _), (cudnn_ms, cudnn_impl), (auto_ms, auto_impl) = rows[:3]
        cudnn_cell = f"{cudnn_ms:.4f}" if cudnn_impl.startswith("cudnn") else f"({cudnn_impl})"
        cudnn_ratio = f"{torch_ms / cudnn_ms:.2f}" if cudnn_impl.startswith("cudnn") else ""
        auto_tflops, torch_tflops = flops / (auto_ms * 1e9), flops / (torch_ms * 1e9)
        print(f"| {key[0]} | {key[1]} | {own_ms:.4f} | {cudnn_cell} | {auto_ms:.4f} | {torch_ms:.4f} | "
              f"{torch_ms / own_ms:.2f} | {cudnn_ratio} | {torch_ms / auto_ms:.2f} | {auto_impl} | {auto_tflops:.1f} | "
              f"{torch_tflops:.1f} | {100 * auto_tflops / PEAK_TFLOPS:.1f} |", flush=True)


# ---- GLUMBConv's gate: a * silu(g) over the two channel halves ------------------------------------------------


def silu_gate(x):
    a, g = x.chunk(2, dim=-1)
    return a * F.silu(g)


def bench_glu(reps):
    for side, channels in ((32, 512), (16, 1024)):
        shape = (8, side, side, 8 * channels)
        name = shape_str(shape) + " bf16"
        outputs = math.prod(shape) // 2
        x = torch.randn(shape, device=DEV, dtype=BF16, requires_grad=True)
        dy = torch.randn((8, side, side, 4 * channels), device=DEV, dtype=BF16)
        with torch.no_grad():
            ms = median_ms(lambda: silu_gate(x), reps=reps)
        print_row("silu_gate fwd", name, ms, 6 * outputs, 6 * outputs)
        y = silu_gate(x)
        ms = median_ms(lambda: torch.autograd.grad(y, x, dy, retain_graph=True), reps=reps)
        print_row("silu_gate bwd", name, ms, 12 * outputs, 10 * outputs)


FAMILIES = {
    "norm": bench_norm,
    "attention": bench_attention,
    "glu": bench_glu,
    "sdpa": bench_sdpa,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(FAMILIES), help="comma-separated families: " + ", ".join(FAMILIES))
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--ours", help="output of cuda_attention_bench --sdpa: print the side-by-side sdpa table")
    args = parser.parse_args()
    if args.ours and "sdpa" not in args.only:
        args.only += ",sdpa"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print_header()
    for family in args.only.split(","):
        FAMILIES[family.strip()](args.reps)
    if args.ours:
        try:
            print_sdpa_kernels()
        except Exception as error:  # the profiler is a note, never a reason to lose the table
            print("torch sdpa kernels: profiler failed:", error)
        print_comparison(args.ours)


if __name__ == "__main__":
    main()
