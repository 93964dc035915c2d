"""``tent``: entropy minimisation of the normalisation only (after TENT, Wang et al. 2021).

The head stays frozen. What moves is the normalisation of its input: a per-layer,
per-dimension shift ``beta`` and log-scale ``gamma`` (``x' = (x - beta) * exp(-gamma)``, x the
features as the estimator's normaliser leaves them), starting at the identity, i.e. at the
training statistics. A fixed small budget of full-batch Adam steps (``steps``, ``lr``)
minimises the mean prediction entropy on the unlabelled batch; ``diversity`` (default 1)
subtracts the entropy of the batch's mean prediction (the information-maximisation term of
SHOT, Liang et al. 2020), so the batch cannot collapse onto one class. ``strength`` a in
[0, 1] scales the learnt shift and log-scale (0: plain). Works for torch heads (the
``torch`` estimator's model) and for linear classical heads (logistic regression).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from polyemo.train.adaptation import ADAPTERS, Adapter
from polyemo.train.data import DataError


def logit_function(estimator) -> Callable:
    """A differentiable map from prepared pooled features (N, L, D) to emotion logits."""
    import torch

    model = getattr(estimator, "model", None)
    if model is not None and hasattr(model, "head"):
        model.eval()
        if hasattr(estimator, "domains"):  # corpus-adversarial: the input carries a corpus channel (-1: none)
            return lambda x: model(torch.cat([x, -torch.ones(*x.shape[:2], 1, dtype=x.dtype)], 2))["emotion"]
        return lambda x: model(x)["emotion"]
    head = getattr(estimator, "head", None)
    pipeline = getattr(head, "pipeline", None)
    if pipeline is not None and hasattr(pipeline[-1], "coef_"):
        scale, classify = pipeline[0], pipeline[-1]
        mean = torch.as_tensor(getattr(scale, "mean_", 0.0), dtype=torch.float64)
        std = torch.as_tensor(getattr(scale, "scale_", 1.0), dtype=torch.float64)
        coef = torch.as_tensor(classify.coef_, dtype=torch.float64)
        intercept = torch.as_tensor(classify.intercept_, dtype=torch.float64)
        mode = estimator.effective_head_config().layer_mode()
        columns = np.asarray(classify.classes_, dtype=np.int64)
        k = estimator.num_classes

        def classical(x):
            if mode == "concat":
                flat = x.reshape(len(x), -1)
            elif mode == "mean":
                flat = x.mean(1)
            elif isinstance(mode, int) and not isinstance(mode, bool):
                flat = x[:, mode]
            elif x.shape[1] == 1:
                flat = x[:, 0]
            else:
                raise DataError(f"tent: layer mode {mode!r} of a classical head is not supported")
            z = ((flat.double() - mean) / std) @ coef.T + intercept
            if z.shape[1] == 1:  # binary: one score vector
                z = torch.cat([torch.zeros_like(z), z], 1)
            full = torch.full((len(x), k), -1e9, dtype=z.dtype)
            full[:, torch.as_tensor(columns)] = z
            return full

        return classical
    raise DataError(f"tent adapts torch heads and linear classical heads; {type(estimator).__name__} "
                    f"with head {estimator.head_config.name!r} has neither")


def _entropy(p, dim=-1):
    import torch

    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim)


@ADAPTERS.register("tent")
class Tent(Adapter):
    name = "tent"
    description = "entropy minimisation of the head's input normalisation on the unlabelled batch (TENT-style)"

    def __init__(self, strength: float = 1.0, steps: int = 10, lr: float = 0.05, diversity: float = 1.0) -> None:
        super().__init__(strength)
        if steps < 1 or lr <= 0 or diversity < 0:
            raise ValueError(f"tent: need steps >= 1, lr > 0, diversity >= 0; got {steps}, {lr}, {diversity}")
        self.steps, self.lr, self.diversity = int(steps), float(lr), float(diversity)
        #: learnt (L, D) shift and log-scale of the latest batch
        self.shift: np.ndarray | None = None
        self.log_scale: np.ndarray | None = None
        #: (L, D) spread of the TRAINING features as the head sees them: the shift moves in these
        #: units, so a step means the same on a head whose inputs vary by 0.05 per dimension
        #: (per-utterance standardisation) as on one whose inputs have unit variance (None: 1)
        self.train_std: np.ndarray | None = None

    def fit(self, estimator, train) -> Tent:
        # starts from the training statistics the estimator already holds; learns their spread
        self.train_std = np.asarray(estimator._prepare(train).features, dtype=np.float64).std(0)
        return self

    def _units(self, x):
        import torch

        if self.train_std is None:
            return torch.ones(x.shape[1:])
        return torch.as_tensor(self.train_std, dtype=torch.float32).clamp_min(1e-6)

    def adapt(self, estimator, batch, probabilities: np.ndarray) -> np.ndarray:
        import torch

        if len(batch) == 0 or self.strength == 0.0:
            return probabilities
        prepared = estimator._prepare(batch)
        if prepared.is_frames:
            raise DataError("tent adapts pooled features; frame features are not supported")
        logits = logit_function(estimator)
        x = torch.as_tensor(np.asarray(prepared.features, dtype=np.float32))
        units = self._units(x)
        start_beta, start_gamma = self._start(x)
        beta = (start_beta / units).clone().requires_grad_(True)  # the shift in units of the training spread
        gamma = start_gamma.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([beta, gamma], lr=self.lr)
        dtype = torch.float64 if getattr(estimator, "model", None) is None else torch.float32
        frozen = [q for q in getattr(getattr(estimator, "model", None), "parameters", lambda: [])() if q.requires_grad]
        threads = torch.get_num_threads()
        try:
            for q in frozen:  # the head stays as trained; no gradients pile up in it
                q.requires_grad_(False)
            torch.set_num_threads(estimator.train_config.num_threads or threads)
            out = self._steps(logits, x, beta, gamma, optimiser, dtype, units)
        finally:
            for q in frozen:
                q.requires_grad_(True)
            torch.set_num_threads(threads)
        self.shift, self.log_scale = (beta * units).detach().numpy(), gamma.detach().numpy()
        return out

    def _start(self, x):
        """Shift (in feature units) and log-scale the steps start from: the identity (the
        training statistics)."""
        import torch

        return torch.zeros(x.shape[1:]), torch.zeros(x.shape[1:])

    def _steps(self, logits, x, beta, gamma, optimiser, dtype, units) -> np.ndarray:
        import torch

        for _ in range(self.steps):
            p = torch.softmax(logits(((x - beta * units) * torch.exp(-gamma)).to(dtype)), -1)
            loss = _entropy(p).mean() - self.diversity * _entropy(p.mean(0))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            a = self.strength
            adapted = (x - a * beta * units) * torch.exp(-a * gamma)
            return torch.softmax(logits(adapted.to(dtype)), -1).double().numpy()

    def params(self) -> dict:
        return {"strength": self.strength, "steps": self.steps, "lr": self.lr, "diversity": self.diversity}
