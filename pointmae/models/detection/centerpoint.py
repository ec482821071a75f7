"""CenterPoint (Yin, Zhou and Krähenbühl, "Center-based 3D Object Detection and Tracking", CVPR 2021),
the one-stage version: objects are points on a bird's-eye-view map.

    batch["points"] (N, C) ──voxelizer──► voxels ──vfe──► (V, C) ──backbone_3d──►
        sparse conv: stride-8 sparse tensor ──HeightCompression──► (B, 128 * D, H/8, W/8)
        SST:         (V, dim) per pillar   ──PillarScatter──────► (B, dim, H, W)
    ──backbone_2d (SECOND blocks + deconv fusion)──► (B, F, H', W') ──dense_head──► heatmaps + codes
    training: focal heatmap loss + L1 on the codes at object centres
    inference: top-k peaks per task group -> boxes -> score threshold -> per-class rotated BEV NMS
               (or circle NMS)
Classes may be split into task groups (`tasks`, CenterHead's docstring), as CenterPoint does on nuScenes.

Attribute names follow the shared LiDAR contract (`vfe`, `backbone_3d`), so a pointmae pre-training
checkpoint or an OpenPCDet one loads its 3D encoder under the same keys (see pointmae/models/pretrained.py).

forward(batch) takes the LiDAR batch of pointmae.data.detection.collate_detection ("points",
"offsets", "channels", "boxes", "labels", ...) and returns the engine's dict: scalar "loss" and its
terms. predict(batch) returns one dict per frame: {"frame_id", "boxes" (M, 7|9) float64, "scores" (M,),
"labels" (M,), "names" (M,)}.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from pointmae.models.backbones.sparse_conv import VoxelBackBone8x, VoxelResBackBone8x
from pointmae.models.backbones.sst import SSTBackbone
from pointmae.models.detection.bev import (BEVBackbone, HeightCompression, PillarScatter,
                                           sparse_backbone_bev_depth)
from pointmae.models.detection.center_head import CenterHead
from pointmae.models.detection.losses import focal_heatmap_loss, gather_at, masked_l1_loss
from pointmae.models.detection.postprocess import local_maxima, postprocess, topk_candidates
from pointmae.models.detection.targets import FeatureGrid, build_targets, code_size
from pointmae.models.detection.voxelization import Voxelizer
from pointmae.models.voxel_features import MeanVFE


class CenterPoint(nn.Module):
    def __init__(self, class_names: Sequence[str], point_channels: Sequence[str] = ("x", "y", "z", "intensity"),
                 point_range: Sequence[float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
                 voxel_size: Sequence[float] = (0.05, 0.05, 0.1), vfe: str = "mean",
                 max_points_per_voxel: int = 5, max_voxels: int = 40000, backbone: str = "VoxelBackBone8x",
                 sst_dim: int = 128, sst_depth: int = 6, sst_num_heads: int = 8,
                 sst_window: Sequence[int] = (12, 12),
                 bev_layer_nums: Sequence[int] = (5, 5), bev_layer_strides: Sequence[int] = (1, 2),
                 bev_num_filters: Sequence[int] = (128, 256), bev_upsample_strides: Sequence[float] = (1, 2),
                 bev_num_upsample_filters: Sequence[int] = (256, 256), head_channels: int = 64,
                 tasks: Sequence[Sequence[str]] | None = None,
                 with_velocity: bool = False, heading: str = "direction", min_overlap: float = 0.1, min_radius: int = 2,
                 max_objects: int = 500, loc_weight: float = 0.25,
                 code_weights: Sequence[float] = (1.0,) * 8 + (0.2, 0.2), top_k: int = 500,
                 score_threshold: float = 0.1, nms: str = "rotated", nms_scope: str = "class",
                 nms_iou_threshold: float = 0.01,
                 circle_nms_radius: Sequence[float] = (), max_detections: int = 500):
        super().__init__()
        if not class_names:
            raise ValueError("class_names must name at least one class")
        self.class_names = list(class_names)
        # Task groups (CenterHead's docstring): class names -> class indices; None = one group of all.
        tasks = [list(self.class_names)] if tasks is None else [list(t) for t in tasks]
        grouped = [name for t in tasks for name in t]
        if sorted(grouped) != sorted(self.class_names) or len(set(grouped)) != len(grouped) or not all(tasks):
            raise ValueError(f"tasks must split class_names {self.class_names} into non-empty groups, each name "
                             f"exactly once, got {tasks}")
        self.tasks = [[self.class_names.index(name) for name in t] for t in tasks]
        self.with_velocity = with_velocity
        cs = code_size(with_velocity)
        if len(code_weights) < cs:
            raise ValueError(f"code_weights needs {cs} entries (offset x/y, z, 3 log dims, sin, cos"
                             f"{', vx, vy' if with_velocity else ''}), got {len(code_weights)}")
        self.register_buffer("code_weights", torch.tensor(list(code_weights)[:cs], dtype=torch.float32),
                             persistent=False)
        self.point_range = [float(v) for v in point_range]
        if vfe not in ("mean", "dynamic_mean"):
            raise ValueError(f"vfe must be 'mean' (hard voxels) or 'dynamic_mean' (every point), got {vfe!r}")
        self.voxelizer = Voxelizer(point_channels, point_range, voxel_size,
                                   "dynamic" if vfe == "dynamic_mean" else "hard", max_points_per_voxel, max_voxels)
        c_in = len(point_channels)
        # The LiDAR MAEs' parameter-free VFE, without their centre offset: the backbone takes C channels.
        self.vfe = MeanVFE(c_in, voxel_size, point_range, centre_offset=False)
        nx, ny, nz = self.voxelizer.grid_size
        if backbone in ("VoxelBackBone8x", "VoxelResBackBone8x"):
            cls = VoxelBackBone8x if backbone == "VoxelBackBone8x" else VoxelResBackBone8x
            self.backbone_3d = cls(c_in, (nx, ny, nz))
            depth = sparse_backbone_bev_depth(nz)
            self.to_bev = HeightCompression(self.backbone_3d.out_channels * depth)
            backbone_stride = 8
            # The sparse tensor's H and W after three stride-2 convs (k=3, pad 1): (n - 1) // 2 + 1, thrice.
            bev_w, bev_h = nx, ny
            for _ in range(3):
                bev_w, bev_h = (bev_w - 1) // 2 + 1, (bev_h - 1) // 2 + 1
        elif backbone == "SST":
            if nz != 1:
                raise ValueError(f"the SST backbone works on pillars: voxel_size z must span point_range's height "
                                 f"(one z cell), got {nz} cells")
            self.backbone_3d = SSTBackbone(c_in, sst_dim, sst_depth, sst_num_heads, tuple(sst_window))
            self.to_bev = PillarScatter(sst_dim, nx, ny)
            backbone_stride, bev_w, bev_h = 1, nx, ny
        else:
            raise ValueError(f"backbone must be VoxelBackBone8x, VoxelResBackBone8x or SST, got {backbone!r}")
        self.bev_size = (bev_h, bev_w)            # (H, W) of the map to_bev gives
        self.backbone_2d = BEVBackbone(self.to_bev.num_bev_features, bev_layer_nums, bev_layer_strides,
                                       bev_num_filters, bev_upsample_strides, bev_num_upsample_filters)
        self.dense_head = CenterHead(self.backbone_2d.num_bev_features, self.tasks, head_channels, with_velocity)
        out_stride = self.backbone_2d.output_stride
        stride = backbone_stride * out_stride
        head_w, head_h = int(round(bev_w / out_stride)), int(round(bev_h / out_stride))
        self.grid = FeatureGrid(self.point_range[0], self.point_range[1], voxel_size[0] * stride,
                                voxel_size[1] * stride, head_w, head_h)
        self.feature_map_stride = stride
        if heading not in ("direction", "axis"):
            raise ValueError(f"heading must be 'direction' (sin h, cos h) or 'axis' (sin 2h, cos 2h), got {heading!r}")
        self.heading = heading
        self.target_args = dict(max_objects=max_objects, min_overlap=min_overlap, min_radius=min_radius,
                                heading=heading)
        self.loc_weight = loc_weight
        if nms_scope not in ("class", "task"):
            raise ValueError(f"nms_scope must be 'class' (NMS per class) or 'task' (per task group, across its "
                             f"classes), got {nms_scope!r}")
        self.nms_groups = None if nms_scope == "class" else self.tasks
        self.decode_args = dict(top_k=top_k, score_threshold=score_threshold, nms=nms,
                                nms_iou_threshold=nms_iou_threshold, max_detections=max_detections,
                                circle_radius=list(circle_nms_radius) or [2.0] * len(self.class_names))
        if len(self.decode_args["circle_radius"]) != len(self.class_names):
            raise ValueError(f"circle_nms_radius needs one radius per class ({len(self.class_names)}), "
                             f"got {list(circle_nms_radius)}")
        self.frozen_prefixes: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------------------------
    def forward_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """batch -> the head's maps (B, c, H', W') (see CenterHead)."""
        voxels = self.voxelizer(batch["points"], batch["offsets"], batch["channels"])
        features = self.vfe(voxels.points, voxels.point_to_voxel, voxels.coords)   # (V, C)
        if len(voxels.coords) == 0:
            # No point of the whole batch inside point_range: a frame without LiDAR returns (a Waymo
            # tfrecord converted with --labels-only, a dropped sweep) or one the crop emptied. spconv
            # refuses empty inputs ("tensor must not empty"); with no active voxel both encoders' BEV
            # map is all zeros (no bias outside active sites), so that is what the 2D backbone gets.
            bev = features.new_zeros(voxels.batch_size, self.to_bev.num_bev_features, *self.bev_size)
        elif isinstance(self.to_bev, HeightCompression):
            encoded = self.backbone_3d(features, voxels.coords, voxels.batch_size)
            bev = self.to_bev(encoded)                                   # (B, 128 * D, H/8, W/8)
        else:
            pillars = self.backbone_3d(features, voxels.coords)          # (V, dim)
            bev = self.to_bev(pillars, voxels.coords, voxels.batch_size)  # (B, dim, H, W)
        maps = self.dense_head(self.backbone_2d(bev))
        h, w = maps["heatmap"].shape[-2:]
        if (w, h) != (self.grid.nx, self.grid.ny):
            raise RuntimeError(f"head map is {w}x{h} cells but the target grid is {self.grid.nx}x{self.grid.ny}")
        return maps

    def forward_loss(self, maps: dict[str, torch.Tensor], boxes, labels) -> dict[str, torch.Tensor]:
        """CenterPoint's loss: per task group, the focal heatmap loss over the group's classes and the
        L1 loss at the group's objects, each normalised by the group's own object count, summed over groups."""
        targets = build_targets(boxes, labels, len(self.class_names), self.grid, self.with_velocity,
                                device=maps["heatmap"].device, task_of_class=self.dense_head.task_of_class.tolist(),
                                **self.target_args)
        codes = self.dense_head.codes(maps)                               # (B, T, D, H, W)
        b, t, d, h, w = codes.shape
        k = targets.index.shape[1]
        # Each object's prediction comes from its own group's regression branches.
        task_of_slot = self.dense_head.task_of_class[targets.labels]     # (B, K)
        pred = gather_at(codes.reshape(b, t * d, h, w), targets.index).reshape(b, k, t, d)
        pred = pred.gather(2, task_of_slot[:, :, None, None].expand(b, k, 1, d)).squeeze(2)   # (B, K, D)
        hm_loss = maps["heatmap"].new_zeros(())
        loc_loss = maps["heatmap"].new_zeros(())
        per_entry = 0
        for i, classes in enumerate(self.tasks):
            hm_loss = hm_loss + focal_heatmap_loss(maps["heatmap"][:, classes], targets.heatmap[:, classes])
            task_loc, task_entries = masked_l1_loss(pred, targets.codes, targets.mask & (task_of_slot == i),
                                                    self.code_weights)
            loc_loss = loc_loss + task_loc
            per_entry = per_entry + task_entries
        loss = hm_loss + self.loc_weight * loc_loss
        out = {"loss": loss, "hm_loss": hm_loss.detach(), "loc_loss": loc_loss.detach(),
               "num_objects": targets.mask.sum().float()}
        names = ["offset_x", "offset_y", "z", "log_dx", "log_dy", "log_dz", "sin", "cos", "vx", "vy"]
        for name, value in zip(names, per_entry.detach()):
            out[f"l1_{name}"] = value
        return out

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Training step: the loss dict of the engine (needs batch["boxes"] and batch["labels"])."""
        if "labels" not in batch:
            raise KeyError("the detector's forward needs batch['labels'] (class indices per box); batch the frames "
                           "with pointmae.data.detection.collate_detection")
        maps = self.forward_features(batch)
        out = self.forward_loss(maps, batch["boxes"], batch["labels"])
        out["maps"] = {k: v.detach() for k, v in maps.items()}   # not a scalar: not logged; for visualize()
        return out

    @torch.no_grad()
    def visualize(self, batch: dict, outputs: dict) -> dict:
        """{"bev_detections": HxWx3 uint8}: frame 0 from above, ground truth green, the detections of
        this training step (score >= 0.3) red. Decoded from the step's own maps (no extra forward)."""
        from pointmae.viz.bev import render_bev
        maps = {k: v[:1] for k, v in outputs["maps"].items()}
        det = self.decode(maps)[0]
        keep = det["scores"] >= 0.3
        end = int(batch["offsets"][1])
        r = self.point_range
        image = render_bev(batch["points"][:end, :3].detach().cpu().numpy(), batch["boxes"][0].cpu().numpy(),
                           det["boxes"][keep], labels=batch["names"][0], prediction_labels=det["names"][keep],
                           prediction_scores=det["scores"][keep], x_range=(r[0], r[3]), y_range=(r[1], r[4]),
                           resolution=max((r[3] - r[0]) / 800, 0.05))
        return {"bev_detections": np.asarray(image)}

    @torch.no_grad()
    def predict(self, batch: dict) -> list[dict]:
        """Detections per frame: {"frame_id", "boxes" (M, 7|9) float64 numpy (sensor frame),
        "scores" (M,) float32, "labels" (M,) int64, "names" (M,) str}."""
        maps = self.forward_features(batch)
        return self.decode(maps, batch.get("frame_ids"))

    def decode(self, maps: dict[str, torch.Tensor], frame_ids=None) -> list[dict]:
        """Maps -> detections per frame: top_k peaks per task group, then threshold and NMS (per class, or
        per task group with nms_scope="task")."""
        heat = local_maxima(torch.sigmoid(maps["heatmap"].float()))
        codes = self.dense_head.codes(maps).float()                       # (B, T, D, H, W)
        a = self.decode_args
        per_task = []
        for i, classes in enumerate(self.tasks):
            class_ids = torch.tensor(classes, device=heat.device)
            per_task.append([(boxes, scores, class_ids[labels]) for boxes, scores, labels in
                             topk_candidates(heat[:, classes], codes[:, i], self.grid, a["top_k"], self.heading)])
        results = []
        for i in range(heat.shape[0]):
            boxes, scores, labels = (torch.cat(parts) for parts in zip(*(task[i] for task in per_task)))
            boxes, scores, labels = postprocess(boxes, scores, labels, len(self.class_names), a["score_threshold"],
                                                a["nms"], a["nms_iou_threshold"], a["circle_radius"],
                                                a["max_detections"], self.point_range, self.nms_groups)
            lab = labels.cpu().numpy().astype(np.int64)
            results.append({"frame_id": frame_ids[i] if frame_ids is not None else str(i),
                            "boxes": boxes.detach().cpu().double().numpy(),
                            "scores": scores.detach().cpu().float().numpy(), "labels": lab,
                            "names": np.array([self.class_names[j] for j in lab], dtype=str).reshape(-1)})
        return results

    # ------------------------------------------------------------------------------------------------
    def freeze(self, prefixes: Sequence[str]) -> list[str]:
        """Stop training every parameter under `prefixes` (e.g. ("vfe.", "backbone_3d.")); their
        BatchNorm statistics stay fixed as well (the modules stay in eval mode). Returns the names."""
        self.frozen_prefixes = tuple(prefixes)
        frozen = []
        for name, p in self.named_parameters():
            if name.startswith(self.frozen_prefixes):
                p.requires_grad_(False)
                frozen.append(name)
        self.train(self.training)
        return frozen

    def train(self, mode: bool = True):
        super().train(mode)
        for name, module in self.named_modules():
            if name and (name + ".").startswith(self.frozen_prefixes):
                module.eval()
        return self
