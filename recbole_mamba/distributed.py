"""RecBole's own distributed training (``nproc``, ``world_size``, ...) for our models, on CPU too.

Multi-process training is RecBole's: ``run(model, dataset, nproc=2)`` spawns one
process per rank, each wraps the model in ``DistributedDataParallel`` and reads its
shard through a ``DistributedSampler``; evaluation results are all-gathered.  Three
things in RecBole 1.2.1 stop that path short of our models or of a CPU machine;
:func:`install` (called from :func:`recbole_mamba.compat.apply`) fixes each:

* ``Config._init_device`` always initialises torch.distributed with ``nccl`` and a
  CUDA device.  Without a usable CUDA device it now uses ``gloo`` and the CPU; with
  CUDA nothing changes.
* ``AbstractTrainer`` builds ``DistributedDataParallel(model, device_ids=[rank])``,
  which torch refuses for a CPU module; a CPU module gets ``device_ids=None``.
* ``run()`` starts the ranks with ``mp.spawn(run_recboles, ...)``; a spawned process
  imports RecBole only, so it knows none of our models.  The ranks start in
  :func:`run_recboles` instead, which imports ``recbole_mamba`` first.
* Only rank 0 saves the best checkpoint, under a file name stamped with *its* clock,
  yet every rank reloads "its own" name for the test (``FileNotFoundError`` as soon
  as the ranks' clocks straddle a second, on GPUs too).  Before that reload the ranks
  take rank 0's file name, which also waits until rank 0 has written it.
"""
import functools
import os

import torch
from torch.nn.parallel import DistributedDataParallel

_recbole_init_device = None
_recbole_run_recboles = None


def _init_device(self):
    """RecBole's ``_init_device``; for a rank without a usable CUDA device: gloo on CPU."""
    config = self.final_config_dict
    if "local_rank" not in config:
        return _recbole_init_device(self)
    gpu_id = config["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
    config["gpu_id"] = gpu_id
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id  # as RecBole does, before asking torch
    if gpu_id and torch.cuda.is_available():
        return _recbole_init_device(self)
    torch.distributed.init_process_group(
        backend="gloo",
        rank=config["local_rank"] + config["offset"],
        world_size=config["world_size"],
        init_method=f"tcp://{config['ip']}:{config['port']}",
    )
    config["device"] = torch.device("cpu")
    config["single_spec"] = False
    if config["local_rank"] != 0:  # as RecBole: only rank 0 logs
        config["state"] = "error"
        config["show_progress"] = False
        config["verbose"] = False


def distributed_data_parallel(module, device_ids=None, **kwargs):
    """``DistributedDataParallel`` that drops ``device_ids`` for a CPU module (torch's rule)."""
    if next(module.parameters()).device.type == "cpu":
        device_ids = None
    return DistributedDataParallel(module, device_ids=device_ids, **kwargs)


def run_recboles(rank, *args):
    """RecBole's per-rank entry, in a fresh spawned process that has our models registered."""
    import recbole_mamba  # noqa: F401  (this module's import already ran it; kept explicit)

    return _recbole_run_recboles(rank, *args)


def _shared_checkpoint(evaluate):
    if getattr(evaluate, "_recbole_mamba_shared", False):
        return evaluate

    @functools.wraps(evaluate)
    def wrapper(self, eval_data, load_best_model=True, model_file=None, *args, **kwargs):
        if not self.config["single_spec"] and load_best_model and model_file is None:
            names = [self.saved_model_file]
            torch.distributed.broadcast_object_list(names, src=0)  # rank 0 is past its save here
            self.saved_model_file = names[0]
        return evaluate(self, eval_data, load_best_model, model_file, *args, **kwargs)

    wrapper._recbole_mamba_shared = True
    return wrapper


def install():
    """Patch RecBole's distributed path once; idempotent."""
    global _recbole_init_device, _recbole_run_recboles
    import recbole.quick_start.quick_start as quick_start
    from recbole.config import configurator
    from recbole.trainer import trainer

    if _recbole_init_device is None:
        _recbole_init_device = configurator.Config._init_device
        _recbole_run_recboles = quick_start.run_recboles
    configurator.Config._init_device = _init_device
    trainer.DistributedDataParallel = distributed_data_parallel
    trainer.Trainer.evaluate = _shared_checkpoint(trainer.Trainer.evaluate)
    quick_start.run_recboles = run_recboles
