"""End to end on scikit-learn digits with a tiny encoder: records, floors, cache, errors."""
import json

import pytest
import torch

import eval.features as features_module
from common.checkpoint import load_encoder
from common.data import get_dataset
from eval import settings
from eval.api import build_context, current_record, evaluate, evaluate_unless_current
from eval.records import REQUIRED
from tests.eval.conftest import TINY, tiny_meta


def test_knn_record_has_provenance_and_lands_in_out_dir(tiny_encoder, eval_cfg, tmp_path):
    out = tmp_path / "results" / "test" / "tiny-run"
    [rec] = evaluate(tiny_encoder, "knn", eval_cfg, out, run_info={"table": "t1", "row": "ours"})
    on_disk = json.loads((out / "knn.json").read_text())
    assert on_disk == rec
    missing = [k for k in REQUIRED if k not in rec]
    assert not missing
    for k in ("checkpoint_sha256", "git_commit", "dataset_hash", "hardware", "config_hash", "created"):
        assert rec[k], k
    assert rec["checkpoint_sha256"] == load_encoder(tiny_encoder)[2]
    assert (rec["method"], rec["run"], rec["table"], rec["row"]) == ("tiny", "tiny-run", "t1", "ours")
    assert rec["metric"] == "knn/cls/k20/top1" and 0 <= rec["value"] <= 100
    assert {"knn/cls/k1/top1", "knn/cls/k5/top5"} <= rec["metrics"].keys()
    assert rec["wall_time_s"] > 0 and rec["peak_memory_mb"] > 0
    assert (rec["train_images"], rec["val_images"]) == (len(get_dataset("digits", "train")), len(get_dataset("digits", "test")))


def test_pixel_floor_knn_is_strong_on_digits(eval_cfg, tmp_path):
    [rec] = evaluate("pixels", "knn", eval_cfg, tmp_path)
    assert rec["method"] == "pixels" and rec["metric"] == "knn/pixels/k20/top1"
    assert rec["value"] > 90.0  # raw-pixel k-NN on 8x8 digits is known to be ~95-98%


def test_floors_run_every_frozen_protocol(tiny_encoder, eval_cfg, tmp_path):
    cfg = {**eval_cfg, "attn_probe": {"epochs": 10, "lr": 1e-2, "batch_size": 128}}
    for protocol in ("linear", "attentive"):
        [rec] = evaluate("pixels", protocol, cfg, tmp_path / "pixels")
        assert rec["value"] > 30.0, (protocol, rec["value"])  # chance is 10%
    [rec] = evaluate(f"random:{tiny_encoder}", "knn", eval_cfg, tmp_path / "random")
    assert rec["method"] == "random" and rec["encoder_kind"] == "random"
    assert rec["checkpoint_sha256"] != load_encoder(tiny_encoder)[2]
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY))
    [rec2] = evaluate(f"random:{arch}", "knn", eval_cfg, tmp_path / "random2")
    assert rec2["value"] == pytest.approx(rec["value"])  # same arch, same seed -> same init


def test_feature_cache_is_reused(tiny_encoder, eval_cfg, tmp_path, monkeypatch):
    evaluate(tiny_encoder, "knn", eval_cfg, tmp_path)
    assert any((tmp_path / "cache").rglob("cls@2.pt"))

    def no_forward(*a, **k):
        raise AssertionError("the encoder ran although the features are cached")

    monkeypatch.setattr(features_module, "compute_atoms", no_forward)
    [rec] = evaluate(tiny_encoder, "knn", eval_cfg, tmp_path / "again")
    assert rec["value"] >= 0
    # a different extraction (other val subset) is a different cache entry
    with pytest.raises(AssertionError, match="cached"):
        evaluate(tiny_encoder, "knn", {**eval_cfg, "val_subset": 100}, tmp_path / "other")


def test_linear_grid_and_per_layer_heads(tiny_encoder, eval_cfg, tmp_path):
    cfg = {**eval_cfg, "linear": {**eval_cfg["linear"], "features": ["cls", "cls_last2", "avgpool", "cls+avgpool"]}}
    [rec] = evaluate(tiny_encoder, "linear", cfg, tmp_path)
    m = rec["metrics"]
    for f in ("cls", "cls_last2", "avgpool", "cls+avgpool"):
        assert f"linear/{f}/lr0.1/top1" in m and f"linear/{f}/lr1/top1" in m
    assert m["linear/best/top1"] == max(v for k, v in m.items() if k.endswith("/top1") and "/lr" in k)
    multi = {**eval_cfg, "linear": {**eval_cfg["linear"], "protocol": "sdssl_multiexit"}}
    [rec] = evaluate(tiny_encoder, "linear", multi, tmp_path / "multi")
    assert {"linear/cls@1/best/top1", "linear/cls@2/best/top1"} <= rec["metrics"].keys()
    [rec] = evaluate(tiny_encoder, "linear", {**multi, "layers": 1}, tmp_path / "last1")
    assert rec["features"] == ["cls@2"]
    with pytest.raises(ValueError, match=r"eval.layers \[3\] outside 1..2"):
        evaluate(tiny_encoder, "linear", {**multi, "layers": [3]}, tmp_path / "bad")


def test_augmented_probes_keep_encoder_frozen(tiny_encoder, eval_cfg, tmp_path):
    from eval import linear

    cfg = settings.resolve({**eval_cfg, "train_subset": 200, "val_subset": 100,
                            "linear": {"aug": "plain", "epochs": 1, "batch_size": 64}})
    ctx = build_context(tiny_encoder, cfg, tmp_path)
    before = {k: v.clone() for k, v in ctx.encoder.model.state_dict().items()}
    metrics, headline, _ = linear.run(ctx)
    after = ctx.encoder.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in ctx.encoder.model.parameters())
    assert headline in metrics
    from eval import attentive

    ctx.cfg.attn_probe.aug = "autoaug"
    ctx.cfg.attn_probe.epochs = 1
    metrics, headline, _ = attentive.run(ctx)
    assert 0 <= metrics[headline] <= 100
    assert all(torch.equal(before[k], v) for k, v in ctx.encoder.model.state_dict().items())


def test_lowshot_and_analysis(tiny_encoder, eval_cfg, tmp_path):
    [rec] = evaluate(tiny_encoder, "lowshot", eval_cfg, tmp_path)
    targets = get_dataset("digits", "train").targets
    per_class = torch.bincount(targets).tolist()
    assert rec["labelled_images"] == {s: sum(max(1, round(f * n)) for n in per_class)
                                      for s, f in (("1pct", 0.01), ("10pct", 0.1))}
    assert {"lowshot/1pct/lambda0.1/top1", "lowshot/10pct/top1"} <= rec["metrics"].keys()
    [rec] = evaluate(tiny_encoder, "analysis", eval_cfg, tmp_path)
    m = rec["metrics"]
    assert 0 <= m["analysis/nmi/layer1"] <= 1 and m["analysis/mad/layer2"] > 0
    assert m["analysis/cka/1-2"] <= 1.0 + 1e-6 and m["analysis/align_ratio/layer2"] > 0
    assert all((tmp_path / "plots" / n).is_file() for n in ("cka.png", "attention_distance.png", "attention_nmi.png"))


def test_supervised_from_scratch_exports_a_teacher(tiny_encoder, eval_cfg, tmp_path):
    cfg = {**eval_cfg, "finetune": {**eval_cfg["finetune"], "recipe": "supervised",
                                    "export_encoder": str(tmp_path / "teacher" / "encoder.pt")}}
    [rec] = evaluate(tiny_encoder, "finetune", cfg, tmp_path)
    assert rec["from_scratch"] and rec["steps"] == 3  # 200 images // 64
    vit, meta, sha = load_encoder(tmp_path / "teacher" / "encoder.pt")
    assert meta["method"] == "supervised" and meta["feature"] == "cls" and sha == rec["exported_sha256"]
    source, _, _ = load_encoder(tiny_encoder)
    assert not torch.equal(vit.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    [knn] = evaluate(tmp_path / "teacher" / "encoder.pt", "knn", eval_cfg, tmp_path / "teacher_knn")
    assert knn["method"] == "supervised"


def test_finetune_subset_larger_than_the_eval_training_set_uses_all_of_it(tiny_encoder, eval_cfg, tmp_path):
    cfg = {**eval_cfg, "train_subset": 200, "finetune": {**eval_cfg["finetune"], "train_subset": 1000}}
    [rec] = evaluate(tiny_encoder, "finetune", cfg, tmp_path)
    assert rec["train_images"] == 200 and rec["steps"] == 3  # 200 // 64, not an error


def test_floor_records_are_reused_only_under_the_same_protocol_settings(eval_cfg, tmp_path, capsys):
    [first] = evaluate_unless_current("pixels", "knn", eval_cfg, tmp_path)
    assert current_record(tmp_path, "knn", eval_cfg) == first
    [again] = evaluate_unless_current("pixels", "knn", eval_cfg, tmp_path)
    assert "reusing" in capsys.readouterr().out and again == first
    # a changed schedule makes the stored record stale: it is evaluated again, not reused
    changed = {**eval_cfg, "knn": {**eval_cfg["knn"], "report_k": 5}}
    assert current_record(tmp_path, "knn", changed) is None
    [redone] = evaluate_unless_current("pixels", "knn", changed, tmp_path)
    assert "reusing" not in capsys.readouterr().out
    assert redone["eval_config_hash"] != first["eval_config_hash"] and redone["metric"].endswith("k5/top1")
    assert current_record(tmp_path, "knn", changed, checkpoint_sha256="another encoder") is None


def test_finetune_layer_decay_groups():
    from common.optim import param_groups_layer_decay
    from common.vit import ViT
    from eval.finetune import NO_DECAY, Classifier

    model = Classifier(ViT(**TINY), 10, "avg")
    groups = param_groups_layer_decay(model.named_parameters(), 2, 0.5, no_decay_names=NO_DECAY)
    scale = {n: g["lr_scale"] for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert scale["head.weight"] == 1.0 and scale["encoder.blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["encoder.blocks.0.mlp.fc1.weight"] == 0.25 and scale["encoder.patch_embed.proj.weight"] == 0.125
    wd = {n: g["wd_scale"] for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert wd["encoder.pos_embed"] == 0.0 and wd["encoder.cls_token"] == 0.0 and wd["head.weight"] == 1.0


def test_bad_inputs_fail_with_the_fix(tiny_encoder, eval_cfg, tmp_path):
    with pytest.raises(ValueError, match="unknown protocol 'knnn'; valid protocols: knn, linear, attentive"):
        evaluate(tiny_encoder, "knnn", eval_cfg, tmp_path)
    with pytest.raises(KeyError, match="closest valid keys: knn.chunks"):
        evaluate(tiny_encoder, "knn", {**eval_cfg, "knn": {"chunk": 3}}, tmp_path)
    with pytest.raises(ValueError, match="unknown linear 'dinov2'; valid: dino, mae_bn, mocov3"):
        settings.resolve({"linear": {"protocol": "dinov2"}})
    torch.save({"model": {}, "optimizer": {}, "step": 10}, tmp_path / "step_10.pt")
    with pytest.raises(ValueError, match="not an exported encoder"):
        evaluate(tmp_path / "step_10.pt", "knn", eval_cfg, tmp_path)
    (tmp_path / "unfinished_run").mkdir()
    with pytest.raises(FileNotFoundError, match="has not finished training"):
        evaluate(tmp_path / "unfinished_run", "knn", eval_cfg, tmp_path)
    with pytest.raises(ValueError, match="2 class tokens"):
        evaluate(tiny_encoder, "knn", {**eval_cfg, "token": "cls_plus"}, tmp_path)
    with pytest.raises(ValueError, match="cannot parse 'clz'"):
        evaluate(tiny_encoder, "linear", {**eval_cfg, "linear": {"features": ["clz"]}}, tmp_path)
    with pytest.raises(ValueError, match="pixel floor has no weights"):
        evaluate("pixels", "finetune", eval_cfg, tmp_path)


def test_no_class_token_encoder_uses_avgpool(eval_cfg, tmp_path):
    from common.checkpoint import export_encoder
    from common.vit import ViT

    vit = ViT(**TINY, num_class_tokens=0, global_pool="avg")
    export_encoder(vit, tmp_path / "e.pt", tiny_meta(feature="avgpool"))
    [rec] = evaluate(tmp_path / "e.pt", "knn", eval_cfg, tmp_path)
    assert rec["metric"] == "knn/avgpool/k20/top1"
    with pytest.raises(ValueError, match="no class token; evaluate it with token=avgpool"):
        evaluate(tmp_path / "e.pt", "knn", {**eval_cfg, "token": "cls"}, tmp_path)


def test_a_random_class_token_arch_pooled_by_the_mean_is_evaluated_at_its_patch_mean(eval_cfg, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({**TINY, "num_class_tokens": 1, "global_pool": "avg"}))
    [rec] = evaluate(f"random:{arch}", "knn", eval_cfg, tmp_path)
    assert rec["metric"] == "knn/avgpool/k20/top1" and rec["feature"] == "avgpool"


def test_cli_runs_protocols_and_reports_errors(tiny_encoder, eval_cfg, tmp_path, capsys):
    from eval.launch import main

    out = tmp_path / "cli"
    records = main([f"checkpoint={tiny_encoder}", "protocol=knn", f"out={out}", "data=digits",
                    f"cache_dir={eval_cfg['cache_dir']}", "progress=false", "knn.k=[5,20]"])
    assert records[0]["metrics"].keys() >= {"knn/cls/k5/top1"} and (out / "knn.json").is_file()
    with pytest.raises(SystemExit, match="unknown protocol 'svm'"):
        main([f"checkpoint={tiny_encoder}", "protocol=svm"])
    with pytest.raises(SystemExit):
        main(["protocol=knn"])
    assert "checkpoint=PATH is required" in capsys.readouterr().err


def test_cli_default_out_dirs_under_results(tiny_encoder):
    from pathlib import Path

    from eval.launch import default_out_dir

    # floors of no paper's table: the one floor layout, under the dataset they are measured on
    assert default_out_dir("pixels", "digits") == Path("results/misc/floors-digits-mini/pixels")
    assert default_out_dir(str(tiny_encoder), "digits") == Path("results/test/tiny-run")
    assert default_out_dir(str(tiny_encoder.parent), "digits") == Path("results/test/tiny-run")
    assert default_out_dir(f"random:{tiny_encoder}", "digits", scale="paper") == \
        Path("results/misc/floors-digits-paper/random-init-timm")
    # in a run directory, the records of its run: the same directory as after its training
    (tiny_encoder.parent / "config.yaml").write_text("paper: toy_paper\nscale_name: smoke\nrun_name: r\n"
                                                     "results_root: elsewhere\n")
    assert default_out_dir(str(tiny_encoder), "digits") == Path("results/toy_paper/smoke/r")
    assert default_out_dir(str(tiny_encoder.parent), "digits", root="res") == Path("res/toy_paper/smoke/r")


def test_cli_refuses_to_overwrite_the_floor_of_another_random_encoder(tiny_encoder, eval_cfg, tmp_path, monkeypatch):
    from eval.launch import main

    monkeypatch.chdir(tmp_path)
    args = ["protocol=knn", "data=digits", f"cache_dir={eval_cfg['cache_dir']}", "progress=false", "knn.k=[5]",
            "knn.report_k=5"]
    [first] = main([f"checkpoint=random:{tiny_encoder}", *args])
    floor = tmp_path / "results/misc/floors-digits-mini/random-init-timm/knn.json"
    assert json.loads(floor.read_text())["checkpoint_sha256"] == first["checkpoint_sha256"]
    assert main([f"checkpoint=random:{tiny_encoder}", *args])  # the same encoder again: allowed
    wider = tmp_path / "wider.json"  # the same (timm) init, another architecture
    wider.write_text(json.dumps({**TINY, "embed_dim": 48}))
    with pytest.raises(SystemExit, match="holds the record of another random encoder.*pass out="):
        main([f"checkpoint=random:{wider}", *args])
    assert json.loads(floor.read_text())["checkpoint_sha256"] == first["checkpoint_sha256"]


def test_cli_submitit_path_with_the_debug_executor(tiny_encoder, eval_cfg, tmp_path):
    """--slurm goes through common.launch's executor; submitit's debug executor runs the
    pickled job in this process, which exercises the same submission path without a cluster."""
    from eval.launch import main

    out = tmp_path / "sub"
    records = main([f"checkpoint={tiny_encoder}", "protocol=knn,lowshot", f"out={out}", "data=digits", "--slurm",
                    "cluster.executor=debug", f"cache_dir={eval_cfg['cache_dir']}", "progress=false"])
    assert [r["protocol"] for r in records] == ["knn", "lowshot"]
    assert (out / "knn.json").is_file() and (out / "lowshot.json").is_file()


def test_cli_slurm_dry_run_prints_the_sbatch_header_of_the_protocol_array(tmp_path, capsys):
    """Without SLURM installed too: the header is built without submitit's cluster detection."""
    from eval.launch import main

    out = tmp_path / "out"
    main(["--slurm", "--dry-run", "checkpoint=pixels", "protocol=knn,linear,lowshot", f"out={out}",
          "cluster.partition=gpu", "cluster.gpus_per_node=1"])
    printed = capsys.readouterr().out
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 f"#SBATCH --output={out}/_jobs/%A_%a/%A_%a_0_log.out", "#SBATCH --signal=USR2@90"):
        assert line in printed.splitlines(), printed
    assert not out.exists()  # a dry run writes nothing


def test_image_folder_with_val_split_and_resize(tiny_encoder, tmp_path):
    """ImageNet layout (train/ and val/ class folders, RGB images of mixed sizes) through the
    DataLoader path, with grayscale conversion and short-side resize + centre crop."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 3)):
        for cls in ("a", "b"):
            (tmp_path / "folder" / split / cls).mkdir(parents=True)
            for i in range(n):
                size = (10 + i, 12)
                pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(tmp_path / "folder" / split / cls / f"{i}.png")
    cfg = {"data": f"imagefolder:{tmp_path / 'folder'}", "val_resize": "short256", "cache_dir": None,
           "progress": False, "knn": {"k": [3], "report_k": 3}}
    [rec] = evaluate(tiny_encoder, "knn", cfg, tmp_path / "out")
    assert (rec["train_images"], rec["val_images"]) == (12, 6)
    assert rec["dataset"].startswith("imagefolder:") and len(rec["dataset_hash"]) == 64


def test_knn_record_carries_the_raw_and_centred_rankme_of_the_test_features_it_classified(tiny_encoder, eval_cfg, tmp_path):
    import numpy as np

    from eval import knn

    cfg = settings.resolve({**eval_cfg, "train_subset": 200, "val_subset": 100})
    ctx = build_context(tiny_encoder, cfg, tmp_path)
    metrics, _, extra = knn.run(ctx)
    token = extra["feature"]
    z = ctx.features("val", [token])[token].double().numpy()
    sigma = np.linalg.svd(z, compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    assert metrics[f"health/{token}/rankme"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
    sigma = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    assert metrics[f"health/{token}/rankme_centered"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())),
                                                                       rel=1e-6)
    assert -1.0 <= metrics[f"health/{token}/cos_mean"] <= 1.0
