"""benchmarks/reencode_jpeg.py: the same images, same paths and chroma, lower quality."""

import io
import json

import numpy as np
import pytest
from conftest import load_script
from PIL import Image, JpegImagePlugin


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/reencode_jpeg.py")


@pytest.fixture()
def tree(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for part, cls, i in [("train", "cat", 0), ("train", "cat", 1), ("train", "dog", 0),
                         ("test", "dog", 0)]:
        (src / part / cls).mkdir(parents=True, exist_ok=True)
        # smooth colour blobs plus noise: something JPEG has to quantise
        base = rng.integers(0, 256, (4, 4, 3)).repeat(8, 0).repeat(8, 1)
        pixels = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(src / part / cls / f"{i:04d}.jpg", quality=90,
                                     subsampling=2)
    return src


def decoded(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_same_paths_and_chroma_lower_quality(script, tree, tmp_path):
    out = tmp_path / "q30"
    info = script.reencode(tree, out, 30)
    sources = sorted(p.relative_to(tree) for p in tree.rglob("*.jpg"))
    assert sorted(p.relative_to(out) for p in out.rglob("*.jpg")) == sources
    for rel in sources:
        with Image.open(out / rel) as image:
            assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0 kept
        # what it writes is the source's pixels saved at quality 30, 4:2:0
        expected = io.BytesIO()
        Image.fromarray(decoded(tree / rel).astype(np.uint8)).save(
            expected, "JPEG", quality=30, subsampling=2)
        assert (out / rel).read_bytes() == expected.getvalue()
    assert info["images"] == 4 and info["quality"] == 30
    assert info["mean_bytes_reencoded"] < info["mean_bytes_source"]
    assert json.loads((out / "reencode.json").read_text()) == info


def test_lower_quality_moves_pixels_further(script, tree, tmp_path):
    high, low = tmp_path / "q80", tmp_path / "q20"
    script.reencode(tree, high, 80)
    script.reencode(tree, low, 20)
    rel = next(p.relative_to(tree) for p in tree.rglob("*.jpg"))
    source = decoded(tree / rel)
    assert np.abs(decoded(low / rel) - source).mean() > np.abs(decoded(high / rel) - source).mean()


def test_record_says_how_far_the_pixels_moved(script, tree, tmp_path):
    out = tmp_path / "q40"
    info = script.reencode(tree, out, 40)
    diffs = np.concatenate([(decoded(out / p.relative_to(tree)) - decoded(p)).ravel()
                            for p in sorted(tree.rglob("*.jpg"))]).astype(np.float64)
    mse = (diffs ** 2).mean()  # pooled over every pixel value of the 4 images
    assert info["psnr_db_to_source"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=0.005)
    assert info["mean_abs_pixel_change"] == pytest.approx(np.abs(diffs).mean(), abs=5e-4)
    assert 15 < info["psnr_db_to_source"] < 45  # a real, finite change


def test_bad_arguments_are_one_line(script, tree, tmp_path, capsys):
    assert script.main(["--src", str(tree), "--out", str(tmp_path / "x"), "--quality", "0"]) == 2
    assert "--quality must be in 1..95 (Pillow's useful range), got 0" in capsys.readouterr().err
    assert script.main(["--src", str(tmp_path / "empty"), "--out", str(tmp_path / "y"),
                        "--quality", "50"]) == 2
    assert "no .jpg/.jpeg files under" in capsys.readouterr().err
    assert script.main(["--src", str(tree), "--out", str(tree), "--quality", "50"]) == 2
    assert "is not empty; give a new folder" in capsys.readouterr().err


def test_a_corrupt_image_is_named_in_one_line(script, tree, tmp_path, capsys):
    bad = tree / "train" / "cat" / "0001.jpg"
    bad.write_bytes(b"not a jpeg")
    assert script.main(["--src", str(tree), "--out", str(tmp_path / "q50"), "--quality", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{bad}': cannot re-encode it" in err
