"""The embedded shapes' harder options: the "fine" class set, single-view partial scans, density jitter."""
import numpy as np
import pytest
import torch

from pointmae.data.objects import SyntheticShapes, make_shape
from pointmae.data.objects.shapes import CLASS_SETS, visible_from


def test_class_sets():
    assert len(CLASS_SETS["basic"]) == 10 and len(CLASS_SETS["fine"]) == 16
    assert CLASS_SETS["fine"][:10] == CLASS_SETS["basic"]
    ds = SyntheticShapes(samples_per_class=2, class_set="fine", num_points=256)
    assert len(ds) == 32 and ds.labels == [ds[i][1] for i in range(32)]
    for i in range(16):                      # every fine class generates a normalised cloud
        pts = ds[i][0]
        assert pts.shape == (256, 3) and torch.isfinite(pts).all()
        assert torch.allclose(pts.norm(dim=1).max(), torch.tensor(1.0))


def test_visible_from_keeps_the_near_side_of_a_sphere():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20000, 3))
    sphere = v / np.linalg.norm(v, axis=1, keepdims=True)
    seen = visible_from(sphere, np.array([1.0, 0.0, 0.0]), cell=0.1)
    assert seen[sphere[:, 0] > 0.5].all()            # facing the camera: all seen
    assert not seen[sphere[:, 0] < -0.3].any()        # the back: none
    assert 0.4 < seen.mean() < 0.65


def test_partial_view_scans_are_one_sided_and_deterministic():
    a = make_shape("sphere", 1024, np.random.default_rng(1), noise_std=0.0, tilt_deg=0.0, partial_view=True)
    b = make_shape("sphere", 1024, np.random.default_rng(1), noise_std=0.0, tilt_deg=0.0, partial_view=True)
    assert np.array_equal(a, b) and a.shape == (1024, 3)
    full = make_shape("sphere", 1024, np.random.default_rng(1), noise_std=0.0, tilt_deg=0.0)
    # After centring, a full sphere's points all lie at the same radius; a cap (the seen half) does not.
    r_full, r_part = np.linalg.norm(full, axis=1), np.linalg.norm(a, axis=1)
    assert r_full.std() < 0.03 and r_part.std() > 0.1


def test_density_jitter_skews_the_sampling():
    # A sphere sampled denser on one side has its centroid moved towards that side, so after
    # re-centring its points no longer lie at one radius.
    def radius_spread(jitter):
        pts = make_shape("sphere", 4096, np.random.default_rng(2), noise_std=0.0, tilt_deg=0.0, density_jitter=jitter)
        return np.linalg.norm(pts, axis=1).std()
    assert radius_spread(4.0) > 3 * radius_spread(0.0)


def test_cache_returns_the_same_clouds():
    plain = SyntheticShapes(samples_per_class=2, num_points=128, partial_view=True)
    cached = SyntheticShapes(samples_per_class=2, num_points=128, partial_view=True, cache=True)
    for i in range(len(plain)):
        first = cached[i][0]
        first.mul_(0)                                    # a caller modifying its copy does not reach the cache
        assert torch.equal(cached[i][0], plain[i][0]) and cached[i][1] == plain[i][1]


def test_bad_options():
    with pytest.raises(ValueError, match="class_set"):
        SyntheticShapes(class_set="all")
    with pytest.raises(ValueError, match="density_jitter"):
        SyntheticShapes(density_jitter=-1.0)
    with pytest.raises(ValueError, match="unknown class"):
        make_shape("dragon", 10, np.random.default_rng(0))
