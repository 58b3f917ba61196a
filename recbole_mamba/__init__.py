"""recbole-mamba: Mamba-family recommenders as ordinary RecBole models.

``import recbole_mamba`` registers Mamba4Rec and BiMamba4Rec with RecBole, so that
RecBole's own ``run_recbole``, ``Config``, ``load_data_and_model`` and
``objective_function`` find them by name, and applies the few compatibility fixes
RecBole 1.2.1 needs on today's numpy/torch (see :mod:`recbole_mamba.compat`).
"""
from recbole_mamba import compat as _compat
from recbole_mamba import registry as _registry
from recbole_mamba.errors import RecboleMambaError, UnknownModelError
from recbole_mamba.registry import PLUGIN_MODELS, get_model

__version__ = "0.1.0"

_compat.apply()
_registry.register()

__all__ = ["PLUGIN_MODELS", "RecboleMambaError", "UnknownModelError", "get_model", "__version__"]
