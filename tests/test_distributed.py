"""RecBole's own multi-process training (nproc=2) for our models, on CPU through gloo."""
import glob
import socket

from conftest import TINY

# ml-100k's 380 users with at most 50 ratings: both ranks' epoch in seconds
SMALL = {**TINY, "user_inter_num_interval": "[0,50]", "state": "INFO"}


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return str(sock.getsockname()[1])


def test_nproc_2_trains_on_cpu_and_returns_metrics():
    import recbole_mamba  # noqa: F401
    from recbole.quick_start import run

    # init_process_group(world_size=2) only returns once both ranks have joined, so a
    # result here means two processes trained, shared gradients and all-gathered metrics
    result = run("Mamba4Rec", "ml-100k", config_dict=dict(SMALL), nproc=2, port=free_port())
    assert result is not None, "rank 0 put no result on the queue"
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    assert 0 < result["best_valid_result"]["ndcg@10"] <= 1
    # one log file per rank; rank 1 logs errors only (RecBole's choice)
    log = "".join(open(path, encoding="utf-8").read() for path in glob.glob("log/Mamba4Rec/*.log"))
    assert "world_size = 2" in log and "epoch 0 training" in log
