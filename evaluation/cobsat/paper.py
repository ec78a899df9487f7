"""The paper's CoBSAT accuracies (arXiv 2502.10458 v1, Tables 1 and 2; LLaVA-1.5 judge), per task id."""

from __future__ import annotations

from .protocol import PAPER_ORDER


def _by_task(values: tuple[float, ...]) -> dict[int, float]:
    """Values listed in the tables' column order (Color-I, Background-I, ..., Texture-II) keyed by task id."""
    return dict(zip(PAPER_ORDER, values, strict=True))


PAPER_ROW = "ThinkDiff-LVLM (paper)"
PAPER: dict[int, dict[str, dict[int, float]]] = {
    2: {
        "SEED-LLaMA": _by_task((0.680, 0.348, 0.203, 0.182, 0.196, 0.287, 0.467, 0.297, 0.261, 0.163)),
        "Emu": _by_task((0.065, 0.051, 0.057, 0.052, 0.078, 0.062, 0.109, 0.081, 0.092, 0.074)),
        "GILL": _by_task((0.171, 0.054, 0.069, 0.063, 0.074, 0.010, 0.043, 0.024, 0.022, 0.040)),
        PAPER_ROW: _by_task((0.622, 0.349, 0.237, 0.459, 0.290, 0.511, 0.534, 0.340, 0.534, 0.292)),
    },
    4: {
        "SEED-LLaMA": _by_task((0.482, 0.211, 0.141, 0.053, 0.122, 0.252, 0.076, 0.268, 0.207, 0.105)),
        "Emu": _by_task((0.063, 0.018, 0.045, 0.048, 0.097, 0.037, 0.122, 0.109, 0.077, 0.088)),
        "GILL": _by_task((0.106, 0.044, 0.041, 0.073, 0.087, 0.022, 0.059, 0.044, 0.032, 0.067)),
        PAPER_ROW: _by_task((0.638, 0.362, 0.254, 0.434, 0.317, 0.610, 0.590, 0.432, 0.664, 0.332)),
    },
}
