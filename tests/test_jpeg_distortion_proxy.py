"""benchmarks/jpeg_distortion_proxy.py: the stand-in tiny images and the distortion measures,
checked on hand-made pixels; the measurement is in benchmarks/results/jpeg_dose_response/."""

import json
import math

import numpy as np
import pytest
from conftest import load_script
from PIL import Image


@pytest.fixture(scope="module")
def proxy():
    return load_script("benchmarks/jpeg_distortion_proxy.py")


def test_tiles_are_block_means_of_each_crop(proxy):
    # A 64×96 photo whose 2×2 blocks hold 0, 2, 4, 6 (mean 3) plus 10 × (block column mod 20).
    cell = np.array([[0, 2], [4, 6]])
    photo = np.tile(cell, (32, 48))[..., None].repeat(3, axis=2).astype(np.float64)
    photo += 10 * ((np.arange(96) // 2) % 20).reshape(1, 96, 1)
    tiles = proxy.tiny_images([photo.astype(np.uint8)], factor=2, stride=32)
    assert len(tiles) == 2  # 64-pixel crops at x = 0 and 32 of a 96-wide photo
    for tile, x0 in zip(tiles, (0, 16)):
        expected = 3 + 10 * ((np.arange(32) + x0) % 20)
        assert tile.shape == (32, 32, 3) and tile.dtype == np.uint8
        assert np.array_equal(tile[5, :, 1], expected)


def test_distortion_is_pooled_psnr_and_mean_absolute_change(proxy):
    before = [np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)]
    after = [np.full((2, 2, 3), 5, np.uint8), np.full((2, 2, 3), 1, np.uint8)]
    d = proxy.distortion(before, after)
    mse = (25 + 1) / 2  # pooled over both images' values
    assert d["psnr_db"] == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=0.005)
    assert d["mean_abs_pixel_change"] == pytest.approx(3.0)
    assert proxy.distortion(before, before)["psnr_db"] is None  # no change: no finite PSNR


def test_steps_lower_quality_moves_the_copy_further(proxy):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (4, 4, 3)).repeat(8, 0).repeat(8, 1)
    images = [np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)
              for _ in range(3)]
    result = proxy.steps(images)
    assert list(result) == ["original -> 75", "75 -> 75", "75 -> 50", "75 -> 30"]
    assert result["75 -> 30"]["psnr_db"] < result["75 -> 50"]["psnr_db"]
    # Saving a q75 image again at 75 moves it far less than a lower quality does.
    assert result["75 -> 75"]["psnr_db"] > result["75 -> 50"]["psnr_db"] + 5


def test_writes_its_record(proxy, tmp_path, capsys):
    proxy.main(["--out", str(tmp_path), "--factor", "8", "--stride", "200"])
    record = json.loads((tmp_path / "distortion_proxy_x8.json").read_text())
    # 256-pixel crops 200 apart in two 427×640 photos: 1 row × 2 columns (x = 0, 200) each.
    assert record["images"] == 4 and record["factor"] == 8
    assert "| original -> 75 |" in capsys.readouterr().out


def test_a_real_copy_is_sampled_evenly_and_measured(proxy, tmp_path, capsys):
    rng = np.random.default_rng(1)
    root = tmp_path / "copy"
    for i in range(6):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"c{i % 2}" / f"{i}.jpg", quality=75, subsampling=2)
    assert len(proxy.copy_sample(root, 3)) == 3  # every second of the six sorted files
    proxy.main(["--out", str(tmp_path / "out"), "--factor", "8", "--stride", "200",
                "--copy", str(root), "--copy-images", "3"])
    record = json.loads((tmp_path / "out" / "distortion_proxy_x8.json").read_text())
    assert record["copy"]["images"] == 3
    assert list(record["copy"]["steps"]) == ["75 -> 75", "75 -> 50", "75 -> 30"]
    with pytest.raises(SystemExit, match="no .jpg/.jpeg files"):
        proxy.copy_sample(tmp_path / "out", 3)
