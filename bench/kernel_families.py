# Groups per-kernel GPU time (JSON {"kernel name": [launches per call, microseconds per call]}, written by
# dcae_model_bench --profile and torch_dcae_peer.py --profile) into op families and prints them side by side,
# then the heaviest kernels of each profile.
#   python3 bench/kernel_families.py ours=enc_ours.json eager=enc_eager.json compile=enc_compile.json
import json, re, sys

FAMILIES = [  # first match wins; patterns are lower-case substrings or regexes of the kernel name
    ("memset", [r"^\[memset\]"]),
    ("triton fused reduction (norms)", [r"^triton_(red|per)_"]),
    ("triton fused pointwise", [r"^triton_poi_"]),
    ("triton template (gemm/conv)", [r"^triton_"]),
    ("norm (+ residual)", ["row_norm", "group_norm", "batch_norm", "layer_norm", "rms", "welford", "bn_fw",
                           "residual_channel_affine"]),
    ("linear attention", ["linear_attention", "linear_attn", "attention"]),
    ("conv (cuDNN, direct)", ["fprop", "dgrad", "wgrad", "conv", "implicit", "depthwise", "cudnn"]),
    ("gemm (cuBLAS/cuBLASLt)", ["gemm", "nvjet", "cutlass", "matmul", "xmma", "cublas"]),
    ("glu / gating", ["glu", "gate"]),
    ("pixel (un)shuffle / shortcut / resize", ["shuffle", "pixel", "interp", "upsample", "nearest", "spatial",
                                               "shortcut"]),
    ("copy/layout", [r"^\[memcpy", "copy", "transpose", "permute", "nchwtonhwc", "nhwctonchw", "reorder", "cat_",
                     "catarray", "contiguous", "concat", "pad"]),
    ("reduce", ["reduce", "sum", "mean"]),
    ("elementwise / activation", ["elementwise", "unary", "binary", "silu", "relu", "add", "mul", "vectorized",
                                  "unrolled", "activation", "fill", "apply"]),
]


def family(name):
    low = name.lower()
    for fam, patterns in FAMILIES:
        for p in patterns:
            if (p.startswith("^") and re.search(p, low)) or (not p.startswith("^") and p in low):
                return fam
    return "other"


def main():
    runs = []
    for arg in sys.argv[1:]:
        label, path = arg.split("=", 1)
        with open(path) as f:
            runs.append((label, json.load(f)))
    totals = []
    for label, kernels in runs:
        fams = {}
        for name, (count, us) in kernels.items():
            c, t = fams.get(family(name), (0.0, 0.0))
            fams[family(name)] = (c + count, t + us)
        totals.append(fams)
    names = sorted({f for fams in totals for f in fams}, key=lambda f: -max(t.get(f, (0, 0))[1] for t in totals))
    print("| op family | " + " | ".join(f"{label} ms (launches)" for label, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for f in names:
        cells = [f"{t[f][1] / 1e3:.2f} ({t[f][0]:.0f})" if f in t else "-" for t in totals]
        print(f"| {f} | " + " | ".join(cells) + " |")
    cells = [f"**{sum(v[1] for v in t.values()) / 1e3:.2f}** ({sum(v[0] for v in t.values()):.0f})" for t in totals]
    print("| **GPU busy, all kernels** | " + " | ".join(cells) + " |")
    for label, kernels in runs:
        print(f"\n{label}: heaviest kernels (ms per call, launches)")
        for name, (count, us) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:15]:
            print(f"  {us / 1e3:8.3f} {count:6.0f}  [{family(name)}] {name[:150]}")


if __name__ == "__main__":
    main()
