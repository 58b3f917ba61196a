"""Make RecBole 1.2.1 run on today's stack, in one place.

Two stacks are supported (README, "Supported stacks"): the 2023-era one RecBole 1.2.1 was
released against (numpy < 2, pandas < 3, ray <= 2.6.3; pinned in ``pyproject.toml`` for
Python <= 3.11) and the current one (numpy 2, pandas 3, Ray >= 2.9, Python 3.11-3.13).
Each fix below is a named function that says which upstream change it answers; the
pandas 3 ones are applied only under pandas >= 3. Applied once, when ``recbole_mamba``
is imported:

* numpy 2 (NEP 52): :func:`numpy2_config_aliases` replaces ``Config.compatibility_settings``,
  which read the removed ``np.float_`` / ``np.complex_`` / ``np.unicode_``.
* pandas 3 copy-on-write: :func:`fill_nan_by_assignment` (missing floats stayed NaN) and
  :class:`_SeqNaNReadCsv` (an empty token_seq cell crashed loading).
* pandas 3 ``Series.agg``: :func:`elementwise_len_agg` around the RecBole methods that
  meant per-row lengths (token_seq remapping, ``item_length`` of pre-split files).
* Ray 2.7 / 2.41 Tune API moves: :func:`tune_report`, :func:`tune_trial_dir`,
  :func:`tune_run_config`.
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
import contextlib
import functools
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
    # pandas 3.1 deprecates the inplace= keyword RecBole 1.2.1 uses on DataFrame.drop,
    # reset_index, sort_values, ... (PDEP-8; these calls are not chained and still work);
    # and its .values are read-only views that torch.LongTensor shares with a warning:
    # RecBole drops the frame once converted, so nothing else sees that memory.
    warnings.filterwarnings("ignore", message=r"The inplace keyword in DataFrame\.", module=r"recbole\.")
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning,
                            module=r"recbole\.")


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


def numpy2_config_aliases():
    """RecBole's ``Config.compatibility_settings`` without the names numpy 2 removed.

    RecBole 1.2.1 restores numpy's old type aliases (``np.float``, ``np.int``, ...) that
    its metrics and dataset code still use, by reading ``np.float_``, ``np.complex_`` and
    ``np.unicode_``, which numpy 2.0 removed (NEP 52), so every ``Config()`` died there.
    Same aliases, from names every numpy >= 1.23 has; ``np.long`` is kept where numpy
    2 defines it (the C long, which is what RecBole means by it on Linux and macOS).
    """
    import numpy as np

    aliases = {"bool": np.bool_, "int": np.int_, "float": np.float64, "complex": np.complex128,
               "object": np.object_, "str": np.str_, "unicode": np.str_}
    for name, value in aliases.items():
        setattr(np, name, value)
    if "long" not in np.__dict__:
        np.long = np.int_


def _numpy2_safe_config():
    from recbole.config import configurator

    configurator.Config.compatibility_settings = lambda self: numpy2_config_aliases()


def pandas_major():
    import pandas as pd

    return int(pd.__version__.split(".")[0])


@contextlib.contextmanager
def elementwise_len_agg():
    """``Series.agg(len)`` as per-row lengths, for RecBole code that meant that.

    pandas 3 calls an ``agg`` function on the whole Series first, so RecBole 1.2.1's
    ``feat[field].agg(len)`` (split points of token_seq / float_seq columns in remapping,
    normalisation, discretisation, and the ``item_length`` of pre-split benchmark files)
    became one number: remapping a token_seq field raised ``Length of values (1) does
    not match length of index``, and ``item_length`` silently became the row count.
    Inside this block, and only for ``len``, ``agg`` maps over the rows as pandas < 3 did.
    """
    import pandas as pd

    original = pd.Series.agg

    def agg(self, func=None, axis=0, *args, **kwargs):
        if func is len and not args and not kwargs:
            return self.map(len)
        return original(self, func, axis, *args, **kwargs)

    pd.Series.agg = agg
    try:
        yield
    finally:
        pd.Series.agg = original


def _with_elementwise_len_agg(method):
    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with elementwise_len_agg():
            return method(*args, **kwargs)

    wrapped._recbole_mamba_pandas3 = True
    return wrapped


class _SeqNaNReadCsv:
    """The ``pandas`` that RecBole's dataset module sees, with one change: ``read_csv``
    gives empty text instead of NaN in ``*_seq`` columns.

    RecBole 1.2.1 fills them with ``df[field].fillna(value="", inplace=True)``, a
    chained in-place call that pandas 3's copy-on-write turns into a no-op, so an empty
    token_seq / float_seq cell reached ``str.split`` as a float NaN and loading died.
    Other columns keep their NaN (RecBole maps a missing token to [PAD] and fills a
    missing float in ``_fill_nan``)."""

    def __init__(self, pandas):
        self._pandas = pandas

    def __getattr__(self, name):
        return getattr(self._pandas, name)

    def read_csv(self, *args, **kwargs):
        frame = self._pandas.read_csv(*args, **kwargs)
        for name in list(frame.columns):
            if str(name).endswith("_seq"):
                frame[name] = frame[name].fillna("")
        return frame


def fill_nan_by_assignment(self):
    """RecBole's ``Dataset._fill_nan`` (missing token -> 0, i.e. [PAD]; missing float ->
    the column mean; missing sequence -> empty array) with assignments instead of
    ``feat[field].fillna(..., inplace=True)``, which pandas 3's copy-on-write makes a
    no-op: a missing float feature stayed NaN and reached the model as NaN."""
    import numpy as np
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].map(lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x)


def _pandas3_safe_datasets():
    if pandas_major() < 3:
        return
    import recbole.data.dataset.dataset as dataset_module
    from recbole.data.dataset import Dataset, KnowledgeBasedDataset, SequentialDataset

    if not isinstance(dataset_module.pd, _SeqNaNReadCsv):
        dataset_module.pd = _SeqNaNReadCsv(dataset_module.pd)
    Dataset._fill_nan = fill_nan_by_assignment
    for cls, name in ((Dataset, "_remap"), (Dataset, "_normalize"), (Dataset, "_discretization"),
                      (SequentialDataset, "_benchmark_presets"), (KnowledgeBasedDataset, "_reset_ent_remapID")):
        method = cls.__dict__[name]
        if not getattr(method, "_recbole_mamba_pandas3", False):
            setattr(cls, name, _with_elementwise_len_agg(method))


# --------------------------------------------------------------------------- Ray Tune
# Ray 2.6 (RecBole's pin) reports from a function trainable through ray.air.session and
# configures runs with ray.air.RunConfig; Ray 2.7 moved both to ray.train, and Ray 2.41+
# gives Tune its own ray.tune.report / ray.tune.get_context / ray.tune.RunConfig (ray.air's
# session is gone by 2.60).  These pick the newest API the installed Ray has.
def _tune_context_module():
    from ray import tune

    if hasattr(tune, "get_context") and hasattr(tune, "report"):
        return tune
    try:
        from ray import train

        if hasattr(train, "get_context") and hasattr(train, "report"):
            return train
    except ImportError:
        pass
    return None


def tune_report(metrics):
    """Report one result from inside a Tune function trainable."""
    module = _tune_context_module()
    if module is not None:
        module.report(metrics)
    else:
        from ray.air import session

        session.report(metrics)


def tune_trial_dir():
    """The running trial's own folder."""
    module = _tune_context_module()
    if module is not None:
        return module.get_context().get_trial_dir()
    from ray.air import session

    return session.get_trial_dir()


def tune_run_config(**kwargs):
    """``RunConfig(name=..., storage_path=..., failure_config=...)`` for ``Tuner``, with
    ``max_failures`` given as a keyword: ``tune_run_config(max_failures=0, ...)``."""
    from ray import tune

    max_failures = kwargs.pop("max_failures", 0)
    if hasattr(tune, "RunConfig") and hasattr(tune, "FailureConfig"):
        module = tune
    else:
        try:
            from ray import train as module

            module.RunConfig  # noqa: B018  (ray.train has it from 2.7)
        except (ImportError, AttributeError):
            from ray import air as module
    return module.RunConfig(failure_config=module.FailureConfig(max_failures=max_failures), **kwargs)


def require_recbole():
    """On Python >= 3.12 our metadata cannot require RecBole (see pyproject.toml), so a
    missing one is named here with the command that installs it."""
    import importlib.util

    if importlib.util.find_spec("recbole") is None:
        from recbole_mamba.errors import MissingDependencyError

        raise MissingDependencyError(
            "RecBole is not installed; install it with `pip install --no-deps recbole==1.2.1` (its metadata pins "
            "ray<=2.6.3, which has no wheel past Python 3.11; recbole-mamba lists its other requirements)")


def apply():
    """Patch RecBole once; safe to call again."""
    require_recbole()
    _quiet_known_warnings()
    _numpy2_safe_config()
    _pandas3_safe_datasets()
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
