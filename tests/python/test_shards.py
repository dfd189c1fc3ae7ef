"""dcae-shard output read back with h5py; DMCrop checked against the reference (ADM/PIL) preprocessing."""
import io
import json
import os
import struct
import subprocess
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

BIN = Path(os.environ.get("DCAE_BIN", Path(__file__).resolve().parents[2] / "build" / "bin"))
TOOL = BIN / "dcae-shard"


def write_png(path, pixels):
    """Minimal RGB8 PNG writer (signature, IHDR, one zlib IDAT, IEND)."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                           + chunk(b"IEND", b""))


def reference_dmcrop(pil_image, size):
    """The ADM centre crop as the DC-AE evaluation code does it (spec section 10)."""
    if pil_image.size == (size, size):
        return np.array(pil_image)
    while min(*pil_image.size) >= 2 * size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def image(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 // max(w, 1), y * 200 // max(h, 1), (x + y) * 100 // (w + h)], axis=-1)
    return np.clip(base + rng.integers(0, 50, size=(h, w, 3)), 0, 255).astype(np.uint8)


# (class, file, height, width): odd sizes, both orientations, box halvings (one to four), one upscale, tall and
# thin images (where pass order matters).
IMAGES = [("ant", "a.png", 37, 53), ("ant", "b.png", 130, 70), ("bee", "c.png", 16, 16),
          ("bee", "deep/d.png", 75, 200), ("cow", "e.png", 9, 13), ("cow", "f.png", 508, 109),
          ("cow", "g.png", 49, 14), ("cow", "h.png", 35, 461)]


def run_tool(*args):
    assert TOOL.exists(), f"{TOOL} is missing: build the dcae-shard target first"
    return subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, (label, name, h, w) in enumerate(IMAGES):
        path = root / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, image(h, w, i))
    (root / "bee" / "broken.png").write_bytes((root / "ant" / "a.png").read_bytes()[:100])
    return root


def test_raw_shards_read_with_h5py(folder, tmp_path):
    out = tmp_path / "raw"
    result = run_tool("--input", folder, "--output", out, "--resolution", 16, "--images-per-shard", 3,
                      "--labels-from-folders", "--workers", 2)
    assert result.returncode == 0, result.stderr
    assert "skipped 1 of 9 files" in result.stderr
    assert "broken.png" in result.stderr

    manifest = json.loads((out / "manifest.json").read_text())
    assert json.loads((out / "classes.json").read_text()) == ["ant", "bee", "cow"]
    assert manifest["total"] == 8 and manifest["resolution"] == 16 and manifest["storage"] == "raw"
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    names, labels = [], []
    for entry in manifest["shards"]:
        data = (out / entry["file"]).read_bytes()
        assert entry["crc32"] == zlib.crc32(data) and entry["bytes"] == len(data)
        with h5py.File(out / entry["file"], "r") as f:
            images = f["images"]
            assert images.dtype == np.uint8 and images.shape == (entry["count"], 16, 16, 3)
            assert images.chunks == (1, 16, 16, 3)
            assert f["labels"].dtype == np.int64 and f["labels"].shape == (entry["count"],)
            assert f.attrs["format_version"] == 1 and f.attrs["resolution"] == 16
            assert f.attrs["crop"] == "dmcrop" and f.attrs["storage"] == "raw"
            assert f.attrs["source"] == str(folder) and f.attrs["count"] == entry["count"]
            for i, name in enumerate(f["names"].asstr()[:]):
                np.testing.assert_array_equal(images[i], reference_dmcrop(Image.open(folder / name), 16),
                                              err_msg=f"DMCrop differs from the PIL reference for {name}")
                names.append(name)
            labels.extend(f["labels"][:].tolist())
    assert names == sorted(f"{label}/{name}" for label, name, _, _ in IMAGES)
    assert labels == [0, 0, 1, 1, 2, 2, 2, 2]


def test_encoded_shards_hold_image_bytes(folder, tmp_path):
    out = tmp_path / "encoded"
    result = run_tool("--input", folder, "--output", out, "--resolution", 12, "--storage", "encoded",
                      "--crop", "resize")
    assert result.returncode == 0, result.stderr
    with h5py.File(out / "shard-00000.h5", "r") as f:
        assert "images" not in f
        encoded = f["encoded"]
        assert encoded.shape == (8,) and h5py.check_vlen_dtype(encoded.dtype) == np.dtype("uint8")
        assert f.attrs["storage"] == "encoded" and f.attrs["codec"] == "png" and f.attrs["crop"] == "resize"
        assert f["labels"][:].tolist() == [-1] * 8
        first = encoded[0]
        assert first.dtype == np.uint8 and bytes(first[:8]) == b"\x89PNG\r\n\x1a\n"
        name = f["names"].asstr()[0]
        decoded = np.array(Image.open(io.BytesIO(first.tobytes())))
        expected = np.array(Image.open(folder / name).resize((12, 12), resample=Image.BICUBIC))
        np.testing.assert_array_equal(decoded, expected)


def test_refuses_to_overwrite_and_rejects_empty_input(folder, tmp_path):
    out = tmp_path / "again"
    assert run_tool("--input", folder, "--output", out, "--resolution", 8).returncode == 0
    second = run_tool("--input", folder, "--output", out, "--resolution", 8)
    assert second.returncode != 0 and "refusing to overwrite" in second.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    third = run_tool("--input", empty, "--output", tmp_path / "o", "--resolution", 8)
    assert third.returncode != 0 and "no input files" in third.stderr
