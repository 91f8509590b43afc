"""Clicks after the box: the CVPR 2025 interactive protocol and fine-tuning of the click path."""
