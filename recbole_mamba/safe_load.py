"""Loading RecBole checkpoints without running code from the file.

A RecBole checkpoint pickles the whole ``Config`` with its enums, numpy scalars and the
model class, and RecBole writes it with pickle protocol 4, which torch's
``weights_only=True`` unpickler cannot read (its FRAME opcode).  So a plain
``torch.load`` of someone else's ``.pth`` would unpickle arbitrary objects, and a crafted
file runs code on load.  Here every checkpoint is read by a restricted unpickler (the
same idea as ``weights_only``): it builds only tensors and storages, plain containers,
RecBole's ``Config`` and enums, torch devices and dtypes, numpy scalars and arrays, the
YAML loader class RecBole keeps, and recommender model classes of RecBole or this
package (as references).  Any other global in the file is refused with a one-line
:class:`~recbole_mamba.errors.CheckpointError`.

Full unpickling (``weights_only=False``) happens only for a file that (a) this process
wrote with RecBole's trainer (same path, size and mtime), or (b) was trusted explicitly:
``trust_checkpoint=True`` in the config (``--trust_checkpoint=True``, for ``resume``),
``--trust-checkpoint`` for ``--recommend``, :func:`trust` from Python, or the environment
variable ``RECBOLE_MAMBA_TRUST_CHECKPOINTS=1``.

RecBole's own loaders (best-model reload in ``Trainer.evaluate``, ``resume_checkpoint``,
``load_data_and_model``) read through this module: their modules see a ``torch`` whose
``load`` is :func:`load_checkpoint_file`.  The process-wide ``torch.load`` is never
swapped, so other threads' loads are untouched.
"""
import os
import pickle
import threading
import types

import torch

from recbole_mamba.errors import CheckpointError
from recbole_mamba.fileio import replacing

TRUST_ENV = "RECBOLE_MAMBA_TRUST_CHECKPOINTS"

_written = {}  # realpath -> (size, mtime_ns) of checkpoints this process saved
_trusted = set()  # realpaths trusted explicitly
_lock = threading.Lock()

_ALLOWED = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_tensor"), ("torch", "device"), ("torch", "Size"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("recbole.config.configurator", "Config"),
    ("yaml.loader", "FullLoader"), ("yaml.loader", "SafeLoader"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """A checkpoint names a global outside the allow-list."""

    def __init__(self, module, name):
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


def _allowed(module, name):
    if (module, name) in _ALLOWED:
        return True
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return True
    if module == "numpy.dtypes" and name.endswith("DType"):
        return True
    if module == "recbole.utils.enum_type":
        return True  # ModelType, InputType, EvaluatorType, FeatureType, FeatureSource, ...
    if module.startswith(("recbole.model.", "recbole_mamba.model.")):
        import importlib

        from recbole.model.abstract_recommender import AbstractRecommender

        try:
            value = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return False
        return isinstance(value, type) and issubclass(value, AbstractRecommender)
    return False


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals."""

    def find_class(self, module, name):
        if not _allowed(module, name):
            raise RefusedGlobal(module, name)
        return super().find_class(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


restricted_pickle = types.SimpleNamespace(
    __name__="recbole_mamba.safe_load.restricted_pickle", Unpickler=RestrictedUnpickler, load=_restricted_load
)


def _fingerprint(path):
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def record_written(path):
    """Remember that this process wrote ``path`` (it may be fully unpickled later)."""
    with _lock:
        _written[os.path.realpath(path)] = _fingerprint(path)


def trust(path):
    """Allow full unpickling of ``path``: only for files from a source you trust."""
    with _lock:
        _trusted.add(os.path.realpath(str(path)))


def _fully_trusted(path):
    real = os.path.realpath(path)
    if os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    with _lock:
        if real in _trusted:
            return True
        written = _written.get(real)
    return written is not None and written == _fingerprint(path)


def load_checkpoint_file(path, map_location=None, **_ignored):
    """``torch.load`` of a checkpoint without running code from it; see the module docstring.

    Extra keyword arguments of ``torch.load`` (``weights_only``, ...) are ignored: this
    function decides how the file is unpickled.
    """
    path = os.fspath(path)
    try:
        return torch.load(path, map_location=map_location, pickle_module=restricted_pickle, weights_only=False)
    except RefusedGlobal as refused:
        if _fully_trusted(path):
            return torch.load(path, map_location=map_location, weights_only=False)
        raise CheckpointError(
            f"checkpoint {path} would build {refused.qualified} on load, which recbole-mamba does not unpickle "
            f"from a file it did not write (it could run code); if you trust the file, load it with "
            f"trust_checkpoint=True, --trust-checkpoint or {TRUST_ENV}=1"
        ) from None


class _TorchWithSafeLoad(types.ModuleType):
    """``torch`` as RecBole's loader modules see it: every attribute is torch's, but
    ``load`` is :func:`load_checkpoint_file`."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        return load_checkpoint_file(f, map_location=map_location, **kwargs)


def rng_state(trainer):
    """Every random stream a resumed run must continue: torch (and CUDA), numpy, Python,
    and the training loader's shuffling (RecBole's generator, our length buckets)."""
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    loader = getattr(trainer, "_recbole_mamba_train_data", None)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        state["loader"] = generator.get_state()
    buckets = getattr(loader, "_rng", None)
    if buckets is not None:
        state["buckets"] = buckets.bit_generator.state
    return state


def restore_rng_state(trainer, state):
    """Undo :func:`rng_state` (a checkpoint without one changes nothing)."""
    import random

    import numpy as np

    if not state:
        return
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader = getattr(trainer, "_recbole_mamba_train_data", None)
    if "loader" in state and isinstance(getattr(loader, "generator", None), torch.Generator):
        loader.generator.set_state(state["loader"])
    if "buckets" in state and getattr(loader, "_rng", None) is not None:
        loader._rng.bit_generator.state = state["buckets"]


def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    """Replaces RecBole's ``Trainer._save_checkpoint``: the same keys plus the random
    streams of the run (so a resumed run continues exactly as an uninterrupted one),
    written to a temporary file and renamed into place (a run killed mid-save never
    leaves a half-written checkpoint), then recorded as written by this process."""
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    final = kwargs.pop("saved_model_file", self.saved_model_file)
    best_model_file = kwargs.pop("best_model_file", None)  # set for a run's latest state (checkpoints.py)
    state = {
        "config": self.config, "epoch": epoch, "cur_step": self.cur_step,
        "best_valid_score": self.best_valid_score, "state_dict": self.model.state_dict(),
        "other_parameter": self.model.other_parameter(), "optimizer": self.optimizer.state_dict(),
        "rng_state": rng_state(self),
    }
    if best_model_file is not None:
        state["best_model_file"] = os.path.basename(best_model_file)
    with replacing(final) as tmp:
        torch.save(state, tmp, pickle_protocol=4)
    record_written(final)
    if verbose:
        self.logger.info(f"Saving current: {final}")


def load_data_and_model(model_file, trust_checkpoint=False):
    """RecBole's ``load_data_and_model`` (same steps, same return value), reading the
    checkpoint with :func:`load_checkpoint_file`.  ``trust_checkpoint=True`` allows full
    unpickling of this file."""
    from logging import getLogger

    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_logger, init_seed

    if trust_checkpoint:
        trust(model_file)
    checkpoint = load_checkpoint_file(model_file)
    config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def install():
    """Point RecBole's checkpoint readers at the restricted loader, make its writes atomic; idempotent."""
    import recbole.quick_start
    import recbole.quick_start.quick_start as quick_start
    import recbole.trainer.trainer as trainer_module

    if not isinstance(trainer_module.torch, _TorchWithSafeLoad):
        trainer_module.torch = _TorchWithSafeLoad()
    quick_start.load_data_and_model = load_data_and_model
    recbole.quick_start.load_data_and_model = load_data_and_model
    trainer_module.Trainer._save_checkpoint = _save_checkpoint
