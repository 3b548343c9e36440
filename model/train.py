"""Training loop: fixed seed, progress bar, latent-weight clipping after every step."""

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["train", "evaluate", "set_seed"]


def set_seed(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def train(model, x_train, y_train, *, epochs=40, batch_size=64, lr=0.01, seed=0, progress=True):
    """Train ``model`` on encoded inputs with Adam and cross-entropy.

    The progress bar shows on a terminal and stays quiet in logs.

    Returns the list of per-epoch mean training losses.
    """
    set_seed(seed)
    x = torch.as_tensor(x_train, dtype=torch.float32)
    y = torch.as_tensor(y_train, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    losses = []
    bar = tqdm(range(epochs), desc="train", unit="epoch", disable=None if progress else True, leave=False)
    for _ in bar:
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
        sched.step()
        losses.append(total / len(x))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model, x, y):
    """Return (accuracy, predictions) of ``model`` in eval mode."""
    model.eval()
    logits = model(torch.as_tensor(x, dtype=torch.float32))
    pred = logits.argmax(dim=1).numpy()
    return float((pred == np.asarray(y)).mean()), pred
