"""SECOND-style sparse conv backbones: OpenPCDet-compatible names/shapes/counts, forward, backward, loading."""
import pytest
import torch

pytest.importorskip("spconv.pytorch")

from pointmae.models.backbones.sparse_conv import VoxelBackBone8x, VoxelResBackBone8x  # noqa: E402

GRID = (32, 40, 24)  # (nx, ny, nz): sparse shape (25, 40, 32) -> stride 8 output (1, 5, 4)


def synthetic_voxels(in_channels, batch_size=2, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    nx, ny, nz = GRID
    coords = torch.stack([torch.randint(0, batch_size, (n,), generator=g), torch.randint(0, nz, (n,), generator=g),
                          torch.randint(0, ny, (n,), generator=g), torch.randint(0, nx, (n,), generator=g)], 1)
    coords = torch.unique(coords, dim=0).int()  # (N, 4) (batch, z, y, x)
    return torch.randn(len(coords), in_channels, generator=g), coords


def features_by_site(sparse):
    """Features sorted by (batch, z, y, x): spconv's output row order is not deterministic on CPU."""
    key = sparse.indices.long() @ torch.tensor([10**9, 10**6, 10**3, 1])
    return sparse.features[torch.argsort(key)]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# The numbers are interface facts of OpenPCDet's VoxelBackBone8x / VoxelResBackBone8x (checked by the team).
def test_voxel_backbone_8x_counts_and_names():
    model = VoxelBackBone8x(4, (1408, 1600, 40))
    sd = model.state_dict()
    assert n_params(model) == 711_872 and len(sd) == 72
    expected_shapes = {
        "conv_input.0.weight": (16, 3, 3, 3, 4), "conv_input.1.running_var": (16,),
        "conv1.0.0.weight": (16, 3, 3, 3, 16),
        "conv2.0.0.weight": (32, 3, 3, 3, 16), "conv2.2.1.weight": (32,),
        "conv3.0.0.weight": (64, 3, 3, 3, 32), "conv4.0.0.weight": (64, 3, 3, 3, 64),
        "conv4.2.0.weight": (64, 3, 3, 3, 64),
        "conv_out.0.weight": (128, 3, 1, 1, 64), "conv_out.1.num_batches_tracked": (),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    conv_weights = [k for k, v in sd.items() if v.dim() == 5]
    assert len(conv_weights) == 12
    assert not any(k[:-len("weight")] + "bias" in sd for k in conv_weights)  # convs have no bias (BN follows)
    assert {k.split(".")[0] for k in sd} == {"conv_input", "conv1", "conv2", "conv3", "conv4", "conv_out"}
    assert model.sparse_shape == [41, 1600, 1408]


def test_voxel_res_backbone_8x_counts_and_names():
    model = VoxelResBackBone8x(5, (1440, 1440, 40))
    sd = model.state_dict()
    assert n_params(model) == 2_695_312 and len(sd) == 142
    expected_shapes = {
        "conv_input.0.weight": (16, 3, 3, 3, 5),
        "conv1.0.conv1.weight": (16, 3, 3, 3, 16), "conv1.0.conv1.bias": (16,), "conv1.1.bn2.running_mean": (16,),
        "conv2.0.0.weight": (32, 3, 3, 3, 16), "conv2.2.conv2.bias": (32,),
        "conv4.0.0.weight": (128, 3, 3, 3, 64), "conv4.2.conv2.weight": (128, 3, 3, 3, 128),
        "conv_out.0.weight": (128, 3, 1, 1, 128),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key


@pytest.mark.parametrize("cls, in_channels, last_stage", [(VoxelBackBone8x, 4, 64), (VoxelResBackBone8x, 5, 128)])
def test_forward_backward_on_cpu(cls, in_channels, last_stage):
    torch.manual_seed(0)
    model = cls(in_channels, GRID)
    feats, coords = synthetic_voxels(in_channels)
    out = model(feats, coords, batch_size=2)
    assert out.stride == 8
    assert out.encoded.features.shape[1] == 128
    assert list(out.encoded.spatial_shape) == [1, 5, 4]  # z 25 -> 13 -> 7 -> 3 -> 1; y 40 / 8; x 32 / 8
    assert [out.multi_scale[f"x_conv{i}"].features.shape[1] for i in (1, 2, 3, 4)] == [16, 32, 64, last_stage]
    assert [list(out.multi_scale[f"x_conv{i}"].spatial_shape) for i in (1, 2, 3, 4)] == \
        [[25, 40, 32], [13, 20, 16], [7, 10, 8], [3, 5, 4]]
    assert set(out.encoded.indices[:, 0].tolist()) == {0, 1}
    assert out.dense_bev().shape == (2, 128, 5, 4)

    out.encoded.features.square().mean().backward()  # spconv's CPU backward, through the shim
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.conv_input[0].weight.grad.abs().sum() > 0

    model.eval()  # inference on CPU: the residual convs' biases are applied outside the kernel
    with torch.no_grad():
        assert torch.isfinite(model(feats, coords, batch_size=2).encoded.features).all()


def test_samples_do_not_mix():
    model = VoxelBackBone8x(4, GRID).eval()
    feats, coords = synthetic_voxels(4)
    with torch.no_grad():
        both = model(feats, coords, 2).encoded
        only0 = model(feats[coords[:, 0] == 0], coords[coords[:, 0] == 0], 2).encoded
    in0 = both.indices[:, 0] == 0
    n0 = int(in0.sum())
    torch.testing.assert_close(features_by_site(both)[:n0], features_by_site(only0))  # batch 0 sorts first


def test_checkpoint_with_backbone_3d_prefix_loads():
    """An OpenPCDet-style checkpoint ({'model_state': {'backbone_3d.<key>': ...}}) loads strictly."""
    torch.manual_seed(1)
    source = VoxelResBackBone8x(5, GRID)
    with torch.no_grad():  # move every parameter and BN statistic away from its initial value, gently
        for name, t in source.state_dict().items():
            if t.is_floating_point():
                t.add_(0.05 * torch.rand_like(t) if "running_var" in name else 0.05 * torch.randn_like(t))
    checkpoint = {"model_state": {f"backbone_3d.{k}": v for k, v in source.state_dict().items()}}
    checkpoint["model_state"]["dense_head.conv.weight"] = torch.zeros(1)  # other parts of a detector
    backbone_state = {k[len("backbone_3d."):]: v for k, v in checkpoint["model_state"].items()
                      if k.startswith("backbone_3d.")}
    target = VoxelResBackBone8x(5, GRID)
    result = target.load_state_dict(backbone_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    feats, coords = synthetic_voxels(5)
    with torch.no_grad():
        torch.testing.assert_close(features_by_site(target.eval()(feats, coords, 2).encoded),
                                   features_by_site(source.eval()(feats, coords, 2).encoded))
    with pytest.raises(RuntimeError):  # the other variant's shapes differ: loading fails loudly
        VoxelBackBone8x(5, GRID).load_state_dict(backbone_state)


def test_bad_input_names_the_argument():
    model = VoxelBackBone8x(4, GRID)
    feats, coords = synthetic_voxels(4, n=10)
    with pytest.raises(ValueError, match="voxel_features"):
        model(feats[:, :3], coords, 2)
    with pytest.raises(ValueError, match="voxel_coords"):
        model(feats, coords.float(), 2)
    with pytest.raises(ValueError, match="grid_size"):
        VoxelBackBone8x(4, (10, 10))
