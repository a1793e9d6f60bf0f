"""Registries of plug-in classes by name, as "module:attribute.path" strings resolved only when chosen, so that
choosing one backend never imports another's runtime."""
from __future__ import annotations

import importlib


def load_target(target: str):
    """"package.module:Class.factory" -> that object (imports the module)."""
    module_name, _, attribute_path = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attribute_path.split("."):
        obj = getattr(obj, part)
    return obj
