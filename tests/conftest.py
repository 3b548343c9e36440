import signal

import pytest
import torch

# A test worker process (pytest -n) ignores SIGINT, and every lowbit a test starts would inherit
# that: the tests that stop a run with Ctrl-C would find it running to the end.
signal.signal(signal.SIGINT, signal.default_int_handler)

# The suite's models are tiny: one thread is as fast, and it cannot stall spinning against a
# Verilator or Yosys process that holds the other core.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory):
    """The default binary MLP trained once on digits (64-64, 30 epochs, seed 0), shared by the suite."""
    from lowbit.flow import train_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    metrics = train_checkpoint(path, progress=False)
    return path, metrics


@pytest.fixture(scope="session")
def digits_graph(digits_checkpoint):
    from lowbit.flow import export_checkpoint

    graph, check = export_checkpoint(digits_checkpoint[0])
    return graph, check
