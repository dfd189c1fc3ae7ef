#!/usr/bin/env python3
"""Writes the LPIPS (VGG16, v0.1) weights as one safetensors file for dcae's perceptual loss.

Needs network access once: `pip install lpips torchvision safetensors`; lpips ships its learned linear heads and
torchvision downloads the ImageNet VGG16 features. The tensor names are lpips' own state_dict names, which dcae's
nn::Lpips uses unchanged.

    python3 scripts/make_lpips_weights.py lpips_vgg.safetensors
"""
import sys

import lpips
from safetensors.torch import save_file


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    model = lpips.LPIPS(net="vgg", version="0.1", verbose=False)
    # The VGG features keep their torchvision indices inside slice1..slice5; ReLU/pool slots have no tensors.
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, sys.argv[1])
    print(f"wrote {len(state)} tensors to {sys.argv[1]}")


if __name__ == "__main__":
    main()
