"""The one rule for naming torch modules in recipes (`keep_float`) and NNCF's ignored scope (`--keep-float`)."""

from __future__ import annotations

from fnmatch import fnmatchcase


def module_name_matches(name: str, pattern: str) -> bool:
    """True when `pattern` names the module `name` or one of its parents: a dotted prefix ending at a name
    boundary, in which "*" stands for any run of characters (fnmatch, case-sensitive), e.g.
    "image_encoder.layers.*.local_conv" for every attention block's local convolution."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, f"{pattern}.*")
