#!/usr/bin/env python3
"""PyTorch's side of the CUDA op benchmarks (bench/cuda_<family>_bench.cpp): the same ops at the same shapes, bf16,
channels_last activations, cudnn.benchmark on (it times engines like our autotuner), TF32 off; warm-up, then the
median of 25 runs timed with torch.cuda.Event. Prints the table our benchmarks print, row for row.

  python bench/torch_ops_peer.py [family ...]            families: see BENCHES (all when none is named)
  python bench/torch_ops_peer.py conv2d --compare ours.txt
      reads our benchmark's output and prints, per row, our ms, PyTorch's ms and PyTorch-time / our-time
      (> 1: we are faster).

One call on the GPU machine runs both, e.g.
  ./build/bin/cuda_conv2d_bench | tee ours.txt && python bench/torch_ops_peer.py conv2d --compare ours.txt
Families are independent functions registered in BENCHES, so each op family adds its own.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

PEAK_TFLOPS = 790.0  # H200 dense bf16 (shared/bench/pytorch-baseline.md)
PEAK_GBPS = 4300.0   # H200 memory copy

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True


def median_ms(fn, warmup=5, reps=25):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def print_header():
    print(f"| {'op':<18} | {'shape':<44} | {'ms':>9} | {'TFLOP/s':>8} | {'GB/s':>8} | {'% limit':>8} | {'impl':<18} |")
    print("|" + "-" * 20 + "|" + "-" * 46 + "|" + "-" * 11 + "|" + "-" * 10 + "|" + "-" * 10 + "|" + "-" * 10 + "|"
          + "-" * 20 + "|")


def print_row(op, shape, ms, flops, nbytes, impl="torch"):
    tflops = flops / (ms * 1e-3) / 1e12
    gbps = nbytes / (ms * 1e-3) / 1e9
    percent = 100.0 * max(tflops / PEAK_TFLOPS, gbps / PEAK_GBPS)
    print(f"| {op:<18} | {shape:<44} | {ms:9.4f} | {tflops:8.1f} | {gbps:8.1f} | {percent:7.1f}% | {impl:<18} |",
          flush=True)
    return (op, shape, ms)


def bench_matmul():
    rows = []
    s = 8192
    for dtype, name in [(torch.bfloat16, "bf16"), (torch.float16, "f16")]:
        a = torch.randn(s, s, device="cuda", dtype=dtype)
        b = torch.randn(s, s, device="cuda", dtype=dtype)
        flops, nbytes = 2.0 * s ** 3, 3.0 * s * s * a.element_size()
        rows.append(print_row("matmul nn", f"8192x8192x8192 {name}", median_ms(lambda: a @ b), flops, nbytes))
        rows.append(print_row("matmul nt", f"8192x8192x8192 {name}", median_ms(lambda: a @ b.t()), flops, nbytes))
    x = torch.randn(8192, 1152, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4608, 1152, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(4608, device="cuda", dtype=torch.bfloat16)
    rows.append(print_row("linear+bias", "x[8192,1152] w[4608,1152] bf16", median_ms(lambda: F.linear(x, w, bias)),
                          2.0 * 8192 * 1152 * 4608, 2.0 * (8192 * 1152 + 4608 * 1152 + 8192 * 4608 + 4608)))
    return rows


# (batch, size, in channels, out channels, kernel, groups): the rows of bench/cuda_conv2d_bench.cpp.
CONV_SHAPES = [(8, 128, 256, 256, 3, 1), (8, 64, 256, 256, 3, 1), (8, 128, 512, 512, 3, 1), (8, 64, 512, 512, 3, 1),
               (8, 64, 512, 2048, 1, 1), (8, 64, 2048, 512, 1, 1), (8, 16, 4096, 4096, 3, 4096)]


def bench_conv2d():
    rows = []
    for n, hw, cin, cout, k, groups in CONV_SHAPES:
        pad = k // 2
        shape = f"x[{n},{hw},{hw},{cin}] w[{cout},{cin // groups},{k},{k}] p{pad} g{groups}"
        cl = torch.channels_last
        x = torch.randn(n, cin, hw, hw, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
        w = torch.randn(cout, cin // groups, k, k, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
        bias = torch.randn(cout, device="cuda", dtype=torch.bfloat16)
        grad = torch.randn(n, cout, hw, hw, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
        macs = n * hw * hw * cout * (cin // groups) * k * k
        nbytes = 2.0 * (x.numel() + w.numel() + grad.numel())

        def backward(mask):
            return torch.ops.aten.convolution_backward(grad, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0],
                                                       groups, mask)

        rows.append(print_row("conv2d fwd+bias", shape,
                              median_ms(lambda: F.conv2d(x, w, bias, padding=pad, groups=groups)), 2 * macs, nbytes))
        rows.append(print_row("conv2d bwd input", shape, median_ms(lambda: backward([True, False, False])), 2 * macs,
                              nbytes))
        rows.append(print_row("conv2d bwd weight", shape, median_ms(lambda: backward([False, True, False])), 2 * macs,
                              nbytes))
    return rows


BENCHES = {"matmul": bench_matmul, "conv2d": bench_conv2d}


def read_ours(path):
    """(op, shape) -> ms from the table one of our benchmarks printed."""
    ours = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and not cells[0].startswith("-") and cells[0] != "op":
                try:
                    ours[(cells[0], cells[1])] = (float(cells[2]), cells[-1])
                except ValueError:
                    pass
    return ours


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help=f"any of {sorted(BENCHES)} (default: all)")
    parser.add_argument("--compare", help="our benchmark's output, to print side by side with the ratio")
    args = parser.parse_args()
    unknown = [f for f in args.families if f not in BENCHES]
    if unknown:
        sys.exit(f"unknown families {unknown}; known: {sorted(BENCHES)}")
    print(f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print_header()
    rows = []
    for family in args.families or list(BENCHES):
        rows += BENCHES[family]()
    if args.compare:
        ours = read_ours(args.compare)
        print()
        print(f"| {'op':<18} | {'shape':<44} | {'ours ms':>9} | {'torch ms':>9} | {'torch/ours':>10} | {'our impl':<18} |")
        print("|" + "-" * 20 + "|" + "-" * 46 + "|" + "-" * 11 + "|" + "-" * 11 + "|" + "-" * 12 + "|" + "-" * 20 + "|")
        for op, shape, torch_ms in rows:
            if (op, shape) not in ours:
                print(f"| {op:<18} | {shape:<44} | {'-':>9} | {torch_ms:9.4f} | {'-':>10} | {'(no row of ours)':<18} |")
                continue
            our_ms, impl = ours[(op, shape)]
            print(f"| {op:<18} | {shape:<44} | {our_ms:9.4f} | {torch_ms:9.4f} | {torch_ms / our_ms:10.2f} | {impl:<18} |")


if __name__ == "__main__":
    main()
