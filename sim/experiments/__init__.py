"""Numerical experiments run through the golden model (``fp8train experiment ...``)."""

from pathlib import Path

__all__ = ["save_figure"]


def save_figure(fig, out, title: str | None = None) -> Path:
    """Write a matplotlib figure to ``out`` (directories made as needed) and close it; returns the path."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
