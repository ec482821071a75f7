"""KITTI object benchmark submission: writer and validator.

The benchmark's rules (object devkit readme.txt, Geiger et al. CVPR 2012):
* one result file per test frame, named like the frame (``000000.txt`` ... ``007517.txt`` for the
  7518 test frames), all of them in the ROOT of one zip archive (no folders);
* each line one object in the label format plus a score: 16 space-separated fields
  ``type truncated occluded alpha left top right bottom h w l x y z rotation_y score`` (camera frame of
  the rectified camera 2, location = bottom centre of the box, metres, radians in [-pi, pi]);
  truncated / occluded are not read for results (written as -1 here);
* both the 2D and the 3D box must be given, and boxes not visible in the image plane removed.

`write_kitti_submission` writes such a zip from predictions in pointmae's contract (sensor frame;
see pointmae/submission/__init__.py), with the 2D box from the projected 3D corners clipped to the
image (pointmae.data.kitti_detections), then validates what it wrote. `validate_kitti_submission`
checks a zip (or a folder) against the rules and lists every violation with file and line.
"""
from __future__ import annotations

import math
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pointmae.data.kitti import (CLASSES as KITTI_LABEL_CLASSES, DEFAULT_IMAGE_SIZE, KittiCalibration,
                                 read_calibration, write_labels)
from pointmae.data.kitti_detections import detections_to_kitti_objects
from pointmae.submission.predictions import check_predictions

NUM_TEST_FRAMES = 7518                 # KITTI object test set: 000000 .. 007517
RESULT_FIELDS = 16
# Results may use the label classes (DontCare marks regions in labels, it is not a detection).
RESULT_CLASSES = KITTI_LABEL_CLASSES
# Fixed zip member timestamp: the same predictions give the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ANGLE_TOLERANCE = 1e-3                # 4-decimal rounding of angles near +-pi
_MIN_WRITTEN_SIZE = 1e-4               # the smallest positive dimension written with 4 decimals


def official_test_ids() -> list[str]:
    """The 7518 frame ids of the KITTI object test set."""
    return [f"{i:06d}" for i in range(NUM_TEST_FRAMES)]


@dataclass
class KittiSubmissionReport:
    path: Path
    frames: int = 0
    boxes_written: int = 0
    boxes_outside_image: int = 0      # dropped: their projection misses the image
    empty_frames: int = 0             # frames written without any line (no detection in the image)
    class_counts: dict = field(default_factory=dict)

    def __str__(self):
        classes = ", ".join(f"{k} {v}" for k, v in sorted(self.class_counts.items()))
        return (f"{self.path}: {self.frames} frames, {self.boxes_written} boxes ({classes or 'none'}), "
                f"{self.boxes_outside_image} dropped outside the image, {self.empty_frames} empty frames")


@dataclass
class KittiValidation:
    path: Path
    violations: list = field(default_factory=list)    # "file:line: message"
    frames: int = 0
    boxes: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def raise_if_invalid(self, limit: int = 20) -> None:
        if self.violations:
            shown = "\n  ".join(self.violations[:limit])
            more = f"\n  ... and {len(self.violations) - limit} more" if len(self.violations) > limit else ""
            raise ValueError(f"{self.path}: {len(self.violations)} KITTI submission rule violation(s):\n"
                             f"  {shown}{more}")

    def __str__(self):
        if self.ok:
            return f"{self.path}: valid KITTI submission ({self.frames} frames, {self.boxes} boxes)"
        return f"{self.path}: {len(self.violations)} violation(s); first: {self.violations[0]}"


def _image_size(image_sizes, frame_id):
    if image_sizes is None:
        return DEFAULT_IMAGE_SIZE
    if isinstance(image_sizes, Mapping):
        return tuple(image_sizes.get(frame_id, DEFAULT_IMAGE_SIZE))
    return tuple(image_sizes)


def write_kitti_submission(predictions: Sequence[dict], calibrations: Mapping[str, KittiCalibration],
                           frame_ids: Sequence[str], out_path, image_sizes=None) -> KittiSubmissionReport:
    """Write the benchmark zip for `frame_ids` (every one gets a file, empty without detections).

    Args:
        predictions: pointmae's prediction contract (sensor-frame boxes); every frame_id must be in
            `frame_ids` (an unknown id is an error: a wrong split).
        calibrations: frame_id -> KittiCalibration of every frame in `frame_ids`.
        frame_ids: the split's frame ids (for the benchmark: official_test_ids()).
        out_path: the .zip to write.
        image_sizes: (width, height) for all frames or a dict frame_id -> (width, height); default
            KITTI's common 1242 x 375.

    Returns:
        KittiSubmissionReport; the written zip has been validated (ValueError listing violations if not).
    """
    out_path = Path(out_path)
    if out_path.suffix != ".zip":
        raise ValueError(f"out_path must end in .zip, got {out_path}")
    frame_ids = [str(i) for i in frame_ids]
    if len(set(frame_ids)) != len(frame_ids):
        raise ValueError("frame_ids contains duplicates")
    predictions = check_predictions(predictions)
    by_id = {p["frame_id"]: p for p in predictions}
    unknown = sorted(set(by_id) - set(frame_ids))
    if unknown:
        raise ValueError(f"predictions: {len(unknown)} frame id(s) not in frame_ids (wrong split?), e.g. {unknown[:5]}")
    missing_calib = [i for i in frame_ids if i not in calibrations]
    if missing_calib:
        raise ValueError(f"calibrations: missing for {len(missing_calib)} frame(s), e.g. {missing_calib[:5]}")
    report = KittiSubmissionReport(path=out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    with tempfile.TemporaryDirectory() as folder, \
            zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for frame_id in frame_ids:
            prediction = by_id.get(frame_id)
            text = ""
            if prediction is not None and len(prediction["boxes"]):
                # A dimension under the written resolution (4 decimals) would be printed as 0, which the
                # benchmark rejects; such a box (an untrained or degenerate size regression) stays in the
                # file, as the unmatched detection it is, at the smallest size the format can hold.
                boxes = np.array(prediction["boxes"], dtype=np.float64, copy=True)
                boxes[:, 3:6] = np.maximum(boxes[:, 3:6], _MIN_WRITTEN_SIZE)
                objects, keep = detections_to_kitti_objects(boxes, prediction["names"],
                                                            prediction["scores"], calibrations[frame_id],
                                                            _image_size(image_sizes, frame_id))
                report.boxes_outside_image += int((~keep).sum())
                report.boxes_written += len(objects)
                for name in objects.names:
                    report.class_counts[str(name)] = report.class_counts.get(str(name), 0) + 1
                frame_file = Path(folder) / f"{frame_id}.txt"
                write_labels(frame_file, objects, with_score=True, decimals=4)
                text = frame_file.read_text()
            report.empty_frames += text == ""
            info = zipfile.ZipInfo(f"{frame_id}.txt", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
            report.frames += 1
    validation = validate_kitti_submission(tmp_path, frame_ids, image_sizes)
    if not validation.ok:
        tmp_path.unlink()
        validation.path = out_path
        validation.raise_if_invalid()
    tmp_path.replace(out_path)
    return report


def _read_members(path: Path) -> tuple[dict[str, str], list[str]]:
    """name -> text of every member (zip) or file (folder), and structural violations."""
    violations, members = [], {}
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_dir():
                violations.append(f"{child.name}/: folders are not allowed (results go in the archive's root)")
            else:
                members[child.name] = child.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                if info.filename in members:
                    violations.append(f"{info.filename}: appears twice in the archive")
                members[info.filename] = archive.read(info)
    else:
        raise ValueError(f"{path}: not a zip archive or a folder")
    texts = {}
    for name, data in members.items():
        try:
            texts[name] = data.decode("ascii")
        except UnicodeDecodeError:
            violations.append(f"{name}: not plain ASCII text")
    return texts, violations


def validate_kitti_submission(path, frame_ids: Sequence[str] | None = None, image_sizes=None) -> KittiValidation:
    """Check a KITTI submission zip (or folder) against the benchmark's rules.

    Args:
        path: the .zip (or a folder of result files, checked the same way).
        frame_ids: ids that must each have a file (default: the 7518 official test ids); files for
            other ids are violations too.
        image_sizes: as in write_kitti_submission; 2D boxes must lie in [0, width] x [0, height].

    Returns:
        KittiValidation with every violation as "file[:line]: what is wrong (expected vs found)".
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"submission {path} not found")
    expected = official_test_ids() if frame_ids is None else [str(i) for i in frame_ids]
    texts, violations = _read_members(path)
    result = KittiValidation(path=path, violations=violations)
    names = {}
    for member in texts:
        if "/" in member or "\\" in member:
            violations.append(f"{member}: in a folder; result files must be in the archive's root")
            continue
        if not member.endswith(".txt"):
            violations.append(f"{member}: not a .txt result file")
            continue
        names[member[:-4]] = member
    missing = [i for i in expected if i not in names]
    if missing:
        violations.append(f"missing result files for {len(missing)} of {len(expected)} frames, e.g. "
                          f"{', '.join(m + '.txt' for m in missing[:5])}")
    extra = sorted(set(names) - set(expected))
    if extra:
        violations.append(f"{len(extra)} result file(s) for frames not in the split, e.g. "
                          f"{', '.join(e + '.txt' for e in extra[:5])}")
    for frame_id in expected:
        member = names.get(frame_id)
        if member is None:
            continue
        result.frames += 1
        width, height = _image_size(image_sizes, frame_id)
        for number, line in enumerate(texts[member].splitlines(), start=1):
            if not line.strip():
                continue
            result.boxes += 1
            violations.extend(f"{member}:{number}: {problem}" for problem in _line_problems(line, width, height))
    return result


def _line_problems(line: str, width: float, height: float) -> list[str]:
    fields = line.split()
    if len(fields) != RESULT_FIELDS:
        return [f"{len(fields)} fields, expected {RESULT_FIELDS} (type truncated occluded alpha left top right "
                f"bottom h w l x y z rotation_y score)"]
    problems = []
    if fields[0].lower() not in {c.lower() for c in RESULT_CLASSES}:   # the devkit compares with strcasecmp
        problems.append(f"class {fields[0]!r} is not a KITTI class {RESULT_CLASSES}")
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        return problems + [f"non-numeric field in {fields[1:]}"]
    if not all(math.isfinite(v) for v in values):
        return problems + ["NaN/Inf value"]
    _, _, alpha, left, top, right, bottom, h, w, l, x, y, z, rotation_y, score = values
    for name, angle in (("alpha", alpha), ("rotation_y", rotation_y)):
        if abs(angle) > math.pi + _ANGLE_TOLERANCE:
            problems.append(f"{name} {angle} outside [-pi, pi]")
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        problems.append(f"2D box ({left}, {top}, {right}, {bottom}) is not a non-empty box inside the "
                        f"{width} x {height} image")
    if min(h, w, l) <= 0:
        problems.append(f"3D box dimensions h w l = {h} {w} {l} must be positive (a 3D box is required)")
    return problems


# ------------------------------------------------------------------------------- KITTI root helpers
def read_frame_ids(root, split: str | None = None, ids_file=None, subset: str = "testing") -> list[str]:
    """Frame ids from an ids file, from root/ImageSets/{split}.txt, or (neither given) every calib file."""
    if ids_file is not None:
        path = Path(ids_file)
        if not path.is_file():
            raise FileNotFoundError(f"ids_file {path} not found")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif split is not None:
        path = Path(root) / "ImageSets" / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"split file {path} not found (split={split!r})")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        folder = Path(root) / subset / "calib"
        if not folder.is_dir():
            raise FileNotFoundError(f"calibration folder {folder} not found")
        ids = sorted(p.stem for p in folder.glob("*.txt"))
    if not ids:
        raise ValueError(f"no frame ids found (root={root}, split={split}, ids_file={ids_file})")
    return ids


def read_frame_info(root, frame_ids: Sequence[str], subset: str = "testing"):
    """(calibrations, image_sizes) of the frames under root/subset: calib/<id>.txt, and the size of
    image_2/<id>.png where the image exists (its header only), else KITTI's common 1242 x 375."""
    folder = Path(root) / subset
    calibrations = {i: read_calibration(folder / "calib" / f"{i}.txt") for i in frame_ids}
    sizes = {}
    for frame_id in frame_ids:
        image = folder / "image_2" / f"{frame_id}.png"
        if image.is_file():
            from PIL import Image
            with Image.open(image) as opened:
                sizes[frame_id] = opened.size
        else:
            sizes[frame_id] = DEFAULT_IMAGE_SIZE
    return calibrations, sizes
