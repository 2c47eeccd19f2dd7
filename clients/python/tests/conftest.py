import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CONFORMANCE = Path(os.environ.get("VAULTD_CONFORMANCE_DIR", REPO / "vault-proto" / "conformance"))


def load_vectors(name: str) -> list[dict]:
    with open(CONFORMANCE / name) as f:
        doc = json.load(f)
    assert doc["schema"] == "vaultd-conformance/1"
    return doc["vectors"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
