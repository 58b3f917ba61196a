"""Make RecBole 1.2.1 run on today's stack, in one place.

The dependency pins in ``pyproject.toml`` handle numpy 2 (``np.float_``), pandas 3
(token_seq fields, NaN filling) and ray 2.6's ``pkg_resources`` (setuptools < 82).
What a pin cannot fix is patched here, once, when ``recbole_mamba`` is imported:

* torch >= 2.6 loads checkpoints with ``weights_only=True``, but RecBole's checkpoints
  pickle the whole ``Config`` with protocol 4, which that unpickler cannot read;
  RecBole's own loaders (best-model reload after training, ``resume_checkpoint``,
  ``load_data_and_model``) read through :mod:`recbole_mamba.safe_load` instead, a
  restricted unpickler that never runs code from the file, and checkpoints are
  written atomically.
* importing RecBole's SINE (which every sequential model import pulls in through
  ``recbole.model.sequential_recommender``) turns on autograd anomaly mode for the
  whole process, which makes every training step ~1.8x slower; it is turned off again.
"""
import os
import warnings

import torch

def _quiet_known_warnings():
    # ray 2.6 imports pkg_resources (deprecated in setuptools 81); RecBole 1.2.1 uses
    # pandas' chained inplace fillna (FutureWarning on pandas 2.2+). Both are harmless
    # with the pinned versions and would otherwise print on every run.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    # ray 2.6's tensorboardX logger names np.bool8 (deprecated, still there in numpy < 2)
    warnings.filterwarnings("ignore", message=r"`np\.bool8` is a deprecated alias", category=DeprecationWarning)


def ensure_dir(dir_path):
    """RecBole's ``ensure_dir`` without its exists-then-create race: with ``nproc`` > 1
    every rank creates ./log at the same moment and one dies of FileExistsError."""
    os.makedirs(dir_path, exist_ok=True)


def _race_free_ensure_dir():
    import recbole.data.dataset.dataset as dataset_module
    import recbole.data.utils as data_utils
    import recbole.trainer.trainer as trainer_module
    import recbole.utils
    import recbole.utils.logger as logger_module
    import recbole.utils.utils as utils_module

    for module in (utils_module, recbole.utils, logger_module, trainer_module, dataset_module, data_utils):
        module.ensure_dir = ensure_dir


def apply():
    """Patch RecBole once; safe to call again."""
    _quiet_known_warnings()
    import recbole.quick_start
    import recbole.quick_start.quick_start as quick_start
    import recbole.model.sequential_recommender  # noqa: F401  (runs SINE's module code now)
    from recbole.trainer import trainer

    torch.autograd.set_detect_anomaly(False)

    _race_free_ensure_dir()

    from recbole_mamba import safe_load

    safe_load.install()

    # one-line errors for missing/malformed dataset files and unfitting checkpoints,
    # and the ``resume`` config key
    from recbole_mamba import checkpoints, datasets

    datasets.install()
    checkpoints.install()

    # RecBole's distributed mode (nproc, world_size): gloo on CPU-only machines, CPU
    # DDP, and spawned ranks that know our models (see recbole_mamba.distributed)
    from recbole_mamba import distributed

    distributed.install()
