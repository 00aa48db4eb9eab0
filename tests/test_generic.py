"""The generic world (finesyn.data.generic): the init stage's stand-in for ImageNet."""

import numpy as np
import pytest

from finesyn.data import generic
from finesyn.data.generic import SHAPES, generate_generic
from finesyn.data.synthetic import GLYPHS


def test_counts_order_determinism_and_no_fine_grained_classes():
    a = generate_generic(num_classes=5, train_per_class=3, test_per_class=2, image_size=32)
    b = generate_generic(num_classes=5, train_per_class=3, test_per_class=2, image_size=32)
    assert a.images.shape == (25, 32, 32, 3) and a.split.tolist() == ["train"] * 15 + ["test"] * 10
    assert a.labels[:15].tolist() == [i % 5 for i in range(15)]
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, generate_generic(num_classes=5, train_per_class=3, test_per_class=2, image_size=32, seed=1).images)
    assert not set(SHAPES) & set(GLYPHS)  # its classes are not the fine-grained ones
    with pytest.raises(ValueError, match="num_classes"):
        generate_generic(num_classes=11)


@pytest.mark.parametrize("name", SHAPES)
def test_every_shape_is_drawn_inside_the_unit_disc(name):
    t = (np.arange(200) + 0.5) / 200 * 2.4 - 1.2
    u, v = np.meshgrid(t, t)
    inside = generic._sd_shape(name, u, v) <= 0
    area = inside.mean() * 2.4**2
    assert 0.4 < area < np.pi  # a real region, not empty, not the whole frame
    assert not inside[np.hypot(u, v) > 1.05].any()


def test_shapes_differ_pixelwise_for_the_same_scene():
    from finesyn.data.synthetic import _item_params

    p = _item_params(np.random.default_rng([3, 0, 0]), 64, (0.25, 0.25))
    imgs = generic._render_shapes([p] * len(SHAPES), list(SHAPES), 64).astype(np.int16)
    diff = np.abs(imgs[:, None] - imgs[None]).max(-1) > 8
    assert diff.mean(axis=(2, 3))[~np.eye(len(SHAPES), dtype=bool)].min() > 0.005
