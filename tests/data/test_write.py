"""``python -m nptm.data write``: round trips of generated datasets through .beton files, and refusals."""
import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ffcv")
cv2 = pytest.importorskip("cv2")
from ffcv.reader import Reader  # noqa: E402

from fakedata import add_corrupt_images, make_cifar_folder, make_image_folder  # noqa: E402
from nptm.data.__main__ import main  # noqa: E402
from nptm.data.sources import load_rgb  # noqa: E402

JPG, RAW = 0, 1  # ffcv's IMAGE_MODES


def read_beton(path):
    """[(mode, H,W,3 uint8 image, label)] straight from the file: raw bytes, or the JPEG stream decoded by PIL."""
    reader = Reader(str(path))
    meta = reader.metadata
    image_col, label_col = (f"f{reader.field_names.index(n)}" for n in ("image", "label"))
    blob = np.fromfile(path, dtype=np.uint8)
    out = []
    for m, label in zip(meta[image_col], meta[label_col]):
        h, w, ptr = int(m["height"]), int(m["width"]), int(m["data_ptr"])
        if m["mode"] == RAW:
            img = blob[ptr : ptr + h * w * 3].reshape(h, w, 3)
        else:
            img = np.asarray(Image.open(io.BytesIO(blob[ptr:].tobytes())).convert("RGB"))
        out.append((int(m["mode"]), img, int(label)))
    return out


def write(capsys, *args):
    rc = main(["write", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_imagefolder_round_trip_reports_corrupt_images(tmp_path, capsys):
    root = tmp_path / "train"
    samples = make_image_folder(root, classes=3, per_class=8, max_side=500)
    corrupt = add_corrupt_images(root)
    out = tmp_path / "train.beton"
    rc, stdout, stderr = write(capsys, "--source", f"imagefolder:{root}", "--out", out, "--max-resolution", 256,
                               "--jpeg-quality", 90, "--compress-probability", 0.5, "--workers", 2)
    assert rc == 0, stderr
    for path in corrupt:
        assert f"unreadable image {path}" in stderr
    assert "wrote 24 images (3 classes, proportion)" in stdout and "skipped 2 unreadable" in stdout
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.failures"))

    stored = read_beton(out)
    assert [label for _, _, label in stored] == [label for _, label in samples]
    assert {mode for mode, _, _ in stored} == {JPG, RAW}  # 24 draws at p = 0.5
    for (mode, img, _), (path, _) in zip(stored, samples):
        src = load_rgb(path)
        h, w = src.shape[:2]
        ratio = 256 / max(h, w)
        ref = cv2.resize(src, (int(w * ratio), int(h * ratio)), interpolation=cv2.INTER_AREA) if ratio < 1 else src
        assert img.shape == ref.shape and img.dtype == np.uint8
        if mode == RAW:
            np.testing.assert_array_equal(img, ref)
        else:  # quality-90 JPEG of a smooth image
            assert np.abs(img.astype(int) - ref).mean() < 2.0


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_round_trip_is_lossless(tmp_path, capsys, kind):
    data = make_cifar_folder(tmp_path, kind, n_train=30, n_test=12)
    for split in ("train", "test"):
        out = tmp_path / f"{split}.beton"
        rc, stdout, stderr = write(capsys, "--source", f"{kind}:{tmp_path}", "--out", out, "--split", split,
                                   "--workers", 1)
        assert rc == 0, stderr
        x, y = data[split]
        stored = read_beton(out)
        assert [m for m, _, _ in stored] == [RAW] * len(y)
        np.testing.assert_array_equal(np.stack([img for _, img, _ in stored]), x.transpose(0, 2, 3, 1))
        assert [label for _, _, label in stored] == y.tolist()


def test_digits_split_and_pixels(tmp_path, capsys):
    from sklearn.datasets import load_digits

    out = tmp_path / "digits.beton"
    rc, stdout, stderr = write(capsys, "--source", "digits", "--out", out, "--split", "all", "--workers", 1)
    assert rc == 0, stderr
    x, y = load_digits(return_X_y=True)
    stored = read_beton(out)
    assert len(stored) == len(y) == 1797
    imgs = np.stack([img for _, img, _ in stored])
    assert imgs.shape == (1797, 32, 32, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[:, ::4, ::4, 1], np.rint(x.reshape(-1, 8, 8) * 255 / 16))
    assert (imgs[..., 0] == imgs[..., 2]).all() and [s[2] for s in stored] == y.tolist()

    test_out = tmp_path / "digits_test.beton"
    assert write(capsys, "--source", "digits", "--out", test_out, "--split", "test", "--workers", 1)[0] == 0
    assert len(Reader(str(test_out)).metadata) == 360  # the digits dataset's 20 % test split


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "d.beton"
    out.write_bytes(b"keep me")
    rc, stdout, stderr = write(capsys, "--source", "digits", "--out", out)
    assert rc == 2 and stderr.count("\n") == 1 and "--force" in stderr and str(out) in stderr
    assert out.read_bytes() == b"keep me"
    rc, stdout, stderr = write(capsys, "--source", "digits", "--out", out, "--split", "test", "--force",
                               "--workers", 1)
    assert rc == 0, stderr
    assert len(Reader(str(out)).metadata) == 360


@pytest.mark.parametrize("source, message", [
    ("nosuchkind:/x", "unknown source kind 'nosuchkind'"),
    ("imagefolder", "needs a path"),
    ("imagefolder:{tmp}/missing", "is not a directory"),
    ("imagefolder:{tmp}/empty", "image folder"),
    ("cifar10:{tmp}/empty", "cifar10 not found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, source, message):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "x.beton"
    rc, stdout, stderr = write(capsys, "--source", source.format(tmp=tmp_path), "--out", out, "--workers", 1)
    assert rc == 2 and stderr.count("\n") == 1 and message in stderr, stderr
    assert not out.exists()


def test_folder_with_only_corrupt_images_is_an_error(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"junk")
    rc, stdout, stderr = write(capsys, "--source", f"imagefolder:{tmp_path}", "--out", tmp_path / "o.beton",
                               "--workers", 1)
    assert rc == 2 and f"unreadable image {tmp_path / 'a' / 'x.jpg'}" in stderr and "no readable image" in stderr


def _passes_check(path):
    return None


def test_image_failing_while_writing_aborts_without_output(tmp_path, capsys, monkeypatch):
    import nptm.data.sources as sources_mod

    root = tmp_path / "train"
    make_image_folder(root, classes=2, per_class=3, max_side=100)
    truncated = add_corrupt_images(root)[0]
    monkeypatch.setattr(sources_mod, "probe_image", _passes_check)  # as if the file broke after the check
    (truncated.parent / "zz_garbage.jpg").unlink()
    out = tmp_path / "train.beton"
    rc, stdout, stderr = write(capsys, "--source", f"imagefolder:{root}", "--out", out, "--workers", 1)
    assert rc == 2 and "1 image(s) became unreadable while writing" in stderr and str(truncated) in stderr
    assert list(tmp_path.iterdir()) == [root]  # no output, no .partial, no .failures left behind
