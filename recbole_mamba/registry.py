"""The one place where recbole-mamba's models meet RecBole's lookups.

RecBole finds a model by importing ``recbole.model.<kind>.<name.lower()>``; plugin
models live elsewhere.  :func:`register` makes RecBole's ``get_model`` (and the
copies of it that ``Config`` and the quick start imported by name) try this
package's models first and fall back to RecBole's, and makes ``Config`` read each
plugin model's default YAML (``recbole_mamba/props/model/<Model>.yaml``) and this
package's dataset YAMLs (``recbole_mamba/props/dataset/<dataset>.yaml``).
"""
import importlib
import os

import yaml

from recbole_mamba.errors import UnknownModelError

PROPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "props")

# model name -> module that defines it (imported on first use)
PLUGIN_MODELS = {
    "Mamba4Rec": "recbole_mamba.model.mamba4rec",
    "BiMamba4Rec": "recbole_mamba.model.bimamba4rec",
    "GRU4Rec": "recbole_mamba.model.gru4rec",
    "MDAF": "recbole_mamba.model.mdaf",
    "DCNv3": "recbole_mamba.model.dcnv3",
}

# RecBole's quick-start YAMLs applied after the model YAML, by model type
_TYPE_DEFAULTS = {
    "SEQUENTIAL": ("sequential.yaml",),
    "CONTEXT": ("context-aware.yaml", "context-aware_ml-100k.yaml"),
}

_recbole_get_model = None
_recbole_get_trainer = None


def get_model(model_name):
    """Model class for ``model_name``: recbole-mamba's first, then RecBole's."""
    module_path = PLUGIN_MODELS.get(model_name)
    if module_path is not None:
        return getattr(importlib.import_module(module_path), model_name)
    if model_name.lower() not in _recbole_model_files():
        # checked on file names: RecBole's own lookup imports exlib_recommender on a
        # miss, which dies on a missing lightgbm instead of naming the typo
        raise UnknownModelError(
            f"model {model_name!r} is neither a recbole-mamba model "
            f"({', '.join(PLUGIN_MODELS)}) nor a RecBole model; check the spelling "
            "(names are case-sensitive, e.g. --model=BiMamba4Rec)"
        )
    try:
        return _recbole_get_model(model_name)
    except ImportError as error:
        raise UnknownModelError(
            f"RecBole's model {model_name!r} needs a package that is not installed "
            f"({error.name or error}); pip install it first"
        ) from None


def _recbole_model_files():
    """Lower-case module names of RecBole's models, read from its package folders."""
    import recbole.model

    root = os.path.dirname(recbole.model.__file__)
    names = set()
    for kind in ("general_recommender", "context_aware_recommender", "sequential_recommender",
                 "knowledge_aware_recommender", "exlib_recommender"):
        folder = os.path.join(root, kind)
        if os.path.isdir(folder):
            names.update(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py")
    return names


def get_trainer(model_type, model_name):
    """Trainer class: a plugin model's own ``trainer_class`` if it names one, else RecBole's."""
    if model_name in PLUGIN_MODELS:
        trainer_class = getattr(get_model(model_name), "trainer_class", None)
        if trainer_class is not None:
            return trainer_class
    return _recbole_get_trainer(model_type, model_name)


def props_file(kind, name):
    """Path of ``props/<kind>/<name>.yaml`` or None."""
    path = os.path.join(PROPS_DIR, kind, f"{name}.yaml")
    return path if os.path.isfile(path) else None


def _read_yaml(config, path):
    if path is None or not os.path.isfile(path):
        return {}
    with open(path, "r", encoding="utf-8") as f:
        return yaml.load(f.read(), Loader=config.yaml_loader) or {}


def _patch_config(config_class):
    original = config_class._load_internal_config_dict
    if getattr(original, "_recbole_mamba", False):
        return

    recbole_props = os.path.join(os.path.dirname(importlib.import_module("recbole").__file__), "properties")

    def load_internal_config_dict(self, model, model_class, dataset):
        original(self, model, model_class, dataset)
        if model not in PLUGIN_MODELS:
            return  # RecBole's own models get RecBole's own configuration, untouched
        model_defaults = _read_yaml(self, props_file("model", model))
        dataset_props = _read_yaml(self, props_file("dataset", dataset))
        # RecBole's order is overall < model < dataset < quick-start-by-type; a plugin
        # model's YAML slots in at "model": it must not override what RecBole's dataset
        # YAML or the type defaults (eval_args, ...) already set.
        later = set(_read_yaml(self, os.path.join(recbole_props, "dataset", f"{dataset}.yaml")))
        type_defaults = _TYPE_DEFAULTS.get(model_class.type.name, ())
        for name in type_defaults:
            later |= set(_read_yaml(self, os.path.join(recbole_props, "quick_start_config", name)))
        for key, value in model_defaults.items():
            if key not in later:
                self.internal_config_dict[key] = value
        # This package's dataset YAML states the paper protocol for that dataset, for this
        # package's models: it wins over the generic type defaults (external config still
        # wins over everything).
        self.internal_config_dict.update(dataset_props)
        self.parameters["Dataset"] += [k for k in dataset_props if k not in self.parameters["Dataset"]]

    load_internal_config_dict._recbole_mamba = True
    config_class._load_internal_config_dict = load_internal_config_dict


def register():
    """Point RecBole's model lookups at recbole-mamba first; idempotent."""
    global _recbole_get_model, _recbole_get_trainer
    import recbole.config.configurator as configurator
    import recbole.quick_start.quick_start as quick_start
    import recbole.utils
    import recbole.utils.utils as utils

    if _recbole_get_model is None:
        _recbole_get_model = utils.get_model
        _recbole_get_trainer = utils.get_trainer
    for module in (utils, recbole.utils, configurator, quick_start):
        if hasattr(module, "get_model"):
            module.get_model = get_model
        if hasattr(module, "get_trainer"):
            module.get_trainer = get_trainer
    _patch_config(configurator.Config)
