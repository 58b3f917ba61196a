"""Adagrad with momentum, the optimizer the GRU4Rec papers train with (``learner: adagrad_momentum``).

Per parameter and step, with gradient g (all operations elementwise):

    acc <- acc + g^2
    mom <- momentum * mom - lr * g / sqrt(acc + eps)
    p   <- p + mom

Without momentum the last two lines are ``p <- p - lr * g / sqrt(acc + eps)``.

Sparse row updates: a parameter whose gradient is sparse (an ``nn.Embedding(sparse=True)``
table) updates the accumulator and computes the new step only for the gradient's rows.
Every other row has g = 0, for which the rule above leaves ``acc`` alone, multiplies ``mom``
by ``momentum`` and adds it to ``p``; the sparse step does exactly that for them, so it equals
the dense step for the same gradient, to the bit (``tests/test_optim.py``).  Without momentum
the other rows do not change at all and the step touches only the gradient's rows.

``sparse_momentum="touched_rows"`` is the official GRU4Rec code's sparse step instead: only the
gradient's rows decay their momentum and move; every other row keeps its momentum and stays
put until a gradient reaches it again.  It differs from the dense step (a row's momentum is
applied only when the row is sampled), but it never touches a whole table, which on a large
item table is most of the exact step's time.
"""
import torch
from torch.optim import Optimizer

from recbole_mamba.errors import ConfigError


class AdagradMomentum(Optimizer):
    """Adagrad with (heavy-ball) momentum; dense and exact sparse-row steps."""

    SPARSE_MOMENTUM = ("exact", "touched_rows")

    def __init__(self, params, lr, momentum=0.0, eps=1e-6, sparse_momentum="exact"):
        if not lr > 0:
            raise ConfigError(f"learning_rate={lr!r} must be > 0 for learner=adagrad_momentum")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum={momentum!r} must be in [0, 1) for learner=adagrad_momentum")
        if not eps > 0:
            raise ConfigError(f"adagrad_eps={eps!r} must be > 0 for learner=adagrad_momentum")
        if sparse_momentum not in self.SPARSE_MOMENTUM:
            raise ConfigError(f"sparse_momentum={sparse_momentum!r} must be one of {', '.join(self.SPARSE_MOMENTUM)}")
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps, sparse_momentum=sparse_momentum))

    def _state_of(self, p, momentum):
        state = self.state[p]
        if not state:
            state["acc"] = torch.zeros_like(p)
            if momentum:
                state["mom"] = torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_of(p, momentum)
                if p.grad.is_sparse:
                    _sparse_step(p, p.grad.coalesce(), state, lr, momentum, eps,
                                 group.get("sparse_momentum", "exact") == "touched_rows")
                else:
                    _dense_step(p, p.grad, state, lr, momentum, eps)
        return loss


def _dense_step(p, grad, state, lr, momentum, eps):
    acc = state["acc"].addcmul_(grad, grad)
    update = torch.div(grad, acc.add(eps).sqrt_()).mul_(-lr)
    if momentum:
        p.add_(state["mom"].mul_(momentum).add_(update))
    else:
        p.add_(update)


def _sparse_step(p, grad, state, lr, momentum, eps, touched_rows_only=False):
    rows, values = grad.indices()[0], grad.values()  # [R], [R, ...]; rows unique after coalesce
    acc_rows = state["acc"][rows].addcmul_(values, values)  # [R, ...]
    state["acc"].index_copy_(0, rows, acc_rows)
    update = torch.div(values, acc_rows.add(eps).sqrt_()).mul_(-lr)  # [R, ...]
    if momentum and touched_rows_only:
        # the official code's step: only the gradient's rows decay their momentum and move
        mom_rows = state["mom"][rows].mul_(momentum).add_(update)  # [R, ...]
        state["mom"].index_copy_(0, rows, mom_rows)
        p.index_add_(0, rows, mom_rows)
    elif momentum:
        # every row's momentum decays and moves it (g = 0 outside ``rows``), as the dense step does
        mom = state["mom"].mul_(momentum)
        mom.index_add_(0, rows, update)
        p.add_(mom)
    else:
        p.index_add_(0, rows, update)
