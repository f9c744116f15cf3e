"""RMSprop as TensorFlow (and so the A2C paper's code and OpenAI Baselines) computes it, which
Stable-Baselines3 ships as RMSpropTFLike and rl-baselines3-zoo uses for Atari.

Data flow: `agent.make_optimizer` builds it for `--optimizer rmsprop_tf`; `learner` steps it.

Two differences from torch.optim.RMSprop, both about the first steps: the square average starts at ones
(torch: zeros), and eps goes inside the square root (torch: outside). Per parameter, with gradient g:
    v <- alpha * v + (1 - alpha) * g^2        (v_0 = 1)
    p <- p - lr * g / sqrt(v + eps)
With torch's zeros, the first step divides g by sqrt((1 - alpha) g^2) = 10 |g| for alpha 0.99: an update
of lr * 10 in every coordinate whatever the gradient, which is what makes large learning rates unstable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class RMSpropTF(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8) -> None:
        if lr <= 0 or not 0 < alpha <= 1 or eps < 0:
            raise ValueError(f"invalid RMSpropTF settings: lr={lr}, alpha={alpha}, eps={eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                square_avg = state["square_avg"]
                square_avg.mul_(group["alpha"]).addcmul_(p.grad, p.grad, value=1 - group["alpha"])
                p.addcdiv_(p.grad, square_avg.add(group["eps"]).sqrt_(), value=-group["lr"])
        return loss
