"""The ``perturbx`` command: help, compare on a user's torch / ONNX model and folder, errors, demo."""

from __future__ import annotations

import csv
import html
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perturbx.cli import main
from perturbx.datasets import make_shapes

torch = pytest.importorskip("torch")

FACTORY = """
import torch

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 4))

NOT_CALLABLE = 3
"""


def tiny_net():
    """Factory importable as tests.test_cli:tiny_net."""
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 4))


class Payload:
    """Something only a full unpickling can rebuild."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("cli")
    data = make_shapes(3, size=32, random_state=2)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i, (img, mask) in enumerate(zip(data.images, data.masks, strict=True)):
        Image.fromarray((np.moveaxis(img, 0, -1) * 255).round().astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    (root / "net.py").write_text(FACTORY)
    return root


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_option(capsys):
    for argv, needles in ((["--help"], ["demo", "compare", "methods"]),
                          (["compare", "--help"], ["--model", "--images", "--methods", "--out", "--checkpoint",
                                                   "--allow-pickle", "--masks", "weights_only=True"])):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert all(n in out for n in needles), out


def test_entry_point_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "perturbx.cli", "methods"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "occlusion" in proc.stdout and "rise" in proc.stdout


def test_compare_with_a_factory_file_and_checkpoint(folder, tmp_path, capsys):
    net = tiny_net()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "compare", "--model", f"{folder / 'net.py'}:make", "--checkpoint",
                             tmp_path / "w.pt", "--images", folder / "images", "--masks", folder / "masks",
                             "--methods", "occlusion,saliency", "--out", out, "--mean", "0.5", "--std", "0.25")
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"report.html", "report.md", "results.csv", "summary.csv",
                                               "maps.png", "curves.png"}
    assert "| occlusion | 3 |" in stdout and "pointing_game" in stdout
    assert "0.png" in (out / "report.html").read_text()


def test_compare_checkpoint_weights_are_used(folder, tmp_path, capsys):
    torch.save(tiny_net().state_dict(), tmp_path / "w.pt")
    args = ["compare", "--images", folder / "images", "--methods", "occlusion", "--metrics", "deletion",
            "--output", "logits", "--max-images", "1"]
    _run(capsys, *args, "--model", "tests.test_cli:tiny_net", "--out", tmp_path / "a")
    _run(capsys, *args, "--model", f"{folder / 'net.py'}:make", "--checkpoint", tmp_path / "w.pt",
         "--out", tmp_path / "b")
    _run(capsys, *args, "--model", f"{folder / 'net.py'}:make", "--out", tmp_path / "c")
    a, b, c = ((tmp_path / d / "results.csv").read_text() for d in "abc")
    assert a.split("\n")[1].split(",")[:4] == b.split("\n")[1].split(",")[:4]  # same weights, same row
    assert a.split("\n")[1].split(",")[3] != c.split("\n")[1].split(",")[3]


def test_compare_onnx_model(folder, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = tmp_path / "net.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(tiny_net().eval(), (torch.rand(2, 3, 32, 32),), str(path), input_names=["image"],
                      dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    code, _, err = _run(capsys, "compare", "--model", path, "--images", folder / "images", "--methods",
                        "rise", "--metrics", "deletion", "--out", tmp_path / "o")
    assert code == 0, err
    code, _, err = _run(capsys, "compare", "--model", path, "--images", folder / "images", "--methods",
                        "gradcam", "--out", tmp_path / "o")
    assert code == 2 and "need a torch model" in err


def test_compare_errors(folder, tmp_path, capsys):
    images = folder / "images"
    good = f"{folder / 'net.py'}:make"
    cases = [
        (["--model", good, "--images", tmp_path / "nowhere"], "no such folder"),
        (["--model", f"{folder / 'net.py'}:NOT_CALLABLE", "--images", images], "not a callable factory"),
        (["--model", f"{folder / 'net.py'}:missing", "--images", images], "has no attribute 'missing'"),
        (["--model", "no_such_package.mod:make", "--images", images], "cannot import module"),
        (["--model", tmp_path / "missing.onnx", "--images", images], "no such file"),
        (["--model", good, "--checkpoint", tmp_path / "missing.pt", "--images", images], "no such file"),
        (["--model", good, "--images", images, "--methods", "occlusion,nope"], "Unknown method 'nope'"),
        (["--model", good, "--images", images, "--mean", "a,b"], "comma-separated numbers"),
    ]
    for args, message in cases:
        code, _, err = _run(capsys, "compare", *args, "--out", tmp_path / "o")
        assert code == 2 and message in err, (args, err)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, size in (("a.png", 32), ("b.png", 24)):
        (mixed / name).write_bytes((folder / "images" / "0.png").read_bytes())
        if size != 32:
            from PIL import Image

            with Image.open(mixed / name) as img:
                img.resize((size, size)).save(mixed / name)
    code, _, err = _run(capsys, "compare", "--model", good, "--images", mixed, "--out", tmp_path / "o")
    assert code == 2 and "pass --size H W" in err
    code, _, err = _run(capsys, "compare", "--model", good, "--images", mixed, "--size", 32, 32, "--methods",
                        "occlusion", "--metrics", "deletion", "--out", tmp_path / "o")
    assert code == 0, err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"this is not a png")
    code, _, err = _run(capsys, "compare", "--model", good, "--images", broken, "--out", tmp_path / "o")
    assert code == 2 and "cannot read image" in err and "bad.png" in err


def test_pickled_files_need_the_explicit_flag(folder, tmp_path, capsys):
    net = tiny_net()
    torch.save({"state_dict": net.state_dict(), "extra": Payload()}, tmp_path / "ckpt.pt")
    torch.save(net, tmp_path / "whole.pt")
    base = ["compare", "--images", folder / "images", "--methods", "occlusion", "--metrics", "deletion",
            "--out", tmp_path / "o"]
    code, _, err = _run(capsys, *base, "--model", f"{folder / 'net.py'}:make", "--checkpoint", tmp_path / "ckpt.pt")
    assert code == 2 and "--allow-pickle" in err
    code, _, err = _run(capsys, *base, "--model", tmp_path / "whole.pt")
    assert code == 2 and "--allow-pickle" in err
    code, _, err = _run(capsys, *base, "--model", f"{folder / 'net.py'}:make", "--checkpoint", tmp_path / "ckpt.pt",
                        "--allow-pickle")
    assert code == 0, err
    code, _, err = _run(capsys, *base, "--model", tmp_path / "whole.pt", "--allow-pickle")
    assert code == 0, err


def test_demo_writes_the_files_of_compare_and_one_run_time(tmp_path, capsys):
    pytest.importorskip("perturbx.models")
    from perturbx.report import OUTPUT_FILES

    code, out, err = _run(capsys, "demo", "--n-images", "2", "--methods", "occlusion,gradcam,lime", "--out", tmp_path)
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == set(OUTPUT_FILES)  # the names perturbx compare writes
    lines = [line for line in out.splitlines() if "queries/image" in line]
    assert [line.split()[0] for line in lines] == ["Occlusion", "GradCAM", "LIME"]
    assert "peak on object" in lines[0]
    console = re.search(r"compare\(\) wall time: ([0-9.]+) s", out).group(1)
    page = html.unescape((tmp_path / "report.html").read_text())
    assert f"compare() wall time: {console} s" in page  # one quantity, named alike in both
    assert "LIME and KernelSHAP run with baseline=0.0" in page  # why the demo's baselines, in the parameters
    assert re.search(r'"class": "LIME", [^}]*"baseline": 0.0,', page)


def test_compare_reads_every_accepted_image_type(folder, tmp_path, capsys):
    from PIL import Image

    from perturbx.images import read_image

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    with Image.open(folder / "images" / "0.png") as img:
        for name in ("a.jpeg", "b.webp", "c.gif", "d.bmp", "e.tiff"):
            img.save(mixed / name)
    np.save(mixed / "f.npy", read_image(folder / "images" / "1.png", layout="HWC"))  # channels last: moved
    code, _, err = _run(capsys, "compare", "--model", f"{folder / 'net.py'}:make", "--images", mixed, "--methods",
                        "occlusion", "--metrics", "deletion", "--out", tmp_path / "o")
    assert code == 0, err
    rows = (tmp_path / "o" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 6


def test_detection_demo_explains_every_detection_with_its_box(tmp_path, capsys):
    pytest.importorskip("perturbx.models")
    from perturbx.report import OUTPUT_FILES

    code, out, err = _run(capsys, "demo", "--task", "detection", "--n-images", "1", "--methods", "drise,occlusion",
                          "--out", tmp_path)
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == set(OUTPUT_FILES) | {"detections.png"}
    n = int(re.search(r"(\d+) detections in 1 scenes", out).group(1))
    assert n >= 1
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["method"] for r in rows] == ["drise", "occlusion"] * n
    assert all(r["target"].startswith("label ") and " at (" in r["target"] for r in rows)
    assert "D-RISE and black-box methods on the built-in object detector" in (tmp_path / "report.html").read_text()
