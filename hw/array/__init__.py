"""The systolic array layer: processing elements and the output-stationary grid (DESIGN.md section 3)."""
