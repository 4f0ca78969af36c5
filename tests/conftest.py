"""Shared fixtures for the top-level test modules (``test_cli.py``, ``test_cli_fuzz.py``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole module (opt in with ``usefixtures``), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
