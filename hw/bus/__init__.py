"""Bus interfaces (DESIGN.md §4): AXI signatures, the AXI4-Lite CSR slave and the AXI4 DMA masters (``Dma``
and its small stand-in ``SerialDma``)."""
