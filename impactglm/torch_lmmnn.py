"""A PyTorch network as f in ``MixedEffectsRegressor``: the LMMNN model, trained the exact way.

``TorchRegressor(module)`` wraps the user's ``torch.nn.Module`` (input: a float32 batch
(B, p); output (B,) or (B, 1)) as a scikit-learn regressor: ``fit(X, y, sample_weight)``
minimises the weighted mean squared error with Adam for ``epochs`` epochs on shuffled
mini-batches, continuing from the current weights when called again (``warm_start``);
``predict`` runs the network.  Inside ``MixedEffectsRegressor`` every round trains it on the
BLUP-adjusted target ``y - Z b_hat``, whose residual is ``s^2 V^-1 (y - f)``, the gradient of
LMMNN's marginal NLL in the values of f (docs/nonlinear.md); the variance components and
BLUPs come from the exact REML fit of the engine on all rows, not from mini-batches.

    >>> import torch
    >>> from impactglm.mixed_effects import MixedEffectsRegressor
    >>> from impactglm.torch_lmmnn import TorchRegressor
    >>> net = torch.nn.Sequential(torch.nn.Linear(10, 100), torch.nn.ReLU(),
    ...                           torch.nn.Linear(100, 1))
    >>> m = MixedEffectsRegressor(TorchRegressor(net, epochs=10), ["z"], cv=2)  # doctest: +SKIP

PyTorch is an optional dependency: ``pip install 'impactglm[torch]'``.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("impactglm.torch_lmmnn needs PyTorch: pip install 'impactglm[torch]'"
                      ) from exc
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .errors import DataError, ModelError

__all__ = ["TorchRegressor"]


class TorchRegressor(RegressorMixin, BaseEstimator):
    """scikit-learn regressor around a ``torch.nn.Module`` (module docstring).

    Parameters
    ----------
    module : torch.nn.Module
        The network; copied at the first ``fit`` (the caller's module is never trained).
    epochs : int
        Epochs per ``fit`` call (with ``warm_start``: per round of the alternation).
    batch_size, lr, weight_decay : Adam on mini-batches.
    warm_start : bool
        Continue from the weights of the previous ``fit`` (True) or restart from ``module``.
    random_state : seed of the batch shuffling (and of torch's generator at the first fit).
    """

    def __init__(self, module: Any = None, *, epochs: int = 20, batch_size: int = 256,
                 lr: float = 1e-3, weight_decay: float = 0.0, warm_start: bool = True,
                 random_state: int | None = 0):
        self.module = module
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warm_start = warm_start
        self.random_state = random_state

    def _tensor(self, X) -> "torch.Tensor":
        try:
            arr = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError("TorchRegressor needs numeric features") from None
        if arr.ndim != 2 or not np.all(np.isfinite(arr)):
            raise DataError("TorchRegressor needs a 2-d array of finite features")
        return torch.from_numpy(arr)

    def fit(self, X, y, sample_weight=None) -> "TorchRegressor":
        """Minimise sum_i w_i (net(x_i) - y_i)^2 / sum_i w_i for ``epochs`` epochs."""
        if not isinstance(self.module, torch.nn.Module):
            raise ModelError("TorchRegressor(module=...) needs a torch.nn.Module")
        Xt = self._tensor(X)
        yt = torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(-1))
        if len(yt) != len(Xt):
            raise DataError(f"X has {len(Xt)} rows but y has {len(yt)}")
        wt = None if sample_weight is None else \
            torch.from_numpy(np.asarray(sample_weight, dtype=np.float32).reshape(-1))
        if not (self.warm_start and hasattr(self, "module_")):
            if self.random_state is not None:
                torch.manual_seed(self.random_state)
            self.module_ = copy.deepcopy(self.module)
            self.optimizer_ = torch.optim.Adam(self.module_.parameters(), lr=self.lr,
                                               weight_decay=self.weight_decay)
            self.n_epochs_ = 0
        gen = torch.Generator().manual_seed((self.random_state or 0) + self.n_epochs_)
        net, opt = self.module_, self.optimizer_
        net.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(yt), generator=gen).split(self.batch_size):
                opt.zero_grad()
                err = (net(Xt[idx]).reshape(-1) - yt[idx]) ** 2
                loss = err.mean() if wt is None else (wt[idx] * err).sum() / wt[idx].sum()
                loss.backward()
                opt.step()
            self.n_epochs_ += 1
        self.n_features_in_ = Xt.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        """The network's output for each row."""
        check_is_fitted(self, "module_")
        self.module_.eval()
        with torch.no_grad():
            return self.module_(self._tensor(X)).reshape(-1).numpy().astype(np.float64)
