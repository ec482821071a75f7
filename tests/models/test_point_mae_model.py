import pytest
import torch

from pointmae.models.point_mae import (PointMAE, PointMAEClassifier, block_masking, point_mae_small,
                                       point_mae_tiny, random_masking)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_published_models():
    # Published Point-MAE: pre-training 29,006,432 parameters (encoder 21,825,024 incl. the mini-PointNet
    # 494,464; decoder + mask token + decoder positions 7,144,448; prediction head 36,960);
    # ModelNet40 fine-tuning model 22,099,752.
    m = point_mae_small()
    assert n_params(m) == 29_006_432
    assert n_params(m.encoder) == 21_825_024
    assert n_params(m.encoder.patch_embed) == 494_464
    decoder = n_params(m.decoder_blocks) + n_params(m.decoder_norm) + n_params(m.decoder_pos_embed) + m.mask_token.numel()
    assert decoder == 7_144_448
    assert n_params(m.decoder_pred) == 36_960
    assert n_params(PointMAEClassifier(num_classes=40)) == 22_099_752


def test_random_masking_exact_count_per_sample():
    g = torch.Generator().manual_seed(0)
    mask = random_masking(16, 64, 0.6, "cpu", g)
    assert mask.shape == (16, 64) and mask.dtype == torch.bool
    assert (mask.sum(1) == int(0.6 * 64)).all()
    assert len({tuple(r.tolist()) for r in mask}) == 16          # per sample, not shared
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(mask, random_masking(16, 64, 0.6, "cpu", g2))


def test_block_masking_is_a_contiguous_region():
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(4, 64, 3, generator=g)
    mask = block_masking(centers, 0.6, g)
    assert (mask.sum(1) == 38).all()
    for b in range(4):
        # every masked centre is closer to the masked set's seed than every visible one: the masked
        # set is a ball around some centre, so max masked distance <= min visible distance from it
        masked, visible = centers[b][mask[b]], centers[b][~mask[b]]
        ok = False
        for s in masked:
            if (masked - s).norm(dim=1).max() <= (visible - s).norm(dim=1).min() + 1e-6:
                ok = True
                break
        assert ok


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="mask_type"):
        PointMAE(mask_type="grid")
    with pytest.raises(ValueError, match="mask_ratio"):
        PointMAE(mask_ratio=1.0)


def test_tiny_model_builds():
    assert n_params(point_mae_tiny()) < n_params(point_mae_small()) / 5


def test_tiny_model_forward_backward_and_determinism():
    # The whole pipeline on real ops: FPS + kNN patches, masking, encoder, decoder, Chamfer-L2.
    points = torch.rand(2, 256, 3, generator=torch.Generator().manual_seed(0))
    model = point_mae_tiny(num_groups=16, group_size=16)
    out = model(points, generator=torch.Generator().manual_seed(1))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["pred"].shape == (2 * int(0.6 * 16), 16, 3)
    assert out["neighborhoods"].shape == (2, 16, 16, 3) and out["centers"].shape == (2, 16, 3)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    model.eval()
    a = model(points, generator=torch.Generator().manual_seed(1))["loss"]
    b = model(points, generator=torch.Generator().manual_seed(1))["loss"]
    assert torch.equal(a, b)


def test_prediction_layer_starts_small_unless_asked_for_the_default_init():
    # pred_init_std (default 1e-3): the first predicted patches are near their centres, far smaller
    # than real patches; None keeps PyTorch's Conv1d init (the official code), whose first patches are
    # many times larger than the real ones.
    points = torch.rand(2, 256, 3)
    spreads = {}
    for std in (1e-3, None):
        torch.manual_seed(0)
        model = PointMAE(num_groups=16, group_size=16, embed_dim=64, depth=1, num_heads=2, decoder_depth=1,
                         decoder_num_heads=2, patch_embed_width=32, pred_init_std=std).eval()
        out = model(points)
        spreads[std] = (out["pred"].norm(dim=-1).mean().item(), out["neighborhoods"].norm(dim=-1).mean().item())
    pred_small, real = spreads[1e-3]
    pred_default, _ = spreads[None]
    assert pred_small < 0.1 * real < pred_default
