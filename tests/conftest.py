"""Where the tests' data comes from.

The default suite makes its own: before the first test, small stand-ins of the datasets it trains on
(``dapg/pen/expert-v0``, ``dapg/door/expert-v0``, ``D4RL/door/human-v2``; tests/simulated.py) are
simulated in the real environments into a temporary Minari root, and ``MINARI_DATASETS_PATH`` and
``METACONSTRAINT_HOME`` point at temporary folders for the whole session, so no test reads or writes
a dataset outside them, whatever the environment says.

Tests about the real datasets are marked ``@pytest.mark.real_data("ID", ...)``: they read the real
root (``MINARI_DATASETS_PATH`` as given when pytest started, else ``../shared/datasets`` beside the
checkout) and skip, saying how to get the data, where a dataset is absent.
``pytest -m real_data`` runs only them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simulated import PEN_HUMAN, STAND_INS, simulate_stand_in

CHECKOUT = Path(__file__).resolve().parents[1]
GIVEN_ROOT = os.environ.get("MINARI_DATASETS_PATH")
REAL_ROOT = Path(GIVEN_ROOT) if GIVEN_ROOT else CHECKOUT.parent / "shared" / "datasets"


def how_to_get(dataset_id: str) -> str:
    if dataset_id.startswith("dapg/"):
        source = "it is simulated from the DAPG expert policies, see ../shared/datasets/README.md on the project's machines"
    else:
        source = f"`minari download {dataset_id}` fetches it where the network allows"
    return (
        f"needs the real dataset {dataset_id}, which is not in {REAL_ROOT} "
        f"({'MINARI_DATASETS_PATH' if GIVEN_ROOT else 'MINARI_DATASETS_PATH is unset; the default is ../shared/datasets'}): "
        f"point MINARI_DATASETS_PATH at a Minari root that holds it ({source})"
    )


@pytest.fixture(scope="session", autouse=True)
def simulated_root(tmp_path_factory) -> Path:
    """The session's Minari root, holding the stand-ins of :data:`simulated.STAND_INS`."""
    root = tmp_path_factory.mktemp("minari")
    for dataset_id in STAND_INS:
        simulate_stand_in(root, dataset_id)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        patch.setenv("METACONSTRAINT_HOME", str(tmp_path_factory.mktemp("metaconstraint_home")))
        yield root


@pytest.fixture(autouse=True)
def real_data(request, monkeypatch):
    """For a test marked ``real_data(ids)``: the real root as ``MINARI_DATASETS_PATH``, or a skip."""
    marker = request.node.get_closest_marker("real_data")
    if marker is None:
        yield None
        return
    for dataset_id in marker.args:
        if not (REAL_ROOT.joinpath(*dataset_id.split("/")) / "data" / "metadata.json").is_file():
            pytest.skip(how_to_get(dataset_id))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(REAL_ROOT))
    yield REAL_ROOT


@pytest.fixture(scope="session")
def pen_human_root(tmp_path_factory) -> Path:
    """A Minari root of its own holding a small ``D4RL/pen/human-v2`` (5 episodes x 100 steps); the
    real one cannot be obtained on the project's machines."""
    return simulate_stand_in(tmp_path_factory.mktemp("pen_human_root"), "D4RL/pen/human-v2", PEN_HUMAN)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty Minari root, a fresh cache home, and no network at all (built-in datasets)."""
    import socket

    import minari

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(empty))
    monkeypatch.setenv("METACONSTRAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METACONSTRAINT_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("built-in datasets must not touch the network")

    monkeypatch.setattr(minari, "download_dataset", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path


@pytest.fixture
def float64():
    """torch's default dtype float64 for the test (equality checks to 1e-9 over many iterations)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
