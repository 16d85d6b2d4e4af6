"""Bad inputs get one line, before training where they can be checked up front: an image folder with a file that
is no image, an image damaged past its header (when it is loaded), a truncated or non-checkpoint
--dense-checkpoint, --out naming a file, --data-dir naming the inner CIFAR folder."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from fakedata import add_corrupt_images, make_cifar_folder, make_image_folder  # noqa: E402
from nptm.study.cli import main  # noqa: E402

TINY = ["--seeds", "0,", "--schedules", "FT", "--epochs", "1", "--retrain-epochs", "1", "--latency-batches", "0",
        "--pruner", "magnitude", "--quiet"]
IMAGES = ["--dataset", "imagefolder", "--model", "digits_net", "--train-resolution", "16", "--val-resolution", "16",
          "--batch-size", "4", *TINY]


def _one_line(capsys) -> str:
    """The error line; besides it stderr may hold notes (e.g. the loader's choice), not a traceback."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("nptm.train: error:")]
    assert len(errors) == 1 and "Traceback" not in err and "weights_only" not in err, err
    return errors[0]


@pytest.fixture()
def images(tmp_path):
    make_image_folder(tmp_path / "data" / "train", classes=2, per_class=4, max_side=24, min_side=16, seed=1)
    make_image_folder(tmp_path / "data" / "val", classes=2, per_class=2, max_side=24, min_side=16, seed=2)
    return tmp_path / "data"


def test_a_file_that_is_no_image_is_found_before_training(images, tmp_path, capsys):
    truncated, garbage = add_corrupt_images(images / "train")
    truncated.unlink()
    out = tmp_path / "out"
    assert main(["--data-dir", str(images), *IMAGES, "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "1 unreadable image(s), e.g." in err and str(garbage) in err and not out.exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_image_damaged_past_its_header_is_named_when_loaded(images, tmp_path, capsys, workers):
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    truncated = images / "val" / "class_0" / "zz_truncated.jpg"  # every evaluation loads every val image
    Image.fromarray(noise).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:-2000])  # the header is whole, the pixel data cut
    assert main(["--data-dir", str(images), *IMAGES, "--workers", workers, "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys)
    assert f"unreadable image {truncated}: OSError" in err and "then continue with --resume" in err


def test_truncated_and_foreign_dense_checkpoints(tmp_path, capsys):
    torch.save({"w": torch.zeros(1000)}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.pth").write_text("these are my notes\n")
    for name in ("cut.pt", "notes.pth"):
        assert main([*TINY, "--dense-checkpoint", str(tmp_path / name), "--out", str(tmp_path / name[:3])]) == 2
        assert _one_line(capsys).endswith(f"--dense-checkpoint {tmp_path / name}: not a PyTorch checkpoint: "
                                          "truncated or corrupt")
        assert not (tmp_path / name[:3]).exists()


def test_out_naming_a_file(tmp_path, capsys):
    (tmp_path / "results.txt").write_text("x")
    for extra in ([], ["--resume"]):
        assert main([*TINY, "--out", str(tmp_path / "results.txt"), *extra]) == 2
        assert "is a file" in _one_line(capsys)


def test_the_inner_cifar_folder_gets_a_hint(tmp_path, capsys):
    make_cifar_folder(tmp_path, n_train=10, n_test=10)
    inner = tmp_path / "cifar-10-batches-py"
    assert main([*TINY, "--dataset", "cifar10", "--model", "resnet20", "--data-dir", str(inner),
                 "--out", str(tmp_path / "out")]) == 2
    assert f"pass its parent, --data-dir {tmp_path}" in _one_line(capsys)
