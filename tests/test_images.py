"""perturbx.images: the one image reader of the CLI and explain_dataset; values, layouts, channels, errors."""

from __future__ import annotations

import numpy as np
import pytest

from perturbx.images import IMAGE_SUFFIXES, image_files, read_image

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(9, 11, 3), dtype=np.uint8)


def test_png_is_rgb_over_255_in_every_layout(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "a.png")
    expected = pixels.astype(np.float64) / 255
    chw = read_image(tmp_path / "a.png")
    assert chw.dtype == np.float32 and chw.shape == (3, 9, 11)
    np.testing.assert_allclose(chw, np.moveaxis(expected, -1, 0), atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "a.png", layout="HWC"), expected, atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "a.png", layout="HW"), expected.mean(axis=-1), atol=1e-6)


def test_lossy_and_other_formats_equal_scikit_image_decoding(tmp_path, pixels):
    from skimage.io import imread

    for name in ("a.jpg", "a.JPEG", "a.bmp", "a.tif", "a.webp"):
        Image.fromarray(pixels).save(tmp_path / name)
        reference = np.asarray(imread(tmp_path / name), dtype=np.float64)[..., :3] / 255
        np.testing.assert_allclose(read_image(tmp_path / name, layout="HWC"), reference, atol=1e-6, err_msg=name)


def test_greyscale_alpha_palette_sixteen_bit_and_gif_frames(tmp_path, pixels):
    grey = pixels[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (1, 9, 11)
    np.testing.assert_allclose(read_image(tmp_path / "g.png", channels=3), np.repeat(grey[None] / 255, 3, 0),
                               atol=1e-7)
    rgba = np.concatenate([pixels, np.full((9, 11, 1), 17, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png", layout="HWC"), pixels / 255, atol=1e-7)
    palette = Image.fromarray(pixels).quantize(colors=16)
    palette.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png", layout="HWC"),
                               np.asarray(palette.convert("RGB")) / 255, atol=1e-7)
    deep = (grey.astype(np.uint16) * 257 + 3).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_allclose(read_image(tmp_path / "d.png", layout="HW"), deep / 65535, atol=1e-7)
    frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
    frames[0].save(tmp_path / "f.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "f.gif") as img:
        first = np.asarray(img.convert("RGB")) / 255
    np.testing.assert_allclose(read_image(tmp_path / "f.gif", layout="HWC"), first, atol=1e-7)


def test_npy_layouts_and_integer_scaling(tmp_path, pixels):
    chw = np.moveaxis(pixels, -1, 0).astype(np.float32) / 255
    np.save(tmp_path / "chw.npy", chw)
    np.save(tmp_path / "hwc.npy", np.moveaxis(chw, 0, -1))
    np.save(tmp_path / "u8.npy", pixels)
    np.save(tmp_path / "hw.npy", pixels[..., 0].astype(np.float32) * 3.0)  # floats as stored, even > 1
    for name in ("chw.npy", "hwc.npy", "u8.npy"):
        np.testing.assert_allclose(read_image(tmp_path / name), chw, atol=1e-7, err_msg=name)
    np.testing.assert_array_equal(read_image(tmp_path / "hw.npy", layout="HW"), pixels[..., 0] * 3.0)
    assert read_image(tmp_path / "hw.npy").shape == (1, 9, 11)


def test_size_resizes_like_scikit_image(tmp_path, pixels):
    from skimage.transform import resize

    Image.fromarray(pixels).save(tmp_path / "a.png")
    reference = resize(pixels / 255, (5, 6), order=1, anti_aliasing=True, preserve_range=True)
    np.testing.assert_allclose(read_image(tmp_path / "a.png", layout="HWC", size=(5, 6)), reference, atol=1e-6)


def test_image_files_lists_what_read_image_reads(tmp_path, pixels):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "c.npy", "sub/d.webp", "notes.txt", "e.gif"):
        path = tmp_path / name
        if name.endswith(".npy"):
            np.save(path, pixels)
        elif name.endswith(".txt"):
            path.write_text("not an image")
        else:
            Image.fromarray(pixels).save(path)
    assert [p.name for p in image_files(tmp_path)] == ["a.JPG", "b.png", "c.npy", "e.gif"]
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path, recursive=True)] == \
        ["a.JPG", "b.png", "c.npy", "e.gif", "sub/d.webp"]
    assert {".png", ".jpg", ".jpeg", ".npy"} <= set(IMAGE_SUFFIXES)


def test_errors_name_the_file_and_what_is_accepted(tmp_path, pixels):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "4d.npy", np.zeros((1, 2, 3, 4)))
    np.save(tmp_path / "rgba.npy", np.zeros((4, 5, 6)))
    with pytest.raises(ValueError, match=r"cannot read image .*notes\.txt: files ending in '\.txt' .*\.png"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"cannot read image .*missing\.png: no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"obj\.npy: not a \.npy array without pickled objects"):
        read_image(tmp_path / "obj.npy")
    with pytest.raises(ValueError, match=r"4d\.npy: the array has shape \(1, 2, 3, 4\); expected \(H, W\)"):
        read_image(tmp_path / "4d.npy")
    with pytest.raises(ValueError, match=r"cannot give image .*rgba\.npy 3 channel\(s\): it has 4"):
        read_image(tmp_path / "rgba.npy", channels=3)
    with pytest.raises(ValueError, match="'layout' argument of read_image must be one of"):
        read_image(tmp_path / "bad.png", layout="NCHW")
    with pytest.raises(ValueError, match="'channels' argument of read_image must be None, 1 or 3. Got 2"):
        read_image(tmp_path / "bad.png", channels=2)
    with pytest.raises(ValueError, match=r"'size' argument of read_image must be two ints >= 1 \(H, W\). Got \(0, 4\)"):
        read_image(tmp_path / "bad.png", size=(0, 4))
