"""v0.1's stop rule (``TrainConfig(stop="plateau")``): learning-rate decay on ELBO plateaus, then stop."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PlateauSchedule:
    """Windowed plateau detection on the ELBO trace.

    Every ``window`` steps the mean ELBO of the last window is compared with the previous
    window's. The fit has plateaued when the gain is below ``max(tol, 2·se)`` nats, where ``se``
    is the standard error of the difference of the two window means (so noisy mini-batch
    estimates do not stall the stop). At a plateau the learning rate is divided by 10 until
    ``decays`` plateaus have been passed; the next plateau means converged.

    lr : float
        Current learning rate.
    """

    lr: float
    window: int = 100
    tol: float = 0.5
    decays: int = 2
    decays_done: int = 0
    events: list[dict[str, float]] = field(default_factory=list)

    def update(self, step: int, elbo: np.ndarray) -> str:
        """Call after each step with the ELBO trace so far; returns "continue", "decay" or "converged"."""
        n = step + 1
        if n < 2 * self.window or n % self.window:
            return "continue"
        cur = elbo[n - self.window : n]
        prev = elbo[n - 2 * self.window : n - self.window]
        gain = float(cur.mean() - prev.mean())
        se = math.sqrt(float(cur.var() + prev.var()) / self.window)
        if not gain < max(self.tol, 2.0 * se):
            return "continue"
        if self.decays_done < self.decays:
            self.decays_done += 1
            self.lr *= 0.1
            self.events.append({"step": float(n), "lr": self.lr, "gain": gain, "se": se})
            return "decay"
        self.events.append({"step": float(n), "lr": self.lr, "gain": gain, "se": se})
        return "converged"
