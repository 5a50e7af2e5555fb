"""The opt-in measurements taken while runs train (config `probes`): `Probes`
takes them on a copy of the pack, per run, and never changes what a run
computes. What each measures, with its citation: docs/claims.md#the-probes."""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from study.data import MNISTSplits
from study.models.lstm import ROWS, PackedLSTM
from study.models.mlp import ACTIVATIONS, PackedBatchNorm, PackedLinear, PackedMLP, ghost_chunks
from study.models.pack import evaluate
from study.spec import TrainSpec

STEP_KINDS = ("activations", "grad_norms", "ics", "landscape", "val_acc")
EPOCH_KINDS = ("train_acc",)
FINAL_KINDS = ("modes", "shift", "precise_bn")
# precise_bn: training images the statistics are recomputed from (Wu & Johnson 2021: 10^3-10^4 suffice),
# drawn as the first N of one permutation of the training split by a private generator of this seed.
PRECISE_SAMPLES = (100, 1_000, 10_000)
PRECISE_SEED = 0
_ACTIVATION_TYPES = tuple(ACTIVATIONS.values())
QUANTILES = (0.15, 0.50, 0.85)


def _num(v: float) -> Optional[float]:
    """A float for the record; non-finite values become None (strict JSON)."""
    v = float(v)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------- the math
# Each function takes a PackedMLP that it may change (running statistics,
# train/eval mode): pass a copy. Values are per run: tensors with a last
# axis of R.


def per_run_losses(net: PackedMLP, params: dict[str, torch.Tensor], xb: torch.Tensor,
                   yb: torch.Tensor) -> torch.Tensor:
    """Each run's mean cross-entropy (R,) on its batch, with these parameters."""
    r, b = xb.shape[:2]
    logits = functional_call(net, params, (xb,))
    return F.cross_entropy(logits.reshape(r * b, -1), yb.reshape(-1), reduction="none").view(r, b).mean(1)


def losses_and_grads(net: PackedMLP, params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
                     wrt: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-run losses (R,) and the gradients w.r.t. the named parameters.

    The gradient of the summed per-run losses: the runs are independent, so
    each run's slice is the gradient of its own loss.
    """
    p = dict(params)
    for n in wrt:
        p[n] = params[n].detach().requires_grad_(True)
    with torch.enable_grad():
        losses = per_run_losses(net, p, xb, yb)
        grads = torch.autograd.grad(losses.sum(), [p[n] for n in wrt])
    return losses.detach(), dict(zip(wrt, grads))


def _flat(t: torch.Tensor, r: int) -> torch.Tensor:
    # Every packed parameter is run-major: (R, ...) or, for BN, R blocks of F.
    return t.reshape(r, -1)


def _norm(t: torch.Tensor, r: int) -> torch.Tensor:
    return _flat(t, r).norm(dim=1)


def _total_norm(ts: Sequence[torch.Tensor], r: int) -> torch.Tensor:
    return torch.stack([_flat(t, r).pow(2).sum(1) for t in ts]).sum(0).sqrt()


def _module_index(param_name: str) -> int:
    return int(param_name.split(".")[1])  # "layers.<i>.weight"


def linear_indices(net: PackedMLP) -> list[int]:
    return [j for j, m in enumerate(net.layers) if isinstance(m, PackedLinear)]


@torch.no_grad()
def activation_inputs(net: PackedMLP, x: torch.Tensor, layer: int) -> torch.Tensor:
    """(R, n, width): input of hidden layer `layer`'s nonlinearity (after the
    norm, if any) for the images x (n, in), in train mode (batch statistics)."""
    net.train()
    h = x.unsqueeze(0).expand(net.runs, -1, -1)
    seen = 0
    for m in net.layers:
        if isinstance(m, _ACTIVATION_TYPES):
            if seen == layer:
                return h
            seen += 1
        h = m(h)
    raise ValueError(f"the model has no hidden layer {layer}")


def activation_percentiles(net: PackedMLP, x: torch.Tensor, layer: int, unit: int) -> torch.Tensor:
    """(3, R): the 15th, 50th, 85th percentiles (linear interpolation) of one unit."""
    values = activation_inputs(net, x, layer)[:, :, unit]
    return torch.quantile(values, torch.tensor(QUANTILES, dtype=values.dtype, device=values.device), dim=1)


def grad_norms(net: PackedMLP, grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """(L, R): L2 norm of each Linear weight's gradient, input layer first."""
    r = net.runs
    return torch.stack([_norm(grads[f"layers.{j}.weight"], r) for j in linear_indices(net)])


def internal_covariate_shift(net: PackedMLP, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                             xb: torch.Tensor, yb: torch.Tensor, lr: float
                             ) -> tuple[list[Optional[torch.Tensor]], list[Optional[torch.Tensor]]]:
    """Santurkar et al. 2018, Definition 2.1, per Linear layer: (distances, cosines).

    `grads` holds the gradient of every parameter at `params`. For layer i,
    G' is its weight's gradient after a plain SGD step (lr) of every
    parameter of the modules before it. Layer 0 has no earlier layers: None.
    """
    r = net.runs
    dist: list[Optional[torch.Tensor]] = [None]
    cos: list[Optional[torch.Tensor]] = [None]
    for j in linear_indices(net)[1:]:
        name = f"layers.{j}.weight"
        moved = {n: (w - lr * grads[n]) if _module_index(n) < j else w for n, w in params.items()}
        _, g2 = losses_and_grads(net, moved, xb, yb, [name])
        g, gp = _flat(grads[name], r), _flat(g2[name], r)
        dist.append((g - gp).norm(dim=1))
        cos.append((g * gp).sum(1) / (g.norm(dim=1) * gp.norm(dim=1)))
    return dist, cos


def landscape(net: PackedMLP, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
              xb: torch.Tensor, yb: torch.Tensor, lr: float, scales: Sequence[float]) -> dict[str, torch.Tensor]:
    """Santurkar et al. 2018, sec. 3.1: the loss and gradient along -grad.

    Returns per run: losses (S, R), loss_range, grad_change, beta_smoothness (R,).
    """
    r = net.runs
    names = list(params)
    g_norm = _total_norm([grads[n] for n in names], r)
    losses, changes, betas = [], [], []
    for s in scales:
        eta = float(s) * lr
        moved = {n: params[n] - eta * grads[n] for n in names}
        loss, g2 = losses_and_grads(net, moved, xb, yb, names)
        change = _total_norm([grads[n] - g2[n] for n in names], r)
        losses.append(loss)
        changes.append(change)
        betas.append(change / (eta * g_norm))
    losses_t = torch.stack(losses)
    return {"losses": losses_t, "loss_range": losses_t.max(0).values - losses_t.min(0).values,
            "grad_change": torch.stack(changes).max(0).values,
            "beta_smoothness": torch.stack(betas).max(0).values}


@torch.no_grad()
def train_mode_accuracy(net: PackedMLP, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(R,) accuracy in train mode: x fed in order in chunks of batch_size
    (a trailing chunk of one joins the chunk before), batch statistics."""
    net.train()
    correct = torch.zeros(net.runs, dtype=torch.long, device=x.device)
    for xc, yc in zip(ghost_chunks(x, batch_size, 0), ghost_chunks(y, batch_size, 0)):
        logits = net(xc.unsqueeze(0).expand(net.runs, -1, -1))
        correct += (logits.argmax(-1) == yc).sum(1)
    return correct.double() / len(x)


def shift_pixels(x: torch.Tensor, brightness: float, contrast: float, mean: float, std: float) -> torch.Tensor:
    """Normalized images -> pixels p in [0, 1] -> contrast * p + brightness -> normalized.

    `mean`, `std`: the data's own scaling (x = (p - mean) / std,
    `MNISTSplits.info["normalization"]`), so that a shift means the same
    pixels whatever `data.normalize` is.
    """
    raw = x * std + mean
    return (contrast * raw + brightness - mean) / std


@torch.no_grad()
def reestimate_running_stats(net: PackedMLP, x: torch.Tensor, chunk: int) -> bool:
    """Reset the BN running statistics and re-estimate them on x.

    A cumulative average (PyTorch's momentum=None: the k-th chunk has weight
    1/k) over one pass in train mode in chunks of `chunk` (a trailing chunk
    of one joins the one before), as `torch.optim.swa_utils.update_bn` does.
    Ghost BN is re-estimated like plain BN, over whole chunks. A BN-LSTM
    (`PackedLSTM`) is re-estimated per time step (`reestimate_step_statistics`).
    Returns False (nothing done) when the model has no running statistics.
    """
    if isinstance(net, PackedLSTM):
        return reestimate_step_statistics(net, x, chunk)
    bns = [m for m in net.layers if isinstance(m, PackedBatchNorm)]
    if not bns:
        return False
    for m in bns:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    net.train()
    for k, xc in enumerate(ghost_chunks(x, chunk, 0), start=1):
        for m in bns:
            m.momentum = 1.0 / k
        h = xc.unsqueeze(0).expand(net.runs, -1, -1)
        for m in net.layers:
            h = PackedBatchNorm.forward(m, h) if isinstance(m, PackedBatchNorm) else m(h)
    return True


# ------------------------------------------- recurrent nets: per-step statistics
# A BN-LSTM (study/models/lstm.py, model.norm=batch) keeps one row of running
# statistics per time step in each of its three norms (norm_x: W_x x_t,
# norm_h: W_h h_{t-1}, norm_c: c_t); batch_shared keeps one row for all steps.
STEP_NORMS = ("norm_x", "norm_h", "norm_c")


def step_norms(net: Any) -> list[tuple[str, Any]]:
    """A BN-LSTM pack's norms with running statistics, by name; [] for any other model."""
    if not isinstance(net, PackedLSTM) or net.norm not in ("batch", "batch_shared"):
        return []
    return [(name, getattr(net, name)) for name in STEP_NORMS]


def _row(norm: Any, t: int) -> int:
    """The running-statistics row that step t uses (as study.models.lstm._PackedNorm.forward)."""
    return 0 if norm.shared else min(t, norm.running_mean.shape[0] - 1)


@torch.no_grad()
def reestimate_step_statistics(net: PackedLSTM, x: torch.Tensor, chunk: int) -> bool:
    """Reset a BN-LSTM's running statistics and re-estimate them on x, per time step.

    One pass in train mode over x in chunks of `chunk` (a trailing chunk of
    one joins the one before); each running row becomes the cumulative
    average of the batch statistics (mean, unbiased variance) of the steps
    that use it: row t those of step t in every chunk (batch_shared's one row:
    of every step of every chunk), the k-th update weighted 1/k, as
    `reestimate_running_stats` does for the MLP's BN. The weights are not
    touched. Returns False (nothing done) for a model without running statistics.
    """
    norms = [m for _, m in step_norms(net)]
    if not norms:
        return False
    updates: dict[tuple[int, int], int] = {}

    def cumulative(m: Any, args: tuple[Any, ...]) -> None:  # before each call norm(x, t)
        key = (id(m), _row(m, int(args[1])))
        updates[key] = updates.get(key, 0) + 1
        m.momentum = 1.0 / updates[key]

    for m in norms:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    hooks = [m.register_forward_pre_hook(cumulative) for m in norms]
    try:
        net.train()
        for xc in ghost_chunks(x, chunk, 0):
            net(xc.unsqueeze(0).expand(net.runs, -1, -1))
    finally:
        for h in hooks:
            h.remove()
    return True


def step_variances(net: Any) -> Optional[list[dict[str, Any]]]:
    """Per run, the BN-LSTM's population variance estimates per time step (None for other models).

    For each norm (`STEP_NORMS`) and each running row (time step 0..T-1; one
    row for batch_shared), over that row's features: `min` and `median` of
    running_var, and `below_eps`, the fraction of features whose running_var
    is below the norm's eps (where eps, not the data, sets the scale an
    input is divided by at evaluation). `eps` is the norms' eps.
    """
    norms = step_norms(net)
    if not norms:
        return None
    out: list[dict[str, Any]] = [{"eps": float(norms[0][1].eps)} for _ in range(net.runs)]
    for name, m in norms:
        v = m.running_var.double()  # (rows, R, F)
        low = v.min(-1).values.T.tolist()  # (R, rows)
        mid = torch.quantile(v, 0.5, dim=-1).T.tolist()
        below = (v < m.eps).double().mean(-1).T.tolist()
        for k in range(net.runs):
            out[k][name] = {"min": [_num(a) for a in low[k]], "median": [_num(a) for a in mid[k]],
                            "below_eps": below[k]}
    return out


@torch.no_grad()
def step_z_rms(net: Any, x: torch.Tensor, chunk: int) -> Optional[list[dict[str, list[Optional[float]]]]]:
    """Per run, for each BN-LSTM norm and time step: the root mean square of
    its normalized input, (v - running_mean) / sqrt(running_var + eps), over
    the images x and the features, in eval mode (None for other models).

    In training a step's normalized input has an RMS of at most 1 (its batch
    statistics; about 0 where the batch variance is far below eps); at
    evaluation, where the population statistics do not describe an image's
    value (a mean off by d over a variance below eps), the RMS is d over
    sqrt(eps): the amplification that breaks the population statistics.
    """
    norms = step_norms(net)
    if not norms:
        return None
    steps = ROWS  # the time steps (batch_shared: one running row, 28 steps)
    sums = {name: torch.zeros(steps, net.runs, dtype=torch.float64, device=x.device) for name, _ in norms}
    count = {name: [0] * steps for name, _ in norms}

    def hook(name: str) -> Any:
        def record(m: Any, args: tuple[Any, ...]) -> None:
            v, t = args[0], int(args[1])
            row = _row(m, t)
            z = (v - m.running_mean[row][:, None, :]) / torch.sqrt(m.running_var[row][:, None, :] + m.eps)
            sums[name][t] += z.double().pow(2).mean((1, 2)) * v.shape[1]
            count[name][t] += v.shape[1]
        return record

    hooks = [m.register_forward_pre_hook(hook(name)) for name, m in norms]
    try:
        evaluate(net, x, torch.zeros(len(x), dtype=torch.long, device=x.device), chunk)
    finally:
        for h in hooks:
            h.remove()
    out: list[dict[str, list[Optional[float]]]] = [{} for _ in range(net.runs)]
    for name, _ in norms:
        rms = (sums[name] / torch.tensor([max(c, 1) for c in count[name]], dtype=torch.float64,
                                         device=x.device)[:, None]).sqrt().T.tolist()  # (R, T)
        for k in range(net.runs):
            out[k][name] = [_num(v) for v in rms[k]]
    return out


def precise_indices(n_train: int, n: int, seed: int = PRECISE_SEED) -> torch.Tensor:
    """The first min(n, n_train) indices of a fixed permutation of the training split.

    A private CPU generator: the run's generators and the global RNG are
    untouched, and the same images come out on every device.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g)[:min(n, n_train)]


@torch.no_grad()
def precise_bn_accuracies(net: PackedMLP, train_x: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          batch_size: int, samples: Sequence[int], eval_chunk: int
                          ) -> tuple[list[int], Optional[list[torch.Tensor]]]:
    """Wu & Johnson 2021's precise BN: per N in `samples`, (R,) test accuracies
    after the running statistics were recomputed from the first N images of
    `precise_indices`, in chunks of `batch_size` (`reestimate_running_stats`).

    Returns the sample counts used (capped at the training split's size) and
    the accuracies, or None for a model without running statistics. The
    weights are not touched; the running statistics are overwritten.
    """
    idx = precise_indices(len(train_x), max(samples)).to(train_x.device)
    used = [min(n, len(idx)) for n in samples]
    accs: list[torch.Tensor] = []
    for n in used:
        if not reestimate_running_stats(net, train_x.index_select(0, idx[:n]), batch_size):
            return used, None
        accs.append(evaluate(net, test_x, test_y, eval_chunk)[0])
    return used, accs


# ------------------------------------------------------------ the recorder


class Probes:
    """Takes the configured probes during `train_runs` and keeps them per run."""

    def __init__(self, spec: TrainSpec, data: MNISTSplits, runs: int, device: torch.device) -> None:
        p = spec.probes
        self.kinds = list(p.kinds)
        self.every, self.stop_at = p.every, p.stop_at
        self.reached = [False] * runs  # val_acc >= stop_at at some step probe
        self.stopped_at_step: Optional[int] = None
        self.data, self.runs, self.device = data, runs, device
        self.step_kinds = [k for k in STEP_KINDS if k in self.kinds]
        self.lr, self.batch_size, self.eval_chunk = spec.lr, spec.batch_size, spec.eval_batch_size
        self.layer, self.unit = p.layer, p.unit
        self.scales = list(p.landscape_scales)
        self.shift = (p.shift_brightness, p.shift_contrast)
        self.sample_x = data.val_x[:p.sample]
        self.train_n = p.train_subset
        self.seconds = 0.0
        self.series: list[list[dict[str, Any]]] = [[] for _ in range(runs)]

    @classmethod
    def create(cls, spec: TrainSpec, data: MNISTSplits, runs: int, device: torch.device) -> Optional["Probes"]:
        """None when no probe is configured (the run then takes no probe time)."""
        return None if spec.probes is None else cls(spec, data, runs, device)

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step_due(self, step: int) -> bool:
        return bool(self.step_kinds) and step % self.every == 0

    def on_step(self, model: PackedMLP, xb: torch.Tensor, yb: torch.Tensor, step: int) -> float:
        """The step probes before the update of `step` (updates done so far),
        on its minibatch xb (R, b, in), yb (R * b,); returns the seconds taken."""
        t0 = self._clock()
        net = copy.deepcopy(model)
        r = self.runs
        out: dict[str, list[Any]] = {}
        if "val_acc" in self.step_kinds:
            # First: the train-mode forwards below overwrite the copy's running statistics.
            acc, _ = evaluate(net, self.data.val_x, self.data.val_y, self.eval_chunk)
            accs = acc.tolist()
            out["val_acc"] = [_num(v) for v in accs]
            if self.stop_at is not None:
                self.reached = [r or v >= self.stop_at for r, v in zip(self.reached, accs)]
        net.train()
        if "activations" in self.step_kinds:
            q = activation_percentiles(net, self.sample_x, self.layer, self.unit).tolist()
            out["activations"] = [{"layer": self.layer, "unit": self.unit, "p15": _num(q[0][k]),
                                   "p50": _num(q[1][k]), "p85": _num(q[2][k])} for k in range(r)]
        if {"grad_norms", "ics", "landscape"} & set(self.step_kinds):
            params = {n: p.detach() for n, p in net.named_parameters()}
            _, grads = losses_and_grads(net, params, xb, yb, list(params))
            if "grad_norms" in self.step_kinds:
                norms = grad_norms(net, grads).T.tolist()  # (R, L)
                out["grad_norms"] = [[_num(v) for v in row] for row in norms]
            if "ics" in self.step_kinds:
                dist, cos = internal_covariate_shift(net, params, grads, xb, yb, self.lr)
                out["ics"] = [{"distance": [None if d is None else _num(d[k]) for d in dist],
                               "cosine": [None if c is None else _num(c[k]) for c in cos]} for k in range(r)]
            if "landscape" in self.step_kinds:
                ls = landscape(net, params, grads, xb, yb, self.lr, self.scales)
                losses = ls["losses"].T.tolist()  # (R, S)
                out["landscape"] = [{"scales": list(self.scales), "losses": [_num(v) for v in losses[k]],
                                     "loss_range": _num(ls["loss_range"][k]),
                                     "grad_change": _num(ls["grad_change"][k]),
                                     "beta_smoothness": _num(ls["beta_smoothness"][k])} for k in range(r)]
        for k in range(r):
            entry: dict[str, Any] = {"step": int(step)}
            for kind in self.step_kinds:
                entry[kind] = out[kind][k]
            self.series[k].append(entry)
        spent = self._clock() - t0
        self.seconds += spent
        return spent

    def target_reached(self, step: int, alive: Sequence[bool]) -> bool:
        """True (and `step` kept as the stop) when `stop_at` is set and every
        live run has reached it at a step probe: training stops before this
        step's update."""
        if self.stop_at is None or not any(alive) or not all(r for r, a in zip(self.reached, alive) if a):
            return False
        self.stopped_at_step = step
        return True

    def on_epoch(self, model: PackedMLP) -> Optional[list[dict[str, Any]]]:
        """After an epoch's evaluation: the keys to add to each run's history entry."""
        if "train_acc" not in self.kinds:
            return None
        t0 = self._clock()
        n = self.train_n
        acc, loss = evaluate(copy.deepcopy(model), self.data.train_x[:n], self.data.train_y[:n],
                              self.eval_chunk)
        extra = [{"train_acc": _num(a), "train_eval_loss": _num(l)} for a, l in zip(acc.tolist(), loss.tolist())]
        self.seconds += self._clock() - t0
        return extra

    def final(self, model: PackedMLP) -> list[dict[str, Any]]:
        """The final probes of every run of the pack."""
        r, d, chunk = self.runs, self.data, self.eval_chunk
        out: list[dict[str, Any]] = [{} for _ in range(r)]
        if "modes" in self.kinds:
            net = copy.deepcopy(model)
            eval_acc, _ = evaluate(net, d.test_x, d.test_y, chunk)
            train_acc = train_mode_accuracy(net, d.test_x, d.test_y, self.batch_size)
            for k in range(r):
                out[k]["modes"] = {"eval_mode_acc": _num(eval_acc[k]), "train_mode_acc": _num(train_acc[k]),
                                   "batch_size": self.batch_size}
        if "shift" in self.kinds:
            b, c = self.shift
            net = copy.deepcopy(model)
            mean, std = d.info["normalization"]
            shifted = shift_pixels(d.test_x, b, c, mean, std)
            clean, _ = evaluate(net, d.test_x, d.test_y, chunk)
            running, _ = evaluate(net, shifted, d.test_y, chunk)
            recomputed = None
            if reestimate_running_stats(net, shifted, chunk):
                recomputed, _ = evaluate(net, shifted, d.test_y, chunk)
            for k in range(r):
                out[k]["shift"] = {"brightness": b, "contrast": c, "clean_acc": _num(clean[k]),
                                   "running_acc": _num(running[k]),
                                   "recomputed_acc": None if recomputed is None else _num(recomputed[k])}
        if "precise_bn" in self.kinds:
            net = copy.deepcopy(model)
            # First the EMA statistics as trained, then train mode (batch statistics), then the recomputed ones.
            ema_vars, ema_z = step_variances(net), step_z_rms(net, d.test_x, chunk)
            ema, _ = evaluate(net, d.test_x, d.test_y, chunk)
            batch = train_mode_accuracy(net, d.test_x, d.test_y, self.batch_size)
            used, precise = precise_bn_accuracies(net, d.train_x, d.test_x, d.test_y, self.batch_size,
                                                  PRECISE_SAMPLES, chunk)
            precise_vars = step_variances(net)  # recomputed from the largest sample
            precise_z = step_z_rms(net, d.test_x, chunk)
            for k in range(r):
                out[k]["precise_bn"] = {
                    "batch_size": self.batch_size, "samples": used, "sample_seed": PRECISE_SEED,
                    "ema_acc": _num(ema[k]), "train_mode_acc": _num(batch[k]),
                    "precise_acc": None if precise is None else [_num(a[k]) for a in precise]}
                if ema_vars is not None:  # a BN-LSTM: its per-step statistics, as trained and recomputed
                    out[k]["precise_bn"]["step_variances"] = {"ema": ema_vars[k], "precise": precise_vars[k]}
                    out[k]["precise_bn"]["step_z_rms"] = {"ema": ema_z[k], "precise": precise_z[k]}
        return out

    def finish(self, model: PackedMLP, outcomes: Sequence[Any], alive: Sequence[bool]) -> None:
        """Final probes for the runs still alive; each outcome gets its `probes`.

        A diverged run keeps the series entries of the steps before its
        divergence (steps < diverged_at_step) and an empty `final`.
        """
        t0 = self._clock()
        finals: list[dict[str, Any]] = [{} for _ in range(self.runs)]
        if any(alive) and set(FINAL_KINDS) & set(self.kinds):
            finals = self.final(model)
        self.seconds += self._clock() - t0
        for k, out in enumerate(outcomes):
            series = self.series[k]
            if out.diverged_at_step is not None:
                series = [e for e in series if e["step"] < out.diverged_at_step]
            out.probes = {"kinds": list(self.kinds), "every": self.every, "stop_at": self.stop_at,
                          "stopped_at_step": self.stopped_at_step, "seconds": self.seconds,
                          "series": series, "final": finals[k] if alive[k] else {}}
