"""Resuming training from a RecBole checkpoint, and one-line errors for checkpoints
that do not fit the model.

Config key ``resume``: a checkpoint path (or ``latest`` for the newest
``<model>-*.pth`` in ``checkpoint_dir``). With it, RecBole's trainer first calls its own
``resume_checkpoint`` (weights, optimizer, epoch, best score), the random streams saved
with the checkpoint are restored, and then it trains the remaining epochs:
``run_recbole.py --model=Mamba4Rec --resume=saved/Mamba4Rec-....pth``.  RecBole saves a
checkpoint only at the end of an epoch whose validation improved, so a run resumes from
there (not mid-epoch), and ends as the uninterrupted run would.

Config key ``save_latest`` (default off): after every validation that does not end the
run, the run's whole state (weights, optimizer, epoch, early-stopping counter, random
streams) is also written to ``<best checkpoint>-latest.pth``, which names the best
checkpoint.  ``resume=latest`` then picks it (it is the newest file) and continues after
the last validated epoch instead of the last improving one; the best checkpoint stays
the one the final test loads.
"""
import functools
import glob
import inspect
import os

from recbole_mamba.errors import CheckpointError


def latest_checkpoint(checkpoint_dir, model):
    """Newest ``<model>-*.pth`` in ``checkpoint_dir`` (RecBole's naming), or a CheckpointError."""
    found = glob.glob(os.path.join(checkpoint_dir or "saved", f"{model}-*.pth"))
    if not found:
        raise CheckpointError(f"resume=latest found no {model}-*.pth in {os.path.abspath(checkpoint_dir or 'saved')}; "
                              "pass the checkpoint path (--resume=path/to/file.pth) or set checkpoint_dir")
    return max(found, key=os.path.getmtime)


def resume_path(value, checkpoint_dir, model):
    """The file a ``resume`` config value names."""
    if value is True or str(value).lower() in ("latest", "true"):
        return latest_checkpoint(checkpoint_dir, model)
    return str(value)


def read_checkpoint(path, map_location="cpu"):
    """A RecBole checkpoint dict, or a CheckpointError saying why ``path`` is not one."""
    from recbole_mamba.safe_load import load_checkpoint_file

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found; pass a .pth that RecBole saved under checkpoint_dir "
                              "(default ./saved)")
    try:
        checkpoint = load_checkpoint_file(path, map_location=map_location)
    except CheckpointError:
        raise
    except Exception as error:  # torch raises several unrelated types for a non-checkpoint file
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(error).__name__}); "
                              "pass a .pth that RecBole's trainer saved") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise CheckpointError(f"{path} is not a RecBole checkpoint (no state_dict/config); "
                              "pass a .pth that RecBole's trainer saved")
    return checkpoint


def state_dict_mismatch(saved, current):
    """First difference between two state dicts as text, or None when they fit."""
    for key, value in current.items():
        if key not in saved:
            return f"the file has no {key}"
        if tuple(saved[key].shape) != tuple(value.shape):
            return f"{key} is {list(saved[key].shape)} in the file but {list(value.shape)} here"
    extra = [key for key in saved if key not in current]
    return f"the file has {extra[0]}, which this model lacks" if extra else None


def check_checkpoint_fits(checkpoint, model, model_name, path):
    """CheckpointError when ``checkpoint`` was saved by another model or another configuration."""
    saved_config = checkpoint["config"]
    saved_model = saved_config["model"]
    if str(saved_model).lower() != str(model_name).lower():
        raise CheckpointError(f"checkpoint {path} holds a {saved_model} model, not {model_name}; "
                              f"use --model={saved_model} with it, or a {model_name} checkpoint")
    difference = state_dict_mismatch(checkpoint["state_dict"], model.state_dict())
    if difference:
        raise CheckpointError(f"checkpoint {path} does not fit this {model_name}: {difference} (saved with "
                              f"dataset={saved_config['dataset']}); use the dataset and hyper-parameters it was "
                              "trained with, or train without it")


def _wrap_resume_checkpoint(original):
    @functools.wraps(original)
    def resume_checkpoint(self, resume_file):
        if self.config["trust_checkpoint"]:
            from recbole_mamba.safe_load import trust

            trust(resume_file)
        checkpoint = read_checkpoint(str(resume_file))
        check_checkpoint_fits(checkpoint, self.model, self.config["model"], resume_file)
        result = original(self, resume_file)
        from recbole_mamba.safe_load import restore_rng_state

        restore_rng_state(self, checkpoint.get("rng_state"))  # continue the run's random streams
        if checkpoint.get("best_model_file"):  # a run's latest state: the best weights live elsewhere
            best = os.path.join(os.path.dirname(str(resume_file)), checkpoint["best_model_file"])
            if not os.path.isfile(best):
                raise CheckpointError(f"{resume_file} is a run's latest state, and the best checkpoint it names, "
                                      f"{best}, is missing; restore that file next to it, or resume from a best "
                                      "checkpoint instead")
            if self.config["trust_checkpoint"]:  # trusting a run's state trusts its best weights too
                from recbole_mamba.safe_load import trust

                trust(best)
            self.saved_model_file = best  # later improvements and the final test use the best file
        return result

    resume_checkpoint._recbole_mamba = True
    return resume_checkpoint


def latest_path(best_model_file):
    """Where ``save_latest`` writes a run's latest state: ``<best checkpoint>-latest.pth``."""
    root, extension = os.path.splitext(str(best_model_file))
    return f"{root}-latest{extension or '.pth'}"


def _saving_latest(trainer, callback_fn):
    """A ``fit`` callback that writes the run's latest state after each validation that does
    not end the run (RecBole calls it after the early-stopping update and the best save),
    then calls ``callback_fn``."""

    def callback(epoch_idx, valid_score):
        stops = trainer.cur_step > trainer.stopping_step or epoch_idx + 1 >= trainer.epochs
        if not stops:
            trainer._save_checkpoint(epoch_idx, verbose=False, saved_model_file=latest_path(trainer.saved_model_file),
                                     best_model_file=trainer.saved_model_file)
        if callback_fn is not None:
            callback_fn(epoch_idx, valid_score)

    return callback


def _wrap_fit(original):
    signature = inspect.signature(original)

    @functools.wraps(original)
    def fit(self, train_data, *args, **kwargs):
        self._recbole_mamba_train_data = train_data  # its shuffling state goes into checkpoints
        value = self.config["resume"]
        if value and not getattr(self, "_recbole_mamba_resumed", False):
            self._recbole_mamba_resumed = True
            self.resume_checkpoint(resume_path(value, self.config["checkpoint_dir"], self.config["model"]))
        bound = signature.bind(self, train_data, *args, **kwargs)
        bound.apply_defaults()
        if self.config["save_latest"] and bound.arguments.get("saved", True) and "callback_fn" in bound.arguments:
            bound.arguments["callback_fn"] = _saving_latest(self, bound.arguments["callback_fn"])
        return original(*bound.args, **bound.kwargs)

    fit._recbole_mamba = True
    return fit


def _wrap_evaluate(original):
    @functools.wraps(original)
    def evaluate(self, eval_data, load_best_model=True, model_file=None, *args, **kwargs):
        if load_best_model and model_file:
            check_checkpoint_fits(read_checkpoint(model_file), self.model, self.config["model"], model_file)
        return original(self, eval_data, load_best_model, model_file, *args, **kwargs)

    evaluate._recbole_mamba = True
    return evaluate


def install():
    """Wrap RecBole's Trainer once; idempotent. Run after compat's trusted-load wrappers."""
    from recbole.trainer import trainer

    cls = trainer.Trainer
    for name, wrap in (("resume_checkpoint", _wrap_resume_checkpoint), ("fit", _wrap_fit),
                       ("evaluate", _wrap_evaluate)):
        if not getattr(getattr(cls, name), "_recbole_mamba", False):
            setattr(cls, name, wrap(getattr(cls, name)))
