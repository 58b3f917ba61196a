"""Converters from public raw files to RecBole atomic files.

``python -m recbole_mamba.data <ml1m|amazon|seqfile|taobao> INPUT [--dataset NAME]
[--out-dir DATA_PATH]`` writes ``DATA_PATH/NAME/NAME.inter`` (plus ``.item``/``.user``
for ML-1M) and prints users, items, interactions, the counts after RecBole's [5,inf)
filters, and the rows it dropped by reason.
"""
from recbole_mamba.data.atomic import Summary, kcore_counts
from recbole_mamba.data.taobao import read_user_behavior

__all__ = ["Summary", "kcore_counts", "read_user_behavior"]
