"""Board tops, on-chip host memory, synthesis and board builds (DESIGN.md §1, issue 7).

* :mod:`.tops`: iCEBreaker and ULX3S tops (clock, reset, pins) around :mod:`.system`'s accelerator,
  on-chip host memory (:mod:`.memory`) and the host bridge attachment point.
* :mod:`.build`, :mod:`.flash`: ``fp8train build BOARD`` / ``fp8train flash BOARD``.
* :mod:`.synth`: out-of-context synthesis and place-and-route for ``fp8train report``.
"""
