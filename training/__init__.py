import qmedsam  # noqa: F401  first, so that openvino's telemetry stays off (see qmedsam/__init__.py)
