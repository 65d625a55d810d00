"""Short diagnostic runs of eval.finetune.run (the teacher's code path), one variant per call.
usage: drive.py NAME [rrc_lo=0.08] [key=value eval overrides ...]"""
import sys, time, json, torch
from omegaconf import OmegaConf
from eval import settings, finetune
from eval.api import build_context
from eval.features import iter_images
from eval.heads import accuracy

name, args = sys.argv[1], sys.argv[2:]
rrc_lo = None
post = []
ov = []
for a in args:
    if a.startswith("post:"):
        post.append(a[5:])
    elif a.startswith("rrc_lo="):
        rrc_lo = float(a.split("=")[1])
    else:
        ov.append(a)
base = ["finetune.recipe=supervised", "finetune.epochs=5", "finetune.lr=1e-3", "finetune.mixup=0",
        "finetune.cutmix=0", "finetune.reprob=0", "train_subset=10000", "progress=false", "cache_dir=null"]
user = OmegaConf.to_container(OmegaConf.from_dotlist(base + ov))
cfg = settings.resolve(user)
for p in post:
    k, v = p.split('=')
    OmegaConf.update(cfg, k, float(v))
if rrc_lo is not None:
    import common.augment as A
    orig = A.random_resized_crop
    A.random_resized_crop = lambda size, scale=(0.08, 1.0), **k: orig(size, scale=(rrc_lo, 1.0), **k)
# wrap evaluate to also log train accuracy (first 2000 train images, no augmentation) at the end
orig_eval = finetune.evaluate_classifier
log = {}
def ev(model, ctx, bs):
    t1, t5 = orig_eval(model, ctx, bs)
    model.eval(); c = n = 0
    ds = ctx.train.dataset
    with torch.no_grad():
        for i, (x, y) in enumerate(iter_images(ds, ctx.val.preprocess, 500)):
            if i >= 4: break
            a, _ = accuracy(model(x), y); c += a; n += len(y)
    log.setdefault("epochs", []).append({"val_top1": round(t1, 2), "train_top1_noaug": round(100 * c / n, 2)})
    return t1, t5
finetune.evaluate_classifier = ev
t0 = time.time()
ctx = build_context("random:scripts/teachers/mini_supervised_arch.json", cfg, "/tmp/supvit/out")
m, _, extra = finetune.run(ctx)
res = {"name": name, "overrides": ov, "post": post, "rrc_lo": rrc_lo, "top1": round(m["finetune/top1"], 2),
       "last_epoch_loss": round(m["finetune/last_epoch_loss"], 4), "steps": extra["steps"],
       "train_images": extra["train_images"], "val_images": len(ctx.val.dataset), "wall_s": round(time.time() - t0, 1), **log}
print(json.dumps(res))
with open("/tmp/supvit/results.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
