"""Optimisers (parameter groups, SAM / ASAM), per-epoch schedules against hand-computed rates, clipping."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from fer_core.config import OptimizerConfig, SAMConfig, SchedulerConfig
from fer_core.optim import SAM, build_optimizer, build_scheduler, clip_gradients, frozen_bn_stats


# --------------------------------------------------------------------------------------------- helpers
def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))], lr=lr)


def _lrs(cfg: SchedulerConfig, epochs: int, base: float = 1.0, accs: list | None = None,
         n: int | None = None) -> list[float]:
    """The learning rate of each of the first ``n`` (default ``epochs``) epochs, as set before the epoch runs."""
    sched = build_scheduler(_opt(base), cfg, epochs)
    out = []
    for t in range(epochs if n is None else n):
        out.append(sched.lr)
        sched.step(accs[t] if accs else None)
    return out


def _roundtrip(obj: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as the trainer's checkpoints go."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _regression(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=g)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3 + 0.05 * torch.randn(32, 1, generator=g)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.2, 0.4, -0.3]]))
        model.bias.fill_(-0.1)
    return model, x, y


def _loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    weight, bias = params
    return ((x @ weight.T + bias - y) ** 2).mean()


def _sam_grad(params: list[torch.Tensor], x, y, rho: float, adaptive: bool = False) -> list[torch.Tensor]:
    """SAM's gradient written out: the gradient at w + e_w, e_w = rho * T^2 g / ||T g|| (T = |w| or 1)."""
    w = [p.detach().clone().requires_grad_() for p in params]
    g = torch.autograd.grad(_loss(w, x, y), w)
    t = [p.detach().abs() if adaptive else torch.ones_like(p) for p in w]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g, strict=True)))
    moved = [(p.detach() + rho * ti**2 * gi / norm).requires_grad_() for p, ti, gi in zip(w, t, g, strict=True)]
    return list(torch.autograd.grad(_loss(moved, x, y), moved))


def _sam_step(model: nn.Linear, opt: torch.optim.Optimizer, x, y, seen: list | None = None) -> torch.Tensor:
    """The training step as the trainer does it; ``seen`` gets the parameters at each forward pass."""
    def closure():
        if seen is not None:
            seen.append([p.detach().clone() for p in model.parameters()])
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    opt.zero_grad(set_to_none=True)
    loss = closure()
    assert getattr(opt, "requires_closure", False)
    opt.step(closure)
    return loss.detach()


# --------------------------------------------------------------------------------------------- schedules
def test_constant_step_exponential():
    assert _lrs(SchedulerConfig(name="none"), 3, base=0.1) == [0.1, 0.1, 0.1]
    assert _lrs(SchedulerConfig(name="step", step_size=2, gamma=0.5), 6) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert _lrs(SchedulerConfig(name="exponential", gamma=0.9), 3) == pytest.approx([1, 0.9, 0.81])


def test_warmup_then_multistep_counts_milestones_after_warmup():
    cfg = SchedulerConfig(name="multistep", milestones=[3, 1], gamma=0.1, warmup_epochs=2)
    assert _lrs(cfg, 6) == pytest.approx([1 / 3, 2 / 3, 1, 0.1, 0.1, 0.01])


def test_cosine_reaches_min_lr_just_after_the_last_epoch():
    cfg = SchedulerConfig(name="cosine", min_lr=0.1)
    c = math.cos(math.pi / 4)
    # 4 epochs: the 5th rate (after the last epoch) is min_lr, and it stays there
    assert _lrs(cfg, 4, n=6) == pytest.approx([1, 0.1 + 0.45 * (1 + c), 0.55, 0.1 + 0.45 * (1 - c), 0.1, 0.1])
    warm = _lrs(SchedulerConfig(name="cosine", warmup_epochs=1), 5)
    assert warm[:2] == [0.5, 1.0] and all(lr > 0 for lr in warm) and warm[1:] == sorted(warm[1:], reverse=True)


def test_inverse_time_follows_the_keras_formula():
    cfg = SchedulerConfig(name="inverse_time", decay_rate=0.5, decay_epochs=2.0)
    assert _lrs(cfg, 6, base=1e-5) == pytest.approx([1e-5 / (1 + 0.5 * t / 2) for t in range(6)], rel=1e-12)


def test_plateau_reduces_after_patience_and_respects_min_lr():
    cfg = SchedulerConfig(name="plateau", gamma=0.5, patience=2, min_lr=0.2)
    accs = [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    assert _lrs(cfg, 11, accs=accs) == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2])
    # epochs without a validation accuracy do not count, nor do warm-up epochs
    assert _lrs(cfg, 5, accs=[0.5, None, None, None, None]) == [1] * 5
    warm = SchedulerConfig(name="plateau", gamma=0.5, patience=1, warmup_epochs=2)
    assert _lrs(warm, 5, accs=[0.5, 0.4, 0.4, 0.4, 0.9]) == pytest.approx([1 / 3, 2 / 3, 1, 0.5, 0.25])


@pytest.mark.parametrize("name", ["none", "step", "multistep", "exponential", "cosine", "plateau", "inverse_time"])
def test_resume_mid_way_gives_the_same_remaining_rates(name):
    cfg = SchedulerConfig(name=name, step_size=2, milestones=[2, 4], gamma=0.5, warmup_epochs=1, patience=1,
                          min_lr=0.01, decay_rate=0.3)
    accs = [0.1, 0.3, 0.2, 0.25, 0.5, 0.4, 0.4, 0.6]
    full = _lrs(cfg, 8, accs=accs)
    sched = build_scheduler(_opt(), cfg, 8)
    for t in range(4):
        sched.step(accs[t])
    state = _roundtrip(sched.state_dict())
    opt = _opt()
    resumed = build_scheduler(opt, cfg, 8)
    resumed.load_state_dict(state)  # sets the optimiser's rate at once, whatever the load order
    rest = []
    for t in range(4, 8):
        rest.append(opt.param_groups[0]["lr"])
        resumed.step(accs[t])
    assert rest == full[4:]


def test_scheduler_sets_every_group_from_its_own_base():
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))]},
                           {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01}], lr=0.1)
    sched = build_scheduler(opt, SchedulerConfig(name="exponential", gamma=0.5), 3)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.005] and sched.lr == 0.05


# --------------------------------------------------------------------------------------------- build_optimizer
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)


def test_build_optimizer_groups_and_frozen_params():
    net = _Net()
    net.conv.requires_grad_(False)
    opt = build_optimizer(net, OptimizerConfig(name="sgd", weight_decay=1e-3, momentum=0.0, nesterov=True))
    assert isinstance(opt, torch.optim.SGD) and not opt.param_groups[0]["nesterov"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net.fc.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(net.bn.weight), id(net.bn.bias), id(net.fc.bias)}
    sgd = build_optimizer(net, OptimizerConfig(name="sgd", momentum=0.9, nesterov=True))
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    adam = build_optimizer(net, OptimizerConfig(name="adam", lr=1e-3, weight_decay=1e-4))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 1e-4
    assert type(build_optimizer(net, OptimizerConfig(name="adamw"))) is torch.optim.AdamW
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(net, OptimizerConfig())


def test_build_optimizer_wraps_in_sam():
    cfg = OptimizerConfig.model_validate({"name": "adamw", "sam": {"enabled": True, "rho": 0.1, "adaptive": True}})
    opt = build_optimizer(_Net(), cfg)
    assert isinstance(opt, SAM) and type(opt.base) is torch.optim.AdamW and opt.rho == 0.1 and opt.adaptive
    assert opt.requires_closure and not getattr(opt.base, "requires_closure", False)
    assert opt.param_groups is opt.base.param_groups and len(opt.param_groups) == 2


# --------------------------------------------------------------------------------------------- SAM
@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_perturbs_by_rho_restores_then_steps_with_the_perturbed_gradient(adaptive):
    model, x, y = _regression()
    w0 = [p.detach().clone() for p in model.parameters()]
    rho, lr = 0.05, 0.1
    base = torch.optim.SGD(model.parameters(), lr=lr)
    at_base_step: list = []
    base.register_step_pre_hook(lambda opt, args, kwargs: at_base_step.append(
        [p.detach().clone() for p in model.parameters()]))
    seen: list = []
    _sam_step(model, SAM(base, rho=rho, adaptive=adaptive), x, y, seen)

    w = [p.clone().requires_grad_() for p in w0]
    g = torch.autograd.grad(_loss(w, x, y), w)
    t = [p.abs() if adaptive else torch.ones_like(p) for p in w0]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g, strict=True)))
    for moved, p0, ti, gi in zip(seen[1], w0, t, g, strict=True):
        torch.testing.assert_close(moved - p0, rho * ti**2 * gi / norm)
    if not adaptive:  # exactly rho along the normalised gradient
        e = torch.cat([(m - p0).flatten() for m, p0 in zip(seen[1], w0, strict=True)])
        assert float(e.norm()) == pytest.approx(rho, rel=1e-5)
        assert torch.nn.functional.cosine_similarity(e, torch.cat([gi.flatten() for gi in g]), dim=0) > 1 - 1e-6
    assert all(torch.equal(a, b) for a, b in zip(at_base_step[0], w0, strict=True))  # restored bit for bit
    g2 = _sam_grad(w0, x, y, rho, adaptive)
    for p, p0, gi in zip(model.parameters(), w0, g2, strict=True):
        torch.testing.assert_close(p.detach(), p0 - lr * gi)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_sam_update_is_the_base_update_with_the_gradient_at_w_plus_e(name):
    model, x, y = _regression()
    twin = copy.deepcopy(model)
    cfg = OptimizerConfig(name=name, lr=0.05, weight_decay=1e-2, momentum=0.9)
    sam = build_optimizer(model, cfg.model_copy(update={"sam": SAMConfig(enabled=True, rho=0.05)}))
    plain = build_optimizer(twin, cfg)
    assert isinstance(sam, SAM) and type(sam.base) is type(plain)
    for _ in range(3):
        _sam_step(model, sam, x, y)
        for p, gi in zip(twin.parameters(), _sam_grad(list(twin.parameters()), x, y, 0.05), strict=True):
            p.grad = gi
        plain.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_sam_reduces_the_loss_and_schedulers_drive_the_base_lr():
    model, x, y = _regression()
    sam = build_optimizer(model, OptimizerConfig.model_validate(
        {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "sam": {"enabled": True, "rho": 0.05}}))
    sched = build_scheduler(sam, SchedulerConfig(name="step", step_size=1, gamma=0.5), 3)
    losses = [float(_sam_step(model, sam, x, y)) for _ in range(40)]
    assert losses[-1] < 0.05 * losses[0]
    sched.step()
    assert sam.base.param_groups[0]["lr"] == sched.lr == 0.05
    torch_sched = torch.optim.lr_scheduler.StepLR(sam, step_size=1, gamma=0.1)  # torch's schedulers work too
    _sam_step(model, sam, x, y)
    torch_sched.step()
    assert sam.base.param_groups[0]["lr"] == pytest.approx(0.005)


def test_sam_state_dict_round_trip():
    model, x, y = _regression()
    sam = SAM(torch.optim.Adam(model.parameters(), lr=0.01), rho=0.05)
    for _ in range(2):
        _sam_step(model, sam, x, y)
    state = _roundtrip(sam.state_dict())
    base_state = sam.base.state_dict()  # the base's own state, nothing else
    assert state["param_groups"] == base_state["param_groups"] and state["state"].keys() == base_state["state"].keys()
    assert all(torch.equal(v, base_state["state"][i][k]) for i, st in state["state"].items() for k, v in st.items())

    twin = copy.deepcopy(model)
    resumed = SAM(torch.optim.Adam(twin.parameters(), lr=0.5), rho=0.05)
    resumed.load_state_dict(state)
    assert resumed.param_groups is resumed.base.param_groups and resumed.state is resumed.base.state
    assert resumed.param_groups[0]["lr"] == 0.01
    sched = build_scheduler(resumed, SchedulerConfig(name="exponential", gamma=0.5), 3)
    sched.step()
    assert resumed.base.param_groups[0]["lr"] == 0.005  # still linked to the base after loading
    resumed.base.param_groups[0]["lr"] = sam.param_groups[0]["lr"] = 0.01
    _sam_step(model, sam, x, y)
    _sam_step(twin, resumed, x, y)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sam_errors_leave_the_weights_unperturbed():
    model, x, y = _regression()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="backward"):
        sam.step(lambda: None)
    with pytest.raises(ValueError, match="closure"):
        sam.step()
    w0 = [p.detach().clone() for p in model.parameters()]
    nn.functional.mse_loss(model(x), y).backward()

    def failing():
        raise FloatingPointError("loss is nan")

    with pytest.raises(FloatingPointError):
        sam.step(failing)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), w0, strict=True))


# --------------------------------------------------------------------------------------------- helpers
def test_clip_gradients_returns_the_norm_before_clipping():
    model = nn.Linear(2, 1)
    model.weight.grad = torch.tensor([[3.0, 0.0]])
    model.bias.grad = torch.tensor([4.0])
    assert clip_gradients(model, 1.0) == pytest.approx(5.0)
    assert clip_gradients(model.parameters(), 10.0) == pytest.approx(1.0)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.6, 0.0]]))


def test_frozen_bn_stats_keeps_running_statistics():
    bn = nn.BatchNorm1d(3)
    bn(torch.randn(8, 3))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with frozen_bn_stats(bn):
        out = bn(torch.randn(8, 3) + 5)
    (out**2).sum().backward()  # backward after the block, as in the training step
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())
    assert bn.weight.grad is not None and bn.momentum == 0.1
    assert abs(float(out.detach().mean())) < 1e-5  # normalised with the batch's own statistics
