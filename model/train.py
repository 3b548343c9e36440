"""Training loop: fixed seed, progress bar, latent-weight clipping after every step, resumable.

Everything that decides the next epoch is in a :class:`TrainState`: the epoch count, the optimizer's
moments and the state of the generator that shuffles the batches. The learning rate is a closed
form of the epoch (cosine from ``lr`` to 0 over the planned epochs), so it needs no state of its
own. A run stopped after epoch k and resumed from that state therefore takes exactly the same
steps as a run that never stopped.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from lowbit.core.errors import LowbitError

__all__ = ["train", "evaluate", "set_seed", "TrainState", "cosine_lr", "DEFAULT_LR",
           "DEFAULT_BATCH_SIZE"]

DEFAULT_LR = 0.01
DEFAULT_BATCH_SIZE = 64


def set_seed(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def cosine_lr(lr, epoch, epochs):
    """Learning rate of epoch ``epoch`` (0-based) of ``epochs``: cosine from ``lr`` towards 0."""
    return lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


@dataclass
class TrainState:
    """What a resumed run needs: epochs done, per-epoch losses, optimizer and shuffling state.

    ``to_dict``/``from_dict`` convert to plain tensors, lists and numbers, which a checkpoint
    stores and ``torch.load(weights_only=True)`` reads back.
    """

    epoch: int = 0
    losses: list = field(default_factory=list)
    optimizer: dict = None
    generator: torch.Tensor = None

    def to_dict(self):
        return {"epoch": self.epoch, "losses": list(self.losses), "optimizer": self.optimizer,
                "generator": self.generator}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(int(d["epoch"]), [float(v) for v in d["losses"]], d["optimizer"], d["generator"])
        except (KeyError, TypeError, ValueError) as e:
            raise LowbitError(f"the checkpoint's resume state is damaged ({type(e).__name__}: {e})",
                              "train again without --resume") from None


def train(model, x_train, y_train, *, epochs=40, batch_size=DEFAULT_BATCH_SIZE, lr=DEFAULT_LR, seed=0,
          progress=True, state=None, on_epoch=None):
    """Train ``model`` on encoded inputs with Adam and cross-entropy.

    Parameters
    ----------
    model : nn.Module
        With ``clip_latent()``, called after every optimizer step.
    x_train, y_train : array-like
        Encoded inputs (the model's input shape) and integer labels.
    epochs : int
        Total planned epochs; the cosine schedule spans them.
    state : TrainState, optional
        Resume from this state (``state.epoch`` epochs already done); ``model`` must hold the
        weights of that same moment.
    on_epoch : callable, optional
        Called with the :class:`TrainState` after every epoch (to write a checkpoint).

    Returns
    -------
    TrainState
        After the last epoch; ``losses`` holds the mean training loss of every epoch so far.
        The model is left in eval mode.

    The progress bar shows on a terminal and stays quiet in logs.
    """
    state = state or TrainState()
    if state.epoch > epochs:
        raise LowbitError(f"the checkpoint has already trained {state.epoch} epochs, more than "
                          f"--epochs {epochs}", f"pass --epochs {state.epoch + 1} or more to go on")
    if state.epoch == 0:
        set_seed(seed)
    x = torch.as_tensor(x_train, dtype=torch.float32)
    y = torch.as_tensor(y_train, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    if state.generator is not None:
        gen.set_state(state.generator)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if state.optimizer is not None:
        try:
            opt.load_state_dict(state.optimizer)
        except (ValueError, KeyError, RuntimeError) as e:
            raise LowbitError(f"the checkpoint's optimizer state does not fit the model ({e})",
                              "train again without --resume") from None
    bar = tqdm(range(state.epoch, epochs), desc="train", unit="epoch", initial=state.epoch, total=epochs,
               disable=None if progress else True, leave=False)
    for epoch in bar:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(lr, epoch, epochs)
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.clip_latent()
            total += loss.item() * len(idx)
        if not math.isfinite(total):
            raise LowbitError(f"training diverged in epoch {epoch + 1} (loss {total})",
                              "lower the learning rate or change the seed")
        state = TrainState(epoch + 1, [*state.losses, total / len(x)], opt.state_dict(), gen.get_state())
        bar.set_postfix(loss=f"{state.losses[-1]:.3f}")
        if on_epoch is not None:
            model.eval()
            on_epoch(state)
    model.eval()
    return state


@torch.no_grad()
def evaluate(model, x, y, batch_size=1000):
    """Return (accuracy, predictions) of ``model`` in eval mode."""
    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    pred = torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])
    pred = pred.numpy()
    return float((pred == np.asarray(y)).mean()), pred
