"""convnet: four conv-BN-ReLU blocks with max-pools, the plain CNN family the data test trains."""

import pytest
import torch

from finesyn.models.backbone import CONVNET_WIDTHS, NARROW_WIDTHS, Backbone, load_init


def test_convnet_keeps_full_resolution_first_and_an_8x8_map_at_64_px():
    x = torch.randn(2, 3, 64, 64)
    net = Backbone("convnet").eval()
    assert net.dim == CONVNET_WIDTHS[-1]
    assert net.forward_maps(x).shape == (2, CONVNET_WIDTHS[-1], 8, 8)  # three 2x2 pools: 64 -> 8
    assert net(x).shape == (2, CONVNET_WIDTHS[-1])
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1)] * 4  # no strided conv: only the pools downsample


def test_convnet_max_pool_is_the_channel_maximum_of_its_maps():
    x = torch.randn(3, 3, 64, 64)
    mx = Backbone("convnet", pool="max").eval()
    assert torch.equal(mx(x), mx.forward_maps(x).amax((2, 3)))


def test_convnet_state_dict_round_trips_through_init(tmp_path):
    torch.manual_seed(0)
    a = Backbone("convnet")
    path = tmp_path / "init.pth"
    torch.save(a.net.state_dict(), path)
    torch.manual_seed(1)
    b = Backbone("convnet")
    load_init(b, str(path))
    assert all(torch.equal(p, q) for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()) if "fc." not in k)
    with pytest.raises(ValueError, match="does not fit resnet_small"):
        load_init(Backbone("resnet_small"), str(path))


def test_convnet_refuses_the_small_stem():
    with pytest.raises(ValueError, match="stem 'small'"):
        Backbone("convnet", "small")


def test_convnet_narrow_is_the_same_layout_at_half_width(tmp_path):
    x = torch.randn(2, 3, 64, 64)
    wide, narrow = Backbone("convnet").eval(), Backbone("convnet_narrow").eval()
    assert narrow.dim == NARROW_WIDTHS[-1] == CONVNET_WIDTHS[-1] // 2
    assert narrow.forward_maps(x).shape == (2, NARROW_WIDTHS[-1], 8, 8)
    shapes = lambda net: [tuple(p.shape) for p in net.parameters()]  # noqa: E731
    assert [len(s) for s in shapes(narrow)] == [len(s) for s in shapes(wide)]
    assert sum(p.numel() for p in narrow.parameters()) * 3.5 < sum(p.numel() for p in wide.parameters())
    torch.save(narrow.net.state_dict(), tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="does not fit convnet"):  # a narrow init in the wide net names the mismatch
        load_init(Backbone("convnet"), str(tmp_path / "narrow.pth"))


def test_a_missing_init_file_suggests_only_what_exists(tmp_path):
    with pytest.raises(FileNotFoundError, match="convnet has no published ImageNet weights") as e:
        load_init(Backbone("convnet"), str(tmp_path / "missing.pth"))
    assert "torchvision.models.convnet" not in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"torchvision\.models\.resnet18\(weights="):
        load_init(Backbone("resnet18"), str(tmp_path / "missing.pth"))
