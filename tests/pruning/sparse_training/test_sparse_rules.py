"""Each pruning-stable method's update rule on a few weights, one to three steps, the expected numbers worked out
here from the paper's formula. One linear layer y = W_eff . x without bias, loss = y (so dL/dW_eff = x), plain SGD
built from the method's parameter groups, and the trainer's order of calls (step, iteration += 1, on_step_end)."""
import math

import pytest
import torch
from torch import nn

from nptm.pruning.sparse_training import SPARSE_TRAINING


class Host:
    """The attributes and call order of nptm's Trainer that the methods use (``.model``, ``.optimizer``,
    ``.iteration``, ``.epoch``, the callback hooks), driving one linear layer."""

    def __init__(self, method, weights, *, sparsity, total_iters, iters_per_epoch=None, lr=0.1, momentum=0.0,
                 weight_decay=0.0):
        self.model = nn.Sequential(nn.Linear(len(weights), 1, bias=False))
        with torch.no_grad():
            self.model[0].weight.copy_(torch.tensor([weights], dtype=torch.float64).float())
        self.method = method
        ipe = iters_per_epoch or total_iters
        method.prepare(self.model, sparsity=sparsity, total_iters=total_iters, iters_per_epoch=ipe, include_linear=True)
        self.optimizer = torch.optim.SGD(method.param_groups(self.model, weight_decay), lr=lr, momentum=momentum)
        self.iteration, self.epoch, self.iters_per_epoch = 0, 0, ipe
        self.epochs = math.ceil(total_iters / ipe)
        method.on_fit_start(self)

    def step(self, x):
        if self.iteration % self.iters_per_epoch == 0:
            self.epoch = self.iteration // self.iters_per_epoch
            self.method.on_epoch_start(self, self.epoch)
        self.optimizer.zero_grad()
        out = self.model(torch.tensor([x]))
        out.sum().backward()
        self.optimizer.step()
        self.iteration += 1
        self.method.on_step_end(self, self.iteration - 1, out.sum())
        return float(out.detach())

    @property
    def dense(self):
        return self.method.dense(self.model)[0].detach().flatten().tolist()

    def finish(self):
        self.method.on_fit_end(self)
        done = self.method.finish(self.model)
        return self.model[0].weight.detach().flatten().tolist(), done.masks["0.weight"].flatten().tolist(), \
            done.reached_sparsity


def close(got, expected):
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_gsm_only_the_top_q_by_w_times_g_get_the_gradient_the_rest_only_decay():
    h = Host(SPARSE_TRAINING["gsm"](momentum=0.5, pull=0.0), [1.0, -2.0, 0.5, 3.0], sparsity=0.5, total_iters=4,
             weight_decay=0.1)
    assert h.optimizer.param_groups[0]["momentum"] == 0.5
    x = [0.5, 0.1, 4.0, 0.0]
    # step 1: |w * g| = [0.5, 0.2, 2.0, 0]: Q = 2 keep entries 2 and 0; d = g * keep + 0.1 w; buf = d; w -= 0.1 buf
    h.step(x)
    buf1 = [0.5 + 0.1 * 1.0, 0.0 + 0.1 * -2.0, 4.0 + 0.1 * 0.5, 0.0 + 0.1 * 3.0]
    w1 = [1.0 - 0.1 * buf1[0], -2.0 - 0.1 * buf1[1], 0.5 - 0.1 * buf1[2], 3.0 - 0.1 * buf1[3]]
    close(h.dense, w1)
    # step 2: |w1 * g| = [0.47, 0.198, 0.38, 0]: keep entries 0 and 2 again; buf = 0.5 buf1 + d
    h.step(x)
    d2 = [0.5 + 0.1 * w1[0], 0.1 * w1[1], 4.0 + 0.1 * w1[2], 0.1 * w1[3]]
    buf2 = [0.5 * b + d for b, d in zip(buf1, d2)]
    w2 = [w - 0.1 * b for w, b in zip(w1, buf2)]
    close(h.dense, w2)
    weights, mask, reached = h.finish()  # the 2 smallest |w| pruned: entries 0 (0.8506) and 2 (0.50845)
    assert mask == [False, True, False, True] and reached == 0.0  # GSM's forward weights have no exact zero
    close(weights, [0.0, w2[1], 0.0, w2[3]])


def test_gsm_keeps_the_optimizer_momentum_when_asked():
    h = Host(SPARSE_TRAINING["gsm"](momentum=None), [1.0, 2.0], sparsity=0.5, total_iters=2, momentum=0.3)
    assert h.optimizer.param_groups[0]["momentum"] == 0.3


def test_dpf_forward_is_masked_the_update_dense_and_masks_follow_the_ramp_and_period():
    # budget 4 iterations, ramp window 0-25%: one ramp step, at iteration 1, to s = 0.5; mask period 2
    h = Host(SPARSE_TRAINING["dpf"](every=2, window=(0.0, 0.25)), [3.0, -1.0, 2.0, 0.5], sparsity=0.5,
             total_iters=4, iters_per_epoch=2)
    x = [1.0, -20.0, 1.0, 1.0]
    assert h.step(x) == 3.0 + 20.0 + 2.0 + 0.5  # no mask before the ramp starts
    close(h.dense, [2.9, 1.0, 1.9, 0.4])  # then the mask of s = 0.5: the two smallest |w| (0.4, 1.0) are masked
    assert h.method.parametrizations(h.model)[0].mask.tolist() == [[True, False, True, False]]
    assert h.step(x) == pytest.approx(2.9 + 1.9)  # forward at the masked weights
    close(h.dense, [2.8, 3.0, 1.8, 0.3])  # the gradient updates every dense weight: entry 1 grows back
    # iteration 2 is a multiple of the period: the mask is recomputed from the dense weights
    assert h.method.parametrizations(h.model)[0].mask.tolist() == [[True, True, False, False]]
    weights, mask, reached = h.finish()
    close(weights, [2.8, 3.0, 0.0, 0.0])
    assert mask == [True, True, False, False] and reached == 0.5


def test_dnw_uses_the_top_k_from_the_first_step_with_a_straight_through_gradient():
    h = Host(SPARSE_TRAINING["dnw"](), [3.0, -1.0, 2.0, 0.5], sparsity=0.5, total_iters=4)
    x = [1.0, -20.0, 1.0, 1.0]
    assert h.step(x) == 3.0 + 2.0  # k = 2 from the start: entries 0 and 2
    close(h.dense, [2.9, 1.0, 1.9, 0.4])  # all four move by -0.1 x
    assert h.method.parametrizations(h.model)[0].mask.tolist() == [[True, False, True, False]]
    assert h.step(x) == pytest.approx(2.9 + 1.9)
    close(h.dense, [2.8, 3.0, 1.8, 0.3])
    assert h.method.parametrizations(h.model)[0].mask.tolist() == [[True, True, False, False]]  # after every step
    weights, mask, _ = h.finish()
    close(weights, [2.8, 3.0, 0.0, 0.0])


def test_str_soft_threshold_and_its_learned_threshold():
    s0 = math.log(0.1 / 0.9)  # sigmoid(s0) = 0.1
    h = Host(SPARSE_TRAINING["str"](s_init=s0, steer=False), [0.5, -0.2, 0.05], sparsity=0.6, total_iters=2,
             weight_decay=0.01)
    assert [g["weight_decay"] for g in h.optimizer.param_groups] == [0.01, 0.01]  # s is decayed too
    x = [1.0, 2.0, 3.0]
    assert h.step(x) == pytest.approx(0.4 * 1 + (-0.1) * 2 + 0.0 * 3)  # W_eff = sign(w) relu(|w| - 0.1)
    # dL/dw = x where |w| > 0.1, else 0; dL/ds = -sum x_i sign(w_i) [|w_i| > 0.1] sigmoid'(s0) = -(1 - 2) * 0.09
    close(h.dense, [0.5 - 0.1 * (1.0 + 0.01 * 0.5), -0.2 - 0.1 * (2.0 + 0.01 * -0.2), 0.05 - 0.1 * 0.01 * 0.05])
    s1 = s0 - 0.1 * (0.09 + 0.01 * s0)
    close([float(h.method.parametrizations(h.model)[0].s.detach())], [s1])
    tau = 1 / (1 + math.exp(-s1))
    weights, mask, reached = h.finish()
    # STR's own zeros: entry 2 (|0.04995| < tau); the projection onto round(0.6 * 3) = 2 zeros adds entry 0
    assert reached == pytest.approx(1 / 3) and mask == [False, True, False]
    close(weights, [0.0, -(0.3998 - tau), 0.0])


def test_str_threshold_decay_option():
    h = Host(SPARSE_TRAINING["str"](threshold_decay=0.5, steer=False), [0.5, -0.2], sparsity=0.5, total_iters=2,
             weight_decay=0.01)
    groups = h.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.5] and [len(g["params"]) for g in groups] == [1, 1]


def test_cs_soft_mask_temperature_penalty_and_hard_final_mask():
    # s_init 0.5: scale = 1 / sigmoid(0.5); beta_final 4 over 3 epochs: beta = 1, 2, 4
    cs = SPARSE_TRAINING["cs"](s_init=0.5, penalty=0.01, beta_final=4.0)
    w0, x = [5.0, -2.0], [10.0, 1.0]
    h = Host(cs, w0, sparsity=0.5, total_iters=3, iters_per_epoch=1, weight_decay=0.1)
    assert [g["weight_decay"] for g in h.optimizer.param_groups] == [0.1, 0.0]  # the scores are not decayed
    scale = 1 + math.exp(-0.5)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert h.step(x) == pytest.approx((10.0 * 5.0 - 2.0) * scale * sig(0.5))  # epoch 0: beta = 1
    # dL/ds_i = (x_i w_i + penalty) * scale * beta * sig'(beta s_i); dL/dw_i = x_i * mask_i (+ weight decay)
    d = scale * sig(0.5) * (1 - sig(0.5))
    s1 = [0.5 - 0.1 * (xi * wi + 0.01) * d for xi, wi in zip(x, w0)]
    w1 = [wi - 0.1 * (xi * scale * sig(0.5) + 0.1 * wi) for wi, xi in zip(w0, x)]
    close(h.method.parametrizations(h.model)[0].s.detach().flatten().tolist(), s1)
    close(h.dense, w1)
    out = h.step(x)  # epoch 1: beta = 2
    assert float(h.method.parametrizations(h.model)[0].beta) == 2.0
    assert out == pytest.approx(sum(xi * wi * scale * sig(2 * si) for xi, wi, si in zip(x, w1, s1)))
    d2 = [scale * 2 * sig(2 * si) * (1 - sig(2 * si)) for si in s1]
    s2 = [si - 0.1 * (xi * wi + 0.01) * di for si, xi, wi, di in zip(s1, x, w1, d2)]
    w2 = [wi - 0.1 * (xi * scale * sig(2 * si) + 0.1 * wi) for wi, xi, si in zip(w1, x, s1)]
    close(h.method.parametrizations(h.model)[0].s.detach().flatten().tolist(), s2)
    close(h.dense, w2)
    assert s2[0] < 0 < s2[1]
    weights, mask, reached = h.finish()  # mask s > 0, kept weights scaled by 1 / sigmoid(s_init)
    assert reached == 0.5 and mask == [False, True]
    close(weights, [0.0, w2[1] * scale])


def test_lc_penalty_pulls_towards_the_projection_and_mu_grows_at_each_c_step():
    # 2 LC steps in 4 iterations: C steps at iterations 0 and 2, mu = 0.5 then 1.0
    h = Host(SPARSE_TRAINING["lc"](mu0=0.5, growth=2.0, steps=2), [3.0, -1.0, 2.0, 0.5], sparsity=0.5, total_iters=4)
    assert [h.method.mu_at(t) for t in range(4)] == [0.5, 0.5, 1.0, 1.0]
    theta0 = [3.0, 0.0, 2.0, 0.0]
    x = [1.0, 1.0, 1.0, 1.0]
    w = [3.0, -1.0, 2.0, 0.5]
    for _ in range(2):  # L step 0: w -= 0.1 (x + 0.5 (w - theta0))
        h.step(x)
        w = [wi - 0.1 * (1.0 + 0.5 * (wi - ti)) for wi, ti in zip(w, theta0)]
        close(h.dense, w)
    theta1 = [w[0], 0.0, w[2], 0.0]  # C step at iteration 2: the two largest |w| kept
    close(h.method.targets(h.model)[0].flatten().tolist(), theta1)
    h.step(x)  # L step 1, mu = 1
    w = [wi - 0.1 * (1.0 + 1.0 * (wi - ti)) for wi, ti in zip(w, theta1)]
    close(h.dense, w)
    weights, mask, reached = h.finish()  # the last C step: the final model is theta
    close(weights, [w[0], 0.0, w[2], 0.0])
    assert mask == [True, False, True, False] and reached == 0.0  # the forward used w, theta only at the end
    assert not any(n.endswith("_lc_target") for n, _ in h.model.named_buffers())


def test_gsm_pull_raises_the_decay_of_the_weights_outside_the_top_q():
    # no schedule: lr 0.1 throughout, momentum 0, 4 iterations: sum lr / (1 - m) = 0.4, so decay = pull / 0.4 = 2.5
    h = Host(SPARSE_TRAINING["gsm"](momentum=None, pull=1.0), [1.0, -2.0, 0.5, 3.0], sparsity=0.5, total_iters=4)
    assert h.method.decay == pytest.approx(2.5)
    h.step([0.5, 0.1, 4.0, 0.0])  # |w * g| = [0.5, 0.2, 2.0, 0]: entries 0 and 2 keep their gradient
    close(h.dense, [1.0 - 0.1 * 0.5, -2.0 - 0.1 * 2.5 * -2.0, 0.5 - 0.1 * 4.0, 3.0 - 0.1 * 2.5 * 3.0])


def test_lc_mu_scaled_to_the_lr_reaches_the_final_pull_in_the_last_l_step():
    # mu_t = final_pull (1 - m) growth^(j - n + 1) / lr_t: lr 0.1, m 0, 2 LC steps: mu = 2.5 then 5.0
    h = Host(SPARSE_TRAINING["lc"](final_pull=0.5, growth=2.0, steps=2), [3.0, -1.0, 2.0, 0.5], sparsity=0.5,
             total_iters=4)
    assert [h.method.mu_at(t, 0.1, 0.0) for t in range(4)] == [2.5, 2.5, 5.0, 5.0]
    assert h.method.mu_at(3, 0.01, 0.9) == pytest.approx(0.5 * 0.1 / 0.01)  # lr x 0.1: mu x 10, momentum: x (1 - m)
    theta, w = [3.0, 0.0, 2.0, 0.0], [3.0, -1.0, 2.0, 0.5]
    h.step([1.0, 1.0, 1.0, 1.0])
    close(h.dense, [wi - 0.1 * (1.0 + 2.5 * (wi - ti)) for wi, ti in zip(w, theta)])


def test_str_steering_sets_the_decay_that_moves_s_to_the_goals_threshold():
    # 200 iterations, a check every 2, horizon max(2, 1 / (1 - m)) = 2 steps; the goal is the GMP ramp (10-75% of
    # the budget) read one horizon ahead; the decay is (logit(tau*) - s)(1 - m) / (lr |s| horizon), tau* the |w|
    # below which the goal's share of the weights lies (kthvalue, k = round(goal * 4))
    h = Host(SPARSE_TRAINING["str"](s_init=-6.0), [0.5, -0.2, 0.05, 0.01], sparsity=0.5, total_iters=200)
    p = h.method.parametrizations(h.model)[0]
    x = [0.0, 0.0, 0.0, 0.0]  # no loss gradient and no weight decay: the weights stay, only the steering moves s
    h.step(x), h.step(x)
    assert float(p.decay) == 0.0  # iteration 2: the goal is 0
    while float(p.decay) == 0:  # until the goal covers one weight: round(4 * 0.5 (1 - (1 - x)^3)) = 1, tau* = 0.01
        h.step(x)
    s, logit = float(p.s), math.log(0.01 / 0.99)
    goal = 0.5 * (1 - (1 - (h.iteration + 2 - 20) / 130) ** 3)
    assert h.iteration == 30 and round(4 * goal) == 1 and s == -6.0  # (32 - 20) / 130: goal 0.126
    assert float(p.decay) == pytest.approx((logit - s) / (0.1 * abs(s) * 2), rel=1e-5)
    while h.iteration < 150:  # at 152 the ramp is complete: k = 2 of |w| = [0.01, 0.05, 0.2, 0.5], tau* = 0.05
        h.step(x)
    assert float(p.s) == pytest.approx(math.log(0.05 / 0.95), abs=1e-3)
    weights, mask, reached = h.finish()
    assert reached == 0.5 and mask == [True, True, False, False]
