"""Measurements: agreement with the official pipeline and between models/ISAs, speed, bootstrap tables."""
