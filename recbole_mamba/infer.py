"""Top-k recommendation from a RecBole checkpoint, and incremental (streaming) scoring.

    python -m recbole_mamba.infer --checkpoint=saved/Mamba4Rec-X.pth --users=1,2,3 --topk=10
    python -m recbole_mamba.infer --checkpoint=saved/Mamba4Rec-X.pth --all-users --output=recs.parquet
    python run_recbole.py --recommend --checkpoint=... --users=...   (the same command)

Works for recbole-mamba's models and RecBole's own sequential models.  User and item
ids in and out are the dataset's own (external) tokens; RecBole's internal indices
never leave this module.  A user's history is every interaction the dataset holds
for them, in RecBole's time order; the model reads its last MAX_ITEM_LIST_LENGTH
events, and items already seen are excluded unless ``include_seen`` is set.

:meth:`Recommender.session` gives a streaming session for causal models with the
stateful API (``init_state`` / ``step``: Mamba4Rec, GRU4Rec): each new event costs
O(1) in the history length instead of a full re-encode.
"""
import argparse
import os
import sys

import numpy as np
import torch

from recbole_mamba.errors import ConfigError, InputError, RecboleMambaError

DEFAULT_BATCH_SIZE = 256


def load_checkpoint(path, device=None):
    """(config, model in eval mode, dataset) from a checkpoint RecBole saved.

    The dataset is rebuilt from the checkpoint's config, so its id mapping is the one
    the model was trained with.  ``device`` defaults to CUDA when available, else CPU.
    """
    import recbole_mamba  # noqa: F401  (registers the plugin models)
    from recbole.data import create_dataset
    from recbole.utils import ModelType, get_model, init_seed

    from recbole_mamba.errors import CheckpointError
    from recbole_mamba.safe_load import load_checkpoint_file

    if not os.path.isfile(path):
        raise InputError(
            f"checkpoint {path!r} does not exist; pass a .pth file RecBole saved (./saved/ by default)"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        checkpoint = load_checkpoint_file(path, map_location=device)
    except CheckpointError:
        raise
    except Exception as error:  # any unpickling failure means: not a checkpoint file
        raise InputError(f"{path!r} is not a readable torch checkpoint ({type(error).__name__}); "
                         "pass a .pth file RecBole saved") from None
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "state_dict" not in checkpoint:
        raise InputError(f"{path!r} has no 'config' and 'state_dict'; pass a .pth file RecBole's trainer saved")

    config = checkpoint["config"]
    model_name = config["model"]
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        raise ConfigError(
            f"{model_name} is a {config['MODEL_TYPE'].name.lower()} model; recbole_mamba.infer "
            "recommends from sequential models only (Mamba4Rec, BiMamba4Rec, GRU4Rec, SASRec, ...)"
        )
    config["device"] = device
    config["use_gpu"] = device.type == "cuda"
    if device.type != "cuda" and str(config["ssm_backend"]).lower() == "cuda":
        config["ssm_backend"] = "auto"  # same weights, same numbers on the torch scan
    data_path = config["data_path"]
    if not os.path.isdir(data_path):
        raise InputError(
            f"dataset {config['dataset']!r} of this checkpoint is not at {data_path}; "
            "put its atomic files there, or retrain on this machine"
        )

    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    # RecBole hands models its built (Interaction-format) data; the same rows
    # converted without the split and augmentation are enough to build any model
    model_data = dataset.copy(dataset._dataframe_to_interaction(dataset.inter_feat))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, model_data).to(device)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError:
        raise InputError(
            f"the weights in {path!r} do not fit {model_name} built from its own config "
            "(changed code or props?); retrain, or load it with the version that saved it"
        ) from None
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return config, model, dataset


def require_stateful(model):
    """``model`` itself if it has the incremental API (init_state/step), else a ConfigError."""
    if not (callable(getattr(model, "init_state", None)) and callable(getattr(model, "step", None))):
        raise ConfigError(
            f"{type(model).__name__} has no incremental API (init_state/step); use "
            "Recommender.recommend (full re-encode), or a causal model: Mamba4Rec or GRU4Rec"
        )
    return model


class UserHistories:
    """Every user's item history in RecBole's time order, as internal ids.

    Read from the dataset's interactions (before RecBole's split), sorted the way
    RecBole's sequential augmentation sorts them: by user, then time, ties kept in
    file order.  Stored CSR-style: user u's items are ``items[indptr[u]:indptr[u+1]]``.
    """

    def __init__(self, dataset):
        inter = dataset.inter_feat

        def column(field):
            values = inter[field]
            return values.to_numpy() if hasattr(values, "to_numpy") else values.numpy()

        uids = column(dataset.uid_field).astype(np.int64)  # [N]
        order = np.arange(len(uids))
        if dataset.time_field is not None and dataset.time_field in inter:
            order = np.argsort(column(dataset.time_field), kind="stable")
        order = order[np.argsort(uids[order], kind="stable")]  # [N], by user then time
        self.items = column(dataset.iid_field).astype(np.int64)[order]  # [N]
        self.n_users = dataset.user_num
        self.n_items = dataset.item_num
        counts = np.bincount(uids, minlength=self.n_users)  # [U]
        self.indptr = np.concatenate([[0], np.cumsum(counts)])  # [U + 1]

    def has_history(self, users):
        users = np.asarray(users)
        return self.indptr[users + 1] > self.indptr[users]

    def full(self, user):
        """Whole history of one internal user id, oldest first (internal item ids)."""
        return self.items[self.indptr[user]:self.indptr[user + 1]]

    def window(self, users, max_len):
        """Last ``max_len`` events of each user, right-padded: (item_seq [B, L], item_seq_len [B])."""
        seq = np.zeros((len(users), max_len), dtype=np.int64)  # [B, L]
        lengths = np.zeros(len(users), dtype=np.int64)  # [B]
        for row, user in enumerate(users):
            recent = self.full(user)[-max_len:]
            seq[row, : len(recent)] = recent
            lengths[row] = len(recent)
        return torch.from_numpy(seq), torch.from_numpy(lengths)

    def seen_mask(self, users):
        """[B, n_items] bool: True where the user has interacted with the item."""
        mask = np.zeros((len(users), self.n_items), dtype=bool)
        for row, user in enumerate(users):
            mask[row, self.full(user)] = True
        return torch.from_numpy(mask)


class Recommender:
    """Top-k items per user from a trained sequential model, with external ids."""

    def __init__(self, config, model, dataset):
        self.config, self.model, self.dataset = config, model, dataset
        self.device = next(model.parameters()).device
        self.histories = UserHistories(dataset)
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]

    @classmethod
    def from_checkpoint(cls, path, device=None):
        return cls(*load_checkpoint(path, device))

    # ids ------------------------------------------------------------------------
    def user_ids(self, users):
        """External user tokens -> internal ids, with a one-line error for unknown ones."""
        field = self.dataset.uid_field
        token2id = self.dataset.field2token_id[field]
        missing = [str(u) for u in users if str(u) not in token2id]
        if missing:
            raise InputError(f"user(s) {', '.join(missing[:5])} not in dataset {self.dataset.dataset_name!r} "
                             f"(field {field}); use ids from its .inter file")
        ids = np.array([token2id[str(u)] for u in users], dtype=np.int64)
        empty = [str(u) for u, ok in zip(users, self.histories.has_history(ids)) if not ok]
        if empty:
            raise InputError(f"user(s) {', '.join(empty[:5])} have no interactions in "
                             f"{self.dataset.dataset_name!r} (filtered out?); pick users with history")
        return ids

    def item_id(self, item):
        token2id = self.dataset.field2token_id[self.dataset.iid_field]
        if str(item) not in token2id:
            raise InputError(f"item {item!r} not in dataset {self.dataset.dataset_name!r}; "
                             "use ids from its .inter file")
        return token2id[str(item)]

    # full re-encode -------------------------------------------------------------
    @torch.no_grad()
    def scores(self, user_ids):
        """[B, n_items] scores for internal user ids, from each user's last window."""
        from recbole.data.interaction import Interaction

        item_seq, item_seq_len = self.histories.window(user_ids, self.max_len)
        interaction = Interaction({
            self.model.ITEM_SEQ: item_seq,
            self.model.ITEM_SEQ_LEN: item_seq_len,
            self.model.USER_ID: torch.from_numpy(np.asarray(user_ids, dtype=np.int64)),
        }).to(self.device)
        return self.model.full_sort_predict(interaction).view(len(user_ids), -1).float()  # [B, n_items]

    def _top_k(self, user_ids, scores, topk, include_seen):
        import pandas as pd

        scores = scores.clone()
        scores[:, 0] = -torch.inf  # the padding item
        if not include_seen:
            scores[self.histories.seen_mask(user_ids).to(scores.device)] = -torch.inf
        k = min(topk, scores.shape[1])
        top_scores, top_items = torch.topk(scores, k, dim=1)  # [B, k]
        top_scores, top_items = top_scores.detach().cpu().numpy(), top_items.cpu().numpy()
        keep = np.isfinite(top_scores)  # [B, k]; fewer than k unseen items leaves -inf
        users = np.repeat(np.asarray(user_ids), k).reshape(-1, k)  # [B, k]
        ranks = np.tile(np.arange(1, k + 1), (len(user_ids), 1))  # [B, k]
        return pd.DataFrame({
            self.dataset.uid_field: self.dataset.id2token(self.dataset.uid_field, users[keep]),
            "rank": ranks[keep],
            self.dataset.iid_field: self.dataset.id2token(self.dataset.iid_field, top_items[keep]),
            "score": top_scores[keep].astype(np.float32),
        })

    def recommend(self, users, topk=10, include_seen=False, batch_size=DEFAULT_BATCH_SIZE):
        """DataFrame [user, rank, item, score] for external user ids, best first."""
        import pandas as pd

        user_ids = self.user_ids(list(users))
        frames = [self._top_k(user_ids[i:i + batch_size], self.scores(user_ids[i:i + batch_size]),
                              topk, include_seen)
                  for i in range(0, len(user_ids), batch_size)]
        return pd.concat(frames, ignore_index=True)

    def recommend_all(self, output, topk=10, include_seen=False, batch_size=DEFAULT_BATCH_SIZE, progress=True):
        """Write the top-k of every user with history to ``output`` (.csv or .parquet); returns rows written."""
        from tqdm import tqdm

        if not output.endswith((".csv", ".parquet")):
            raise InputError(f"output {output!r} must end in .csv or .parquet")
        user_ids = np.nonzero(self.histories.has_history(np.arange(self.histories.n_users)))[0]
        user_ids = user_ids[user_ids > 0]  # 0 is RecBole's padding user
        writer, rows = None, 0
        try:
            for i in tqdm(range(0, len(user_ids), batch_size), desc="recommend", unit="batch",
                          disable=not progress, file=sys.stderr):
                batch = user_ids[i:i + batch_size]
                frame = self._top_k(batch, self.scores(batch), topk, include_seen)
                if output.endswith(".csv"):
                    frame.to_csv(output, mode="w" if i == 0 else "a", header=i == 0, index=False)
                else:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    writer = writer or pq.ParquetWriter(output, table.schema)
                    writer.write_table(table)
                rows += len(frame)
        finally:
            if writer is not None:
                writer.close()
        return rows

    # incremental ----------------------------------------------------------------
    def session(self, user):
        """A :class:`StreamingSession` for one external user id (causal models only)."""
        require_stateful(self.model)
        return StreamingSession(self, self.user_ids([user])[0])


class StreamingSession:
    """One user's recurrent state: each :meth:`append` costs O(1) in the history length.

    The state starts from the same last-MAX_ITEM_LIST_LENGTH window that
    :meth:`Recommender.recommend` encodes (so the first top-k agree) and then grows:
    a recurrent state cannot forget its oldest event, so after n appends the user
    vector is ``forward`` on window + n events, not on a sliding window.
    """

    def __init__(self, recommender, user_id):
        self.recommender = recommender
        self.user_id = int(user_id)
        model = recommender.model
        item_seq, item_seq_len = recommender.histories.window(np.array([user_id]), recommender.max_len)
        self.state = model.init_state(1, recommender.device)
        self.seen = set(recommender.histories.full(user_id).tolist())
        with torch.no_grad():
            for item in item_seq[0, : int(item_seq_len[0])].tolist():
                self.user_vector, self.state = model.step(torch.tensor([item], device=recommender.device),
                                                          self.state)  # [1, d]

    @torch.no_grad()
    def append(self, item):
        """Add one event (external item id) to the history."""
        item_id = self.recommender.item_id(item)
        self.user_vector, self.state = self.recommender.model.step(
            torch.tensor([item_id], device=self.recommender.device), self.state)  # [1, d]
        self.seen.add(item_id)

    @torch.no_grad()
    def top_k(self, topk=10, include_seen=False):
        """DataFrame [user, rank, item, score] from the current state."""
        scores = self.user_vector @ self.recommender.model.item_embedding.weight.t()  # [1, n_items]
        if not include_seen:  # the dataset's history and every appended item
            scores = scores.clone()
            scores[:, sorted(self.seen)] = -torch.inf
        return self.recommender._top_k(np.array([self.user_id]), scores, topk, include_seen=True)


# command line ---------------------------------------------------------------------
def build_parser(prog="python -m recbole_mamba.infer"):
    parser = argparse.ArgumentParser(prog=prog, description="Top-k items per user from a RecBole checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="a .pth file RecBole saved")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated external user ids, e.g. 1,2,3")
    who.add_argument("--all-users", action="store_true", help="every user with history (needs --output)")
    parser.add_argument("--topk", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--include-seen", action="store_true", help="do not exclude items already seen")
    parser.add_argument("--output", help="write .csv or .parquet instead of printing CSV to stdout")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="users per forward pass")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle the checkpoint in full even if it names objects outside the allow-list "
                             "(only for files from a source you trust: unpickling can run code)")
    return parser


def main(argv=None, prog="python -m recbole_mamba.infer"):
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.topk < 1:
            raise InputError(f"--topk={args.topk} must be at least 1")
        if args.all_users and not args.output:
            raise InputError("--all-users writes a file; add --output=recs.csv or --output=recs.parquet")
        if args.trust_checkpoint:
            from recbole_mamba.safe_load import trust

            trust(args.checkpoint)
        recommender = Recommender.from_checkpoint(args.checkpoint, args.device)
        if args.all_users:
            rows = recommender.recommend_all(args.output, args.topk, args.include_seen, args.batch_size)
            print(f"wrote {rows} rows to {args.output}", file=sys.stderr)
            return 0
        users = [u.strip() for u in args.users.split(",") if u.strip()]
        frame = recommender.recommend(users, args.topk, args.include_seen, args.batch_size)
        if args.output:
            if args.output.endswith(".parquet"):
                frame.to_parquet(args.output, index=False)
            elif args.output.endswith(".csv"):
                frame.to_csv(args.output, index=False)
            else:
                raise InputError(f"output {args.output!r} must end in .csv or .parquet")
            print(f"wrote {len(frame)} rows to {args.output}", file=sys.stderr)
        else:
            frame.to_csv(sys.stdout, index=False)
        return 0
    except RecboleMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
