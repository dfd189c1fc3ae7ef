"""A PyTorch reference for the diffusion transformers, written for this suite from the math of efficientvit's
diffusioncore/models/dit.py and uvit.py (with timm's Attention, Mlp and PatchEmbed, which they import): the same
module tree, so state_dict keys are the checkpoints' keys. NCHW in and out, as the reference.

The one deliberate difference: the sinusoidal timestep embedding is evaluated in float64 (the reference does it in
float32, where t * f for t ~ 1000 carries ~1e-4 of rounding) so the comparison measures the networks, not that
rounding; `timestep_embedding(..., float32=True)` is the reference's own form, which the suite checks separately.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000, float32=False):
    half = dim // 2
    dtype = torch.float32 if float32 else torch.float64
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t[:, None].to(dtype) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.float()


def sincos_2d(dim, grid):
    """DiT's get_2d_sincos_pos_embed: meshgrid with w first; each half [sin | cos] of pos * 10000^(-k / (dim/4))."""
    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    return np.concatenate([one_axis(dim // 2, gw), one_axis(dim // 2, gh)], axis=1)


class Attention(nn.Module):  # timm.models.vision_transformer.Attention
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):  # timm.layers.Mlp
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act, nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, dim):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)  # + the CFG null class

    def forward(self, y):
        return self.embedding_table(y)


def unpatchify(x, patch, channels):
    """[N, (h w), (p q c)] -> [N, c, h p, w q]."""
    n, length, _ = x.shape
    h = int(length ** 0.5)
    x = x.reshape(n, h, h, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(n, channels, h * patch, h * patch)


# ---------------------------------------------------------------------------------------------------------------
# U-ViT

class UViTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias, act, skip):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    def __init__(self, in_channels, input_size, num_classes, patch_size=1, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, qkv_bias=False, mlp_time_embed=False, activation="gelu"):
        super().__init__()
        d = hidden_size
        self.in_channels, self.patch = in_channels, patch_size
        self.patch_embed = PatchEmbed(patch_size, in_channels, d)
        self.time_embed = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d)) if mlp_time_embed \
            else nn.Identity()
        self.label_emb = LabelEmbedder(num_classes, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + (input_size // patch_size) ** 2, d))
        act = nn.GELU() if activation == "gelu" else nn.SiLU()
        self.in_blocks = nn.ModuleList([UViTBlock(d, num_heads, mlp_ratio, qkv_bias, act, False)
                                        for _ in range(depth // 2)])
        self.mid_block = UViTBlock(d, num_heads, mlp_ratio, qkv_bias, act, False)
        self.out_blocks = nn.ModuleList([UViTBlock(d, num_heads, mlp_ratio, qkv_bias, act, True)
                                         for _ in range(depth // 2)])
        self.norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, patch_size ** 2 * in_channels)

    def forward(self, x, t, y):
        x = self.patch_embed(x)
        time_token = self.time_embed(timestep_embedding(t, self.pos_embed.shape[-1]))[:, None]
        x = torch.cat([self.label_emb(y)[:, None], time_token, x], dim=1) + self.pos_embed
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())
        x = self.decoder_pred(self.norm(x))[:, 2:]
        return unpatchify(x, self.patch, self.in_channels)


# ---------------------------------------------------------------------------------------------------------------
# DiT

def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    def __init__(self, d, frequency_embedding_size):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, d), nn.SiLU(), nn.Linear(d, d))
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size))


class DiTBlock(nn.Module):
    def __init__(self, d, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, int(d * mlp_ratio), nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, d, patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(d, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, in_channels, input_size, num_classes, patch_size=1, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, learn_sigma=True, frequency_embedding_size=256):
        super().__init__()
        d = hidden_size
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.patch = patch_size
        self.x_embedder = PatchEmbed(patch_size, in_channels, d)
        self.t_embedder = TimestepEmbedder(d, frequency_embedding_size)
        self.y_embedder = LabelEmbedder(num_classes, d)
        grid = input_size // patch_size
        self.pos_embed = nn.Parameter(torch.from_numpy(sincos_2d(d, grid)).float()[None], requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(d, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(d, patch_size, self.out_channels)

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        return unpatchify(self.final_layer(x, c), self.patch, self.out_channels)
