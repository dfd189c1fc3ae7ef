"""Which kernels PyTorch's cudnn.benchmark runs for the 3x3 512-channel convolution backward passes (bf16,
channels_last, batch 8, 128^2 and 64^2), with their times from torch.profiler: the counterpart of
build/bin/cuda_conv_sweep_bench, which times every cuDNN configuration of ours and names its kernels.

  python3 bench/torch_conv_kernels.py
"""
import torch
from torch.profiler import ProfilerActivity, profile

torch.backends.cudnn.benchmark = True
torch.backends.cudnn.allow_tf32 = False


def main():
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    for hw in (128, 64):
        n, c = 8, 512
        x = torch.randn(n, c, hw, hw, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        grad = torch.randn(n, c, hw, hw, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        flops = 2.0 * n * hw * hw * c * c * 9
        for name, mask in (("bwd input", [True, False, False]), ("bwd weight", [False, True, False])):
            def step():
                torch.ops.aten.convolution_backward(grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
            for _ in range(5):
                step()
            torch.cuda.synchronize()
            reps = 10
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(reps):
                    step()
                torch.cuda.synchronize()
            print(f"== {name} x[{n},{hw},{hw},{c}] 3x3")
            for event in sorted(prof.key_averages(), key=lambda e: -e.device_time_total):
                if event.device_time_total <= 0:
                    continue
                ms = event.device_time_total / reps / 1e3
                print(f"{ms:8.4f} ms/step {event.count / reps:4.1f} launches {flops / ms * 1e-9:6.1f} TFLOP/s-equiv"
                      f" | {event.key[:200]}")


if __name__ == "__main__":
    main()
