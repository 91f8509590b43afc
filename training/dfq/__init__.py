"""DFQ-SAM's data-free calibration: synthetic images, the grid study and its table."""
