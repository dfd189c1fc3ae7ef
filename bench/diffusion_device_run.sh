#!/bin/bash
# One GPU call (pack: bench/results/h200_diffusion_models.md): the CUDA tests of the diffusion models and the new
# unary kernels, then training-step throughput of UViT-H (f64c128, 8x8) and DiT-XL (f32c32, 16x16) beside PyTorch.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD/lib:$LD_LIBRARY_PATH DIFFUSION_REFERENCE_DIR=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
timeout 60 ./bin/dcae_nn_tests --gtest_filter='CudaDiffusion*:Diffusion*' 2>&1 | grep -E "OK|FAILED|Failure|error|PASSED|Expected|Which|rel|<=" | head -40
timeout 60 ./bin/dcae_cuda_tests --gtest_filter='CudaElementwise.Unary*' 2>&1 | grep -E "OK|FAILED|Failure|PASSED" | head -10
bench() { timeout 45 ./bin/diffusion_model_bench "$@" 2>&1 | grep -v "^I2026\|^W2026" | tail -3; }
peer() { timeout 55 python3 torch_diffusion_peer.py "$@" 2>&1 | tail -3; }
bench --model uvit-h --in-channels 128 --input-size 8 --batch 128
peer  --model uvit-h --in-channels 128 --input-size 8 --batch 128
bench --model dit-xl --in-channels 32 --input-size 16 --batch 64
peer  --model dit-xl --in-channels 32 --input-size 16 --batch 64
bench --model uvit-h --in-channels 128 --input-size 8 --batch 256
peer  --model uvit-h --in-channels 128 --input-size 8 --batch 256
