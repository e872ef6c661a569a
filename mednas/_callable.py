"""Subpackages that are also the API function of the same name (``mednas.search``, ``mednas.retrain``, ...).

Importing ``mednas.search`` binds the subpackage to the attribute ``mednas.search``, replacing the function
:func:`mednas.api.search` that ``mednas/__init__`` re-exports. Making the subpackage callable keeps both working:
``mednas.search(task)`` runs a search and ``from mednas.search import run_search`` still imports.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def make_callable(module_name: str, api_name: str) -> None:
    """Make the module ``module_name`` callable as ``mednas.api.<api_name>``."""
    module = sys.modules[module_name]
    api_function_doc = f"Call :func:`mednas.api.{api_name}`."

    class _CallablePackage(types.ModuleType):
        __doc__ = module.__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            from mednas import api

            return getattr(api, api_name)(*args, **kwargs)

    _CallablePackage.__call__.__doc__ = api_function_doc
    module.__class__ = _CallablePackage
