"""resnet50_shaped: torchvision's ResNet-50 layout (parameter count, names, shapes) without torchvision."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from perturbx.models.resnet50 import resnet50_shaped  # noqa: E402

#: torchvision.models.resnet50().parameters(), summed (torchvision 0.x, 1000 classes)
TORCHVISION_RESNET50_PARAMETERS = 25_557_032


@pytest.fixture(scope="module")
def net():
    return resnet50_shaped(10, random_state=0)


def test_parameter_count_and_names_are_torchvisions():
    full = resnet50_shaped(random_state=0)
    assert sum(p.numel() for p in full.parameters()) == TORCHVISION_RESNET50_PARAMETERS
    assert not full.training
    assert [len(getattr(full, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    block = full.layer2[0]
    for name in ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample"]:
        assert hasattr(block, name), name
    assert block.conv2.stride == (2, 2) and block.conv1.stride == (1, 1)  # v1.5: stride on the 3x3
    assert full.layer1[0].downsample is not None and full.layer1[1].downsample is None
    assert full.fc.in_features == 2048 and full.fc.out_features == 1000


def test_shapes_of_the_stages_at_224(net):
    seen = {}
    handles = [getattr(net, f"layer{i}").register_forward_hook(
        lambda m, a, out, i=i: seen.__setitem__(i, tuple(out.shape))) for i in range(1, 5)]
    with torch.inference_mode():
        out = net(torch.rand(2, 3, 224, 224))
    for h in handles:
        h.remove()
    assert out.shape == (2, 10)
    assert seen == {1: (2, 256, 56, 56), 2: (2, 512, 28, 28), 3: (2, 1024, 14, 14), 4: (2, 2048, 7, 7)}


def test_relus_are_not_inplace_and_each_runs_once(net):
    relus = [m for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    calls = {id(m): 0 for m in relus}
    handles = [m.register_forward_hook(lambda m, a, o: calls.__setitem__(id(m), calls[id(m)] + 1)) for m in relus]
    with torch.inference_mode():
        net(torch.rand(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert set(calls.values()) == {1}


def test_random_state_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a, b = resnet50_shaped(7, random_state=3), resnet50_shaped(7, random_state=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = resnet50_shaped(7, random_state=4)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_n_classes_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="'n_classes' parameter of resnet50_shaped must be an int >= 1. Got"):
        resnet50_shaped(bad)
