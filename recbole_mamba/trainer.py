"""RecBole trainers for what RecBole's own cannot express.

:class:`WarmupCosineTrainer`: RecBole's Trainer with a learning-rate schedule set at
the start of every epoch: linear warm-up over ``warmup_epochs``, then cosine decay
to 0 at ``epochs`` (MDAF's thesis recipe).  Everything else (optimizer from
``learner``, gradient clipping from ``clip_grad_norm``, early stopping, checkpoints,
resume) is RecBole's; the schedule is a function of the epoch, so a resumed run
picks it up where it stopped.

:class:`PlateauDecayTrainer`: RecBole's Trainer with FuxiCTR's reduce-on-plateau (DCNv3's
official training loop): every validation that does not reach the best valid score so far
multiplies the learning rate by ``lr_plateau_factor`` (not below ``lr_plateau_min``).  The
rate lives in the optimizer's state, which RecBole's checkpoints keep, so a resumed run
goes on at the reduced rate.
"""
import math

from recbole.trainer import Trainer

from recbole_mamba.errors import ConfigError


def warmup_cosine_factor(epoch, warmup_epochs, total_epochs):
    """LR multiplier for ``epoch`` (0-based): (e+1)/w while warming up, then cosine to 0."""
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineTrainer(Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.warmup_epochs = int(config["warmup_epochs"] or 0)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        factor = warmup_cosine_factor(epoch_idx, self.warmup_epochs, self.epochs)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * factor
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)


class PlateauDecayTrainer(Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.plateau_factor = config["lr_plateau_factor"]  # None or 0: off
        self.plateau_min_lr = config["lr_plateau_min"] or 0.0
        if self.plateau_factor and not 0 < self.plateau_factor < 1:
            raise ConfigError(f"lr_plateau_factor={self.plateau_factor} must lie in (0, 1) "
                              "(0 or ~ turns the decay off)")

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        # RecBole's early_stopping (called next) counts the same evaluations as a gain or not
        gain = score >= self.best_valid_score if self.valid_metric_bigger else score <= self.best_valid_score
        if self.plateau_factor and not gain:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.plateau_factor, self.plateau_min_lr)
        return score, result
