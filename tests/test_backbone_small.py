"""resnet_small: ResNet-18's block layout at a quarter of its widths, the CPU default's encoder."""

import torch

from finesyn.models.backbone import SMALL_WIDTHS, Backbone


def test_resnet_small_is_resnet18_layout_at_quarter_width():
    small, big = Backbone("resnet_small"), Backbone("resnet18")
    assert small.dim == SMALL_WIDTHS[-1] == big.dim // 4
    for name in ("layer1", "layer2", "layer3", "layer4"):
        assert len(getattr(small.net, name)) == len(getattr(big.net, name)) == 2
    n_small = sum(p.numel() for p in small.parameters())
    n_big = sum(p.numel() for p in big.parameters())
    assert n_small < n_big / 12  # widths / 4 -> parameters / ~16


def test_resnet_small_keeps_twice_resnet18_resolution_and_pools_to_h():
    x = torch.randn(2, 3, 64, 64)
    small, big = Backbone("resnet_small").eval(), Backbone("resnet18").eval()
    assert small.forward_maps(x).shape[-1] == 2 * big.forward_maps(x).shape[-1] == 4
    assert small(x).shape == (2, SMALL_WIDTHS[-1])
    assert Backbone("resnet_small", "small").eval().forward_maps(x).shape[-1] == 8  # no max-pool: full resolution


def test_resnet_small_uses_torchvision_initialisation_and_is_seeded():
    torch.manual_seed(0)
    a = Backbone("resnet_small")
    torch.manual_seed(0)
    b = Backbone("resnet_small")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    conv = a.net.layer2[0].conv1.weight  # kaiming_normal(fan_out): std = sqrt(2 / (out * 3 * 3))
    expected = (2.0 / (conv.shape[0] * 9)) ** 0.5
    assert abs(conv.std().item() - expected) < 0.1 * expected
    assert torch.equal(a.net.layer1[0].bn1.weight, torch.ones(SMALL_WIDTHS[0]))


def test_max_pool_takes_the_strongest_response_of_each_channel():
    x = torch.randn(3, 3, 64, 64)
    avg, mx = Backbone("resnet_small").eval(), Backbone("resnet_small", pool="max").eval()
    mx.load_state_dict(avg.state_dict())  # pooling has no parameters: the same weights fit both
    maps = avg.forward_maps(x)
    n = maps.shape[2] * maps.shape[3]  # two float32 sums of n terms in any order differ by <= 2 n u max|x|
    bound = 2 * n * torch.finfo(torch.float32).eps / 2 * maps.abs().amax().item()
    assert (avg(x) - maps.mean((2, 3))).abs().max().item() <= bound
    assert torch.equal(mx(x), maps.amax((2, 3)))
