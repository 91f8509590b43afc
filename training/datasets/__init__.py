"""Training data: the challenge-format cases, the public training pool and the calibration sets."""
