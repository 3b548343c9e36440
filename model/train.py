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

__all__ = ["train", "evaluate", "augment_batch", "distillation_loss", "set_seed", "TrainState", "cosine_lr",
           "DEFAULT_LR", "DEFAULT_BATCH_SIZE"]

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


def augment_batch(xb, augment, gen, fill):
    """Random horizontal flips (``augment["flip"]``) and shifts by up to ``augment["shift"]`` pixels
    of a batch of images (N, C, H, W), drawn from ``gen``; pixels shifted in take ``fill``."""
    n, c, h, w = xb.shape
    if augment.get("flip"):
        flip = torch.rand(n, generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
    s = augment.get("shift", 0)
    if s:
        padded = torch.nn.functional.pad(xb, (s, s, s, s), value=fill)
        dy, dx = torch.randint(0, 2 * s + 1, (2, n), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        xb = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return xb


def distillation_loss(logits, labels, teacher_logits, weight, temperature):
    """Cross-entropy with the labels, mixed with the KL divergence from the teacher's softened
    outputs (Hinton et al.): ``(1 - weight) * CE + weight * T**2 * KL``."""
    ce = torch.nn.functional.cross_entropy(logits, labels)
    if teacher_logits is None or weight == 0:
        return ce
    t = temperature
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits / t, dim=1),
                                    torch.log_softmax(teacher_logits / t, dim=1), reduction="batchmean",
                                    log_target=True)
    return (1 - weight) * ce + weight * t * t * kl


def train(model, x_train, y_train, *, epochs=40, batch_size=DEFAULT_BATCH_SIZE, lr=DEFAULT_LR, seed=0,
          progress=True, state=None, on_epoch=None, augment=None, teacher=None, distill_weight=0.5,
          temperature=4.0):
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
    augment : dict, optional
        ``{"flip": bool, "shift": pixels}`` for image inputs (:func:`augment_batch`), drawn from the
        same generator as the batches, so that a resumed run still takes the same steps.
    teacher : callable, optional
        Logits of a trained network for a batch of the (augmented) inputs: the loss then mixes in
        distillation from it (:func:`distillation_loss` with ``distill_weight`` and ``temperature``).

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
    if augment and x.dim() != 4:
        raise LowbitError("augmentation flips and shifts images; these inputs are flat vectors",
                          "augment a cnn, or drop --augment")
    fill = float(x.min()) if augment else 0.0  # the background: 0 for pixels, -1 for a thermometer code
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
            xb = augment_batch(x[idx], augment, gen, fill) if augment else x[idx]
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(xb)
            loss = distillation_loss(model(xb), y[idx], soft if teacher is not None else None,
                                     distill_weight, temperature)
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
