"""The scripts in devtools/ (no .py suffix), imported as modules."""

import importlib.machinery
import importlib.util
import os

DEVTOOLS = os.path.join(os.path.dirname(__file__), '..', '..', 'devtools')


def load(name):
    loader = importlib.machinery.SourceFileLoader(
        name, os.path.join(DEVTOOLS, name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
