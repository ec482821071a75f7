import numpy as np
import pytest
import torch

from pointmae.data.collate import collate_frames
from pointmae.data.lidar_datasets import FrameDataset, SyntheticFrames, build_lidar_dataset
from pointmae.data.synthetic import sensor_preset
from pointmae.data.synthetic.kitti_writer import write_synthetic_kitti


def test_synthetic_frames_through_a_dataloader():
    sensor = sensor_preset("nuscenes32").with_(azimuth_resolution_deg=2.0)
    frames = build_lidar_dataset("synthetic", num_frames=4, seed=3, sensor=sensor, frames_per_sequence=2)
    loader = torch.utils.data.DataLoader(FrameDataset(frames, without_labels=True), batch_size=2,
                                         collate_fn=collate_frames)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[1]
    assert batch["offsets"][-1] == batch["points"].shape[0] and batch["points"].shape[1] == 5
    assert all(len(b) == 0 for b in batch["boxes"])
    assert frames.previous(0) is None and frames.previous(3).frame_id == frames[2].frame_id
    np.testing.assert_array_equal(frames[1].points, SyntheticFrames(4, 3, sensor, 2)[1].points)
    with pytest.raises(ValueError, match="unknown LiDAR dataset"):
        build_lidar_dataset("argoverse")


def test_kitti_layout_previous_frame(tmp_path):
    sensor = sensor_preset("hdl64").with_(azimuth_resolution_deg=2.0)
    from pointmae.data.synthetic import SyntheticWorld
    write_synthetic_kitti(tmp_path, SyntheticWorld(seed=0, sensor=sensor, frames_per_sequence=2), 3, progress=False)
    kitti = build_lidar_dataset("kitti", root=tmp_path, split="trainval")
    assert kitti.previous(0) is None and kitti.previous(2) is None
    assert kitti.previous(1).frame_id == "000000"


def test_synthetic_multi_sweep_frames():
    sensor = sensor_preset("nuscenes32").with_(azimuth_resolution_deg=2.0)
    single = SyntheticFrames(3, seed=1, sensor=sensor, frames_per_sequence=3)
    multi = SyntheticFrames(3, seed=1, sensor=sensor, frames_per_sequence=3, num_sweeps=5)
    frame = multi[2]
    assert frame.channels[-1] == "time_lag" and frame.meta["sweeps_used"] == 2
    assert frame.num_points == sum(single[i].num_points for i in range(3))
    assert multi[0].meta["sweeps_used"] == 0
    np.testing.assert_array_equal(frame.boxes, single[2].boxes)
