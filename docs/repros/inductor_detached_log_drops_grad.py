"""torch.compile (inductor) returns a loss without grad_fn when a detached log aliases it.

Inductor's joint-graph pass folds no-op arithmetic (``0.0 + x``, ``1.0 * x``) and lowers
``detach`` to an alias, so the compiled forward hands back one tensor object in both output
slots; AOTAutograd then calls ``ctx.mark_non_differentiable`` on the detached slot, which is
keyed on the tensor object and so also strips the loss of its gradient. ``aot_eager`` does not
run inductor's passes and keeps it. Seen on torch 2.14.1 (CPU); same family as
pytorch/pytorch#100348 and the PRs titled "[aot_autograd] Don't let a non-differentiable output
mark its aliases". Our workaround: common/compiled_step.py.

    python docs/repros/inductor_detached_log_drops_grad.py
"""
import torch


def step(x):
    term = (x * x).sum()
    loss = 0.0 + term                               # a loss that starts from 0.0, as loss sums do
    return {"loss": loss, "term": term.detach()}    # ... and the term logged on its own


x = torch.randn(3, requires_grad=True)
print("eager     loss.requires_grad =", step(x)["loss"].requires_grad)
for backend in ("aot_eager", "inductor"):
    torch._dynamo.reset()
    print(f"{backend:9s} loss.requires_grad =", torch.compile(step, backend=backend)(x)["loss"].requires_grad)
# torch 2.14.1: eager True, aot_eager True, inductor False
