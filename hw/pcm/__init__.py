"""PCM conductance-array emulator (DESIGN.md §6): the tile and its per-device datapaths."""

from .tile import PcmTileUnit

__all__ = ["PcmTileUnit"]
