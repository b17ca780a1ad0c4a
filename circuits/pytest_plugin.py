"""pytest plugin: the `induction_heads` fixture and two ini options.

Registered through the `pytest11` entry point of the package, so it is active wherever
interp-workbench is installed. In a project's `pytest.ini` / `pyproject.toml`:

    [tool.pytest.ini_options]
    induction_min_score = "0.4"
    induction_min_ablation = "0.5"

and in a test:

    def test_heads(induction_heads, my_model):
        assert "L1H0" in induction_heads(my_model)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from workbench.models import Model


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("induction_min_score", "induction score an induction head needs",
                  default="0.4")
    parser.addini("induction_min_ablation",
                  "repeated-half loss increase (nats) when an induction head is ablated",
                  default="0.5")


@pytest.fixture
def induction_heads(pytestconfig: pytest.Config) -> Callable[..., list[str]]:
    """`induction_heads(model, **overrides)`: `circuits.testing.assert_induction_heads` with the
    ini thresholds as defaults; fails the test with the table of head scores."""
    from circuits.testing import assert_induction_heads

    defaults = {"min_score": float(pytestconfig.getini("induction_min_score")),
                "min_ablation": float(pytestconfig.getini("induction_min_ablation"))}

    def check(model: Model, **overrides: Any) -> list[str]:
        return assert_induction_heads(model, **{**defaults, **overrides})

    return check
