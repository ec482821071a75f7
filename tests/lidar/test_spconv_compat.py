"""spconv shims: CPU backward, bias outside the conv, checkpoint compatibility with spconv's modules."""
import pytest
import torch
import torch.nn.functional as F

spconv = pytest.importorskip("spconv.pytorch")

from pointmae.models.backbones import spconv_compat  # noqa: E402
from pointmae.models.backbones.spconv_compat import SparseConv3d, SubMConv3d  # noqa: E402

SHAPE = (6, 7, 8)  # (D, H, W) = (z, y, x)


def sparse_input(channels=3, batch=2, n=60, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack([torch.randint(0, batch, (n,), generator=g)] +
                         [torch.randint(0, s, (n,), generator=g) for s in SHAPE], 1)
    coords = torch.unique(coords, dim=0).int()  # (N, 4) (batch, z, y, x), unique sites
    feats = torch.randn(len(coords), channels, generator=g, dtype=dtype)
    return coords, feats


def densify(coords, feats, batch=2):
    dense = torch.zeros(batch, feats.shape[1], *SHAPE, dtype=feats.dtype)
    b, z, y, x = coords.long().unbind(1)
    dense[b, :, z, y, x] = feats
    return dense


def test_raw_spconv_backward_needs_the_shim_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("with a GPU spconv's own stream getter works")
    with pytest.raises(RuntimeError):
        spconv_compat._ORIGINAL_GET_CURRENT_STREAM()
    spconv_compat.install_spconv_cpu_shims()
    assert spconv_compat.spconv_cpu_shims_installed()
    assert spconv.ops.get_current_stream() == 0


@pytest.mark.parametrize("seed", range(8))
def test_submanifold_conv_matches_dense_conv_forward_and_backward(seed):
    """Submanifold conv = dense conv on the zero-filled grid, read at the active sites; gradients too.

    Also pins the weight layout [out, kD, kH, kW, in] with kD along z (the first spatial axis).
    Repeated over seeds with the default (multi-threaded) torch settings: without shim (c) about one
    run in five gave wrong rows on a 2-core machine.
    """
    torch.manual_seed(seed)
    coords, feats = sparse_input(seed=seed)
    conv = SubMConv3d(3, 4, kernel_size=(3, 3, 3), padding=1, bias=True, indice_key="t").double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight))
        conv.bias.copy_(torch.randn_like(conv.bias))
    feats_sparse = feats.clone().requires_grad_(True)
    out = conv(spconv.SparseConvTensor(feats_sparse, coords, list(SHAPE), 2))
    weight_dense = conv.weight.detach().permute(0, 4, 1, 2, 3).clone().requires_grad_(True)  # [out, in, kD, kH, kW]
    feats_dense = feats.clone().requires_grad_(True)
    dense_out = F.conv3d(densify(coords, feats_dense), weight_dense, conv.bias.detach(), padding=1)
    b, z, y, x = out.indices.long().unbind(1)
    expected = dense_out[b, :, z, y, x]  # (N, 4)
    torch.testing.assert_close(out.features, expected)

    upstream = torch.randn_like(expected)
    (out.features * upstream).sum().backward()  # goes through spconv's CPU backward
    (expected * upstream).sum().backward()
    torch.testing.assert_close(feats_sparse.grad, feats_dense.grad)
    torch.testing.assert_close(conv.weight.grad, weight_dense.grad.permute(0, 2, 3, 4, 1))
    torch.testing.assert_close(conv.bias.grad, upstream.sum(0))


def test_bias_works_in_eval_on_cpu_and_matches_spconv_state_dict():
    coords, feats = sparse_input(dtype=torch.float32)
    ours = SparseConv3d(3, 5, 3, stride=2, padding=1, bias=True, indice_key="d")
    theirs = spconv.SparseConv3d(3, 5, 3, stride=2, padding=1, bias=True, indice_key="d")
    sd = theirs.state_dict()
    assert list(ours.state_dict()) == list(sd) == ["weight", "bias"]
    assert all(ours.state_dict()[k].shape == v.shape for k, v in sd.items())
    assert ours.weight.shape == (5, 3, 3, 3, 3)  # [out, kD, kH, kW, in]
    ours.load_state_dict(sd)  # a spconv / OpenPCDet checkpoint loads unchanged
    x = spconv.SparseConvTensor(feats, coords, list(SHAPE), 2)
    reference = theirs.train()(x).features  # spconv adds the bias itself in training mode
    torch.testing.assert_close(ours.train()(x).features, reference)
    torch.testing.assert_close(ours.eval()(x).features, reference)  # spconv's own eval asserts on CPU
    if not torch.cuda.is_available():
        with pytest.raises(AssertionError, match="bias"):
            theirs.eval()(x)


def test_single_thread_shim_restores_thread_count():
    spconv_compat.install_spconv_cpu_shims()
    before = torch.get_num_threads()
    coords, feats = sparse_input(dtype=torch.float32)
    conv = SubMConv3d(3, 2, 3, padding=1, indice_key="k")
    conv(spconv.SparseConvTensor(feats.requires_grad_(True), coords, list(SHAPE), 2)).features.sum().backward()
    assert torch.get_num_threads() == before


def test_no_bias_conv_has_only_weight():
    conv = SubMConv3d(4, 16, 3, padding=1, bias=False, indice_key="subm1")
    assert list(conv.state_dict()) == ["weight"]
    assert isinstance(conv, spconv.SubMConv3d)  # spconv containers treat it as one of theirs
