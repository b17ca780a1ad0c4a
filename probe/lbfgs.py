"""Batched L-BFGS: many independent smooth problems (probes) minimised at once, each with its
own curvature history, backtracking Armijo line search and stopping rule, as scipy's L-BFGS-B
(scikit-learn's `LogisticRegression(solver="lbfgs")`) treats one. The objective
(`probe.fit._Objective`) gives the loss and gradient of any subset of the probes."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

LBFGS_TOL = 1e-4  # converged when no gradient entry exceeds this (scikit-learn's default tol)
LBFGS_HISTORY = 10  # curvature pairs kept per probe (scipy's L-BFGS-B default, as in sklearn)
LBFGS_BACKTRACKS = 20  # step halvings before a probe's line search gives up (it stops there)
ARMIJO = 1e-4  # sufficient decrease of the line search
# stopped probes stay in the batch (not evaluated, direction zero) until the live ones are
# at most this share of it; then the batch and its history are compacted (a copy)
COMPACT = 0.75


class Objective(Protocol):
    """Loss and gradient of the probes `probe` at parameters `theta` `[p, d + 1, c]`."""

    device: torch.device

    def __call__(self, theta: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]: ...

    def grad_max(self, grad: Tensor, probe: Tensor) -> Tensor: ...


def _shrink(step: Tensor, which: Tensor, t_loss: Tensor, loss: Tensor, slope: Tensor) -> None:
    """Backtrack the probes `which` (a mask; `t_loss`, `loss` and `slope` are theirs, in
    order): the minimum of the quadratic through the two losses and the slope, within
    [0.1, 0.5] of the step."""
    st = step[which]
    fit = -slope * st**2 / (2 * (t_loss - loss - slope * st)).clamp_min(1e-30)
    step[which] = torch.minimum(torch.maximum(fit.to(st.dtype), 0.1 * st), 0.5 * st)


def lbfgs(f: Objective, n_probes: int, d: int, c: int, max_iter: int) -> Tensor:
    """Minimise every probe's objective from zero with its own L-BFGS (history, backtracking
    Armijo line search, stopping rule), all batched; probes leave the batch as they converge.

    A probe stops when no gradient entry exceeds `LBFGS_TOL` (scikit-learn's and scipy's
    rule), after `max_iter` iterations, or when its line search finds no decrease. Returns
    the parameters `[probe, d + 1, c]`."""
    out = torch.zeros(n_probes, d + 1, c, device=f.device)
    probe = torch.arange(n_probes, device=f.device)
    theta = out.clone()
    loss, grad = f(theta, probe)
    m = LBFGS_HISTORY
    s_hist = theta.new_zeros(m, n_probes, d + 1, c)
    y_hist = torch.zeros_like(s_hist)
    rho = theta.new_zeros(m, n_probes)
    gamma = theta.new_zeros(n_probes)  # initial inverse-Hessian scale (0: none yet)

    def dot(a: Tensor, b: Tensor) -> Tensor:  # one pass, no `a * b` temporary
        return torch.linalg.vecdot(a.flatten(1), b.flatten(1))

    alive = torch.ones(n_probes, dtype=torch.bool, device=f.device)  # not yet stopped
    for it in range(max_iter):
        at = alive.nonzero().squeeze(1)
        done = at[~(f.grad_max(grad[at], probe[at]) > LBFGS_TOL)]
        if len(done):  # converged (or stalled) probes leave the batch
            out[probe[done]] = theta[done]
            alive[done] = False
            grad[done] = 0  # a stopped probe's direction is zero: it rides along unchanged
            if int(alive.sum()) <= COMPACT * len(probe):  # drop them (copies the history)
                probe, theta, loss, grad = probe[alive], theta[alive], loss[alive], grad[alive]
                s_hist, y_hist, rho, gamma = (s_hist[:, alive], y_hist[:, alive],
                                              rho[:, alive], gamma[alive])
                alive = alive[alive]
        if not alive.any():
            break
        # two-loop recursion over the stored pairs, newest first (empty pairs have rho 0);
        # in place: these tensors are every probe's parameters, and memory-bound
        q, alpha = -grad, []
        for i in range(it - 1, it - 1 - min(it, m), -1):
            a = rho[i % m] * dot(s_hist[i % m], q)
            q.addcmul_(y_hist[i % m], a[:, None, None], value=-1)
            alpha.append(a)
        first = gamma == 0  # no curvature yet: a step of length 1 along -grad (as scipy)
        scale = torch.where(first, 1 / grad.flatten(1).norm(dim=1).clamp_min(1e-12), gamma)
        q.mul_(scale[:, None, None])
        for i, a in zip(range(it - min(it, m), it), reversed(alpha)):
            b = rho[i % m] * dot(y_hist[i % m], q)
            q.addcmul_(s_hist[i % m], (a - b)[:, None, None])
        slope = dot(grad, q)
        uphill = slope >= 0  # (cannot happen with positive curvature pairs; be safe)
        if uphill.any():
            q = torch.where(uphill[:, None, None], -grad * scale[:, None, None], q)
            slope = torch.where(uphill, dot(grad, q), slope)
        # the full step first, for every probe; those it fails go on backtracking below
        step = torch.ones_like(slope)
        trial = torch.add(theta, q)
        if alive.all():
            t_loss, t_grad = f(trial, probe)
        else:  # stopped probes are not evaluated: they stay where they are
            at = alive.nonzero().squeeze(1)
            t_loss, t_grad = loss.clone(), grad.clone()
            t_loss[at], t_grad[at] = f(trial[at], probe[at])
        todo = ~(t_loss <= loss + ARMIJO * slope)
        if todo.any():
            new_theta = torch.where(todo[:, None, None], theta, trial)
            new_loss = torch.where(todo, loss, t_loss)
            new_grad = torch.where(todo[:, None, None], grad, t_grad)
            _shrink(step, todo, t_loss[todo], loss[todo], slope[todo])
        else:
            new_theta, new_loss, new_grad = trial, t_loss, t_grad
        del trial, t_grad
        for _ in range(LBFGS_BACKTRACKS - 1):
            if not todo.any():
                break
            idx = todo.nonzero().squeeze(1)
            trial = theta[idx] + step[idx, None, None] * q[idx]
            t_loss, t_grad = f(trial, probe[idx])
            ok = t_loss <= loss[idx] + ARMIJO * step[idx] * slope[idx]
            new_theta[idx[ok]], new_loss[idx[ok]] = trial[ok], t_loss[ok]
            new_grad[idx[ok]] = t_grad[ok]
            todo[idx[ok]] = False
            bad = idx[~ok]
            sub = torch.zeros_like(todo)
            sub[bad] = True
            _shrink(step, sub, t_loss[~ok], loss[bad], slope[bad])
        slot = it % m  # the new curvature pair, written in place
        s_new = torch.sub(new_theta, theta, out=s_hist[slot])
        y_new = torch.sub(new_grad, grad, out=y_hist[slot])
        sy, yy = dot(s_new, y_new), dot(y_new, y_new)
        keep = sy > 1e-10 * yy.clamp_min(1e-30).sqrt() * dot(s_new, s_new).sqrt()
        if not keep.all():
            s_new[~keep] = 0
            y_new[~keep] = 0
        rho[slot] = torch.where(keep, 1 / sy.clamp_min(1e-30), 0)
        gamma = torch.where(keep, sy / yy.clamp_min(1e-30), gamma)
        stalled = todo  # no decrease along the direction: stop there (as scipy does)
        theta, loss, grad = new_theta, new_loss, new_grad
        if stalled.any():
            grad = torch.where(stalled[:, None, None], 0, grad)  # leaves at the next check
    out[probe] = theta
    return out
