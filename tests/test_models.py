"""Tests of perturbx.models: the demo CNN, its cache and the ResNet-18-shaped net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perturbx.datasets import make_shapes  # noqa: E402
from perturbx.models import (  # noqa: E402
    DEMO_RECIPE_VERSION,
    DEMO_TEST_SEED,
    DEMO_TRAIN_SEED,
    DemoCNN,
    load_demo_model,
    resnet18_shaped,
    train_demo_model,
)

# The module that defines load_demo_model and looks up the names the tests patch.
from perturbx.models import classifier as models  # noqa: E402


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoCNN]:
    """Train the demo model once for the whole session into a fresh cache dir."""
    cache_dir = tmp_path_factory.mktemp("perturbx_cache")
    return cache_dir, load_demo_model(cache_dir=cache_dir)


def _fake_train(accuracy: float = 0.5):
    """A stand-in for train_demo_model that returns an untrained model at once."""
    calls = []

    def train(**kwargs):
        calls.append(kwargs)
        return DemoCNN().eval(), accuracy

    train.calls = calls
    return train


def _no_train(**kwargs):
    raise AssertionError("load_demo_model retrained instead of loading the cache")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- DemoCNN ---------------------------------------------------------------


def test_demo_cnn_output_shape() -> None:
    net = DemoCNN().eval()
    with torch.no_grad():
        out = net(torch.rand(5, 3, 64, 64))
    assert out.shape == (5, 4)
    assert isinstance(net.features, torch.nn.Sequential)
    assert isinstance(net.classifier, torch.nn.Module)
    with torch.no_grad():
        assert net.features(torch.rand(2, 3, 64, 64)).shape == (2, 64, 8, 8)
    assert DemoCNN(n_classes=7).eval()(torch.rand(1, 3, 64, 64)).shape == (1, 7)


def test_demo_cnn_relus_are_not_inplace() -> None:
    relus = [m for m in DemoCNN().modules() if isinstance(m, torch.nn.ReLU)]
    assert relus
    assert not any(m.inplace for m in relus)


# --- cache and training ----------------------------------------------------


def test_load_demo_model_writes_versioned_cache(demo_cache) -> None:
    cache_dir, net = demo_cache
    path = cache_dir / f"demo_cnn_v{DEMO_RECIPE_VERSION}.pt"
    assert path.is_file()
    assert sorted(p.name for p in cache_dir.iterdir()) == [path.name]  # no temp files left
    blob = torch.load(path, weights_only=True)
    assert blob["version"] == DEMO_RECIPE_VERSION
    assert blob["n_classes"] == 4
    assert 0.95 <= blob["accuracy"] <= 1.0
    assert net.demo_accuracy == pytest.approx(blob["accuracy"])
    assert not net.training
    assert all(p.requires_grad for p in net.parameters())


def test_second_call_loads_from_cache(demo_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir, first = demo_cache
    monkeypatch.setattr(models, "train_demo_model", _no_train)
    second = load_demo_model(cache_dir=cache_dir)
    assert second is not first
    assert _same_weights(first, second)
    assert not second.training
    x = torch.from_numpy(make_shapes(8, random_state=DEMO_TEST_SEED).images)
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x))


def test_held_out_accuracy(demo_cache) -> None:
    _, net = demo_cache
    data = make_shapes(300, random_state=DEMO_TEST_SEED)
    with torch.no_grad():
        pred = net(torch.from_numpy(data.images)).argmax(dim=1).numpy()
    accuracy = float((pred == data.labels).mean())
    assert accuracy >= 0.95, accuracy


def test_model_localises_the_object(demo_cache) -> None:
    """Pointing game: sliding-window occlusion (16 px windows, stride 8, black
    baseline, score = true-class logit) peaks within 15 px of the object."""
    _, net = demo_cache
    data = make_shapes(30, random_state=DEMO_TEST_SEED + 7)
    win, stride, size = 16, 8, 64
    corners = [(r, c) for r in range(0, size - win + 1, stride) for c in range(0, size - win + 1, stride)]
    hits = []
    for image, label, mask in zip(data.images, data.labels, data.masks, strict=True):
        x = torch.from_numpy(image)
        batch = x.repeat(len(corners) + 1, 1, 1, 1)
        for k, (r, c) in enumerate(corners, start=1):
            batch[k, :, r:r + win, c:c + win] = 0.0
        with torch.no_grad():
            score = net(batch)[:, label].numpy()
        total, count = np.zeros((size, size)), np.zeros((size, size))
        for (r, c), s in zip(corners, score[1:], strict=True):
            total[r:r + win, c:c + win] += score[0] - s
            count[r:r + win, c:c + win] += 1
        row, col = np.unravel_index(np.argmax(total / count), (size, size))
        rows, cols = np.nonzero(mask)
        hits.append(np.hypot(rows - row, cols - col).min() <= 15)
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_retrain_overwrites_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_train(accuracy=0.25)
    monkeypatch.setattr(models, "train_demo_model", fake)
    load_demo_model(cache_dir=tmp_path)
    assert len(fake.calls) == 1
    load_demo_model(cache_dir=tmp_path)  # cached now
    assert len(fake.calls) == 1
    fake2 = _fake_train(accuracy=0.75)
    monkeypatch.setattr(models, "train_demo_model", fake2)
    net = load_demo_model(cache_dir=tmp_path, retrain=True)
    assert len(fake2.calls) == 1
    assert net.demo_accuracy == 0.75
    blob = torch.load(tmp_path / f"demo_cnn_v{DEMO_RECIPE_VERSION}.pt", weights_only=True)
    assert blob["accuracy"] == 0.75
    assert len(list(tmp_path.iterdir())) == 1


def test_corrupt_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"demo_cnn_v{DEMO_RECIPE_VERSION}.pt"
    path.write_bytes(b"not a torch file")
    fake = _fake_train()
    monkeypatch.setattr(models, "train_demo_model", fake)
    with pytest.warns(RuntimeWarning, match="unusable cache file"):
        net = load_demo_model(cache_dir=tmp_path)
    assert len(fake.calls) == 1
    assert isinstance(net, DemoCNN)
    assert torch.load(path, weights_only=True)["version"] == DEMO_RECIPE_VERSION


def test_other_recipe_version_is_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_train()
    monkeypatch.setattr(models, "train_demo_model", fake)
    load_demo_model(cache_dir=tmp_path)
    monkeypatch.setattr(models, "DEMO_RECIPE_VERSION", DEMO_RECIPE_VERSION + "-changed")
    load_demo_model(cache_dir=tmp_path)
    assert len(fake.calls) == 2
    assert len(list(tmp_path.iterdir())) == 2


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERTURBX_CACHE", str(tmp_path / "env_cache"))
    monkeypatch.setattr(models, "train_demo_model", _fake_train())
    load_demo_model()
    assert (tmp_path / "env_cache" / f"demo_cnn_v{DEMO_RECIPE_VERSION}.pt").is_file()


def test_train_demo_model_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, acc_a = train_demo_model(n_train=64, epochs=1, random_state=3)
    b, acc_b = train_demo_model(n_train=64, epochs=1, random_state=3)
    assert torch.equal(state, torch.get_rng_state())
    assert _same_weights(a, b)
    assert acc_a == acc_b
    assert 0.0 <= acc_a <= 1.0
    assert not a.training
    c, _ = train_demo_model(n_train=64, epochs=1, random_state=4)
    assert not _same_weights(a, c)


def test_train_demo_model_validates() -> None:
    with pytest.raises(ValueError, match="n_train and epochs must be >= 1; got n_train=0"):
        train_demo_model(n_train=0)
    with pytest.raises(ValueError, match="epochs=0"):
        train_demo_model(epochs=0)


def test_seeds_differ() -> None:
    assert DEMO_TRAIN_SEED != DEMO_TEST_SEED


# --- resnet18_shaped -------------------------------------------------------


def test_resnet18_shaped_output_and_names() -> None:
    net = resnet18_shaped(random_state=0)
    assert not net.training
    with torch.no_grad():
        out = net(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]:
        assert hasattr(net, name), name
    assert len(net.layer4) == 2
    block = net.layer4[0]
    for name in ["conv1", "bn1", "relu", "conv2", "bn2", "downsample"]:
        assert hasattr(block, name), name
    assert block.downsample is not None
    assert net.layer1[0].downsample is None
    assert [layer[0].conv2.out_channels for layer in (net.layer1, net.layer2, net.layer3, net.layer4)] == [
        64, 128, 256, 512,
    ]
    # Exactly torchvision's ResNet-18 parameter count.
    assert sum(p.numel() for p in net.parameters()) == 11_689_512
    assert resnet18_shaped(n_classes=10).fc.out_features == 10


def test_resnet18_shaped_layer4_hook() -> None:
    net = resnet18_shaped(n_classes=10, random_state=0)
    seen = {}

    def hook(module, inputs, output) -> None:
        seen["shape"] = output.shape

    handle = net.layer4.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.rand(2, 3, 224, 224))
    handle.remove()
    assert seen["shape"] == (2, 512, 7, 7)


def test_resnet18_shaped_relus_used_once_and_not_inplace() -> None:
    net = resnet18_shaped(n_classes=10, random_state=0)
    relus = [m for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    assert not any(m.inplace for m in relus)
    calls = {id(m): 0 for m in relus}

    def count(module, inputs, output):
        calls[id(module)] += 1

    handles = [m.register_forward_hook(count) for m in relus]
    with torch.no_grad():
        net(torch.rand(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert set(calls.values()) == {1}
    assert len(relus) == 1 + 8 * 2


def test_resnet18_shaped_random_state() -> None:
    state = torch.get_rng_state()
    a = resnet18_shaped(n_classes=10, random_state=1)
    assert torch.equal(state, torch.get_rng_state())
    b = resnet18_shaped(n_classes=10, random_state=1)
    c = resnet18_shaped(n_classes=10, random_state=2)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
