"""Linear semantic segmentation probe (protocol segment) on a synthetic ADE20K-layout folder."""
import json

import pytest
import torch

from eval.api import evaluate
from eval.segdata import IGNORE, SegmentationFolder, window_starts
from eval.segmentation import confusion_matrix, segmentation_scores
from seg_synthetic import write_seg_folder


@pytest.fixture(scope="module")
def seg_folder(tmp_path_factory):
    """ADE20K layout: 24 training and 8 validation images (32x32 and 32x48), two regions each."""
    return write_seg_folder(tmp_path_factory.mktemp("ade_like"), {"training": 24, "validation": 8},
                            sizes=[(32, 32), (32, 48)])


def iou_by_sets(pred, label, num_classes):
    """Per-class IoU from boolean masks over the labelled pixels (independent of the confusion matrix)."""
    valid = label != IGNORE
    out = []
    for c in range(num_classes):
        p, g = (pred == c) & valid, (label == c) & valid
        union = (p | g).sum().item()
        out.append(None if union == 0 else (p & g).sum().item() / union)
    return out


def test_miou_equals_set_iou_and_skips_absent_classes():
    gen = torch.Generator().manual_seed(1)
    label = torch.randint(0, 4, (3, 20, 20), generator=gen)  # class 4 never occurs
    label[:, :2] = IGNORE
    pred = torch.where(torch.rand(3, 20, 20, generator=gen) < 0.7, label, torch.randint(0, 4, (3, 20, 20), generator=gen))
    pred[label == IGNORE] = 4  # predictions on ignored pixels must not count
    scores = segmentation_scores(confusion_matrix(pred, label, 5))
    ious = iou_by_sets(pred, label, 5)
    assert ious[4] is None and scores["per_class_iou"][4] != scores["per_class_iou"][4]  # NaN
    present = [v for v in ious if v is not None]
    assert scores["mIoU"] == pytest.approx(100 * sum(present) / len(present))
    valid = label != IGNORE
    assert scores["aAcc"] == pytest.approx(100 * (pred[valid] == label[valid]).float().mean().item())


def test_folder_maps_zero_to_ignore_and_shifts_classes(seg_folder):
    ds = SegmentationFolder(seg_folder, "validation", num_classes=3)
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert label[0, 0] == IGNORE and set(label.unique().tolist()) <= {0, 1, 2, IGNORE}
    with pytest.raises(ValueError, match="label 3 > eval.seg.num_classes=2"):
        SegmentationFolder(seg_folder, "validation", num_classes=2)[0]


def test_missing_folder_and_annotation_name_the_layout(seg_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the ADE20K layout: images/\{training,validation\}"):
        SegmentationFolder(tmp_path, "training", 150)
    (tmp_path / "images" / "training").mkdir(parents=True)
    (tmp_path / "annotations" / "training").mkdir(parents=True)
    (tmp_path / "images" / "training" / "a.jpg").write_bytes((seg_folder / "images/training/img_000.jpg").read_bytes())
    with pytest.raises(FileNotFoundError, match="have no annotation .*a.jpg"):
        SegmentationFolder(tmp_path, "training", 150)
    with pytest.raises(ValueError, match="protocol segment needs eval.seg.data"):
        evaluate("pixels", "segment", {"progress": False}, out_dir=tmp_path / "out")


def test_sliding_windows_cover_the_image_flush_with_the_end():
    assert window_starts(32, 32, 21) == [0]
    starts = window_starts(50, 32, 21)
    assert starts == [0, 18] and starts[-1] + 32 == 50
    covered = set()
    for s in window_starts(100, 32, 21):
        covered |= set(range(s, s + 32))
    assert covered == set(range(100))


@pytest.mark.parametrize("val_mode", ["resize", "slide"])
def test_probe_on_pixel_patches_segments_the_regions(seg_folder, tmp_path, val_mode):
    cfg = {"progress": False, "cache_dir": str(tmp_path / "cache"),
           "seg": {"data": str(seg_folder), "num_classes": 3, "img_size": 32, "iters": 60, "batch_size": 8,
                   "lr": 0.05, "warmup_iters": 5, "scale_range": [1.0, 1.0], "val_mode": val_mode}}
    record = evaluate("pixels", "segment", cfg, out_dir=tmp_path / "out")[0]
    assert record["metric"] == "segment/mIoU" and record["dataset"] == str(seg_folder)
    assert record["value"] > 90.0, record["metrics"]
    assert record["metrics"]["segment/aAcc"] > 95.0
    on_disk = json.loads((tmp_path / "out" / "segment.json").read_text())
    assert on_disk["value"] == record["value"] and len(on_disk["per_class_iou"]) == 3
    assert record["steps"] == 60


def test_max_steps_stops_the_head_early_on_the_full_schedule(seg_folder, tmp_path, monkeypatch):
    import eval.segmentation as seg

    seen, lr_at = [], seg.lr_at
    monkeypatch.setattr(seg, "lr_at", lambda it, s: seen.append((it, int(s.iters))) or lr_at(it, s))
    cfg = {"progress": False, "cache_dir": str(tmp_path / "cache"), "max_steps": 3,
           "seg": {"data": str(seg_folder), "num_classes": 3, "img_size": 32, "iters": 60, "batch_size": 4,
                   "warmup_iters": 5, "val_mode": "resize"}}
    record = evaluate("pixels", "segment", cfg, out_dir=tmp_path / "out")[0]
    assert record["steps"] == 3 and seen == [(0, 60), (1, 60), (2, 60)]


def test_probe_trains_on_a_vit_encoder_at_another_resolution(seg_folder, tiny_encoder, tmp_path):
    # tiny_encoder is an 8-px, patch-2 ViT; segmentation crops of 16 px need its position table resampled
    cfg = {"progress": False, "cache_dir": str(tmp_path / "cache"),
           "seg": {"data": str(seg_folder), "num_classes": 3, "img_size": 16, "iters": 4, "batch_size": 4,
                   "warmup_iters": 1, "n_last_blocks": 2}}
    record = evaluate(tiny_encoder, "segment", cfg, out_dir=tmp_path / "out")[0]
    assert 0.0 <= record["value"] <= 100.0 and record["crop"] == 16 and record["final_loss"] > 0


def test_cli_files_segmentation_floors_under_the_segmentation_folder(seg_folder, capsys):
    from eval.launch import main

    assert main(["checkpoint=pixels", "protocol=segment", f"seg.data={seg_folder}", "--dry-run"]) == []
    slug = f"seg:{seg_folder}".replace(":", "_").replace("/", "_")
    assert f"-> results/misc/floors-{slug}-mini/pixels; protocols ['segment']" in capsys.readouterr().out
