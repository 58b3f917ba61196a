"""The Triton selective scan on a CPU, under Triton's interpreter (TRITON_INTERPRET=1),
against the float64 reference and the torch backend: forward and every gradient, odd
lengths, L = 1, lengths not a multiple of the chunk, batch 1, a grouped A, fp16 / bf16
inputs, and Mamba4Rec / BiMamba4Rec end to end with ssm_backend=triton.

Triton reads TRITON_INTERPRET when the kernels are defined, so the cases run in one
process of their own (tests/triton_cases.py) and these tests check its numbers.  Skipped,
with the reason, where triton is not installed (pip install triton; CUDA torch wheels
ship it)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install triton runs these on a CPU)")

SCAN_CASES = ["odd_length_partial_chunk", "length_1_batch_1", "length_multiple_of_chunk",
              "one_chunk_longer_than_length", "grouped_A", "no_D_z_bias_softplus"]
GRADS = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"}


@pytest.fixture(scope="module")
def cases():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "triton_cases.py")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", SCAN_CASES)
def test_fp32_forward_and_every_gradient(cases, name):
    case = cases[name]
    expected = {"y"} | (GRADS if name != "no_D_z_bias_softplus" else {"du", "ddelta", "dA", "dB", "dC"})
    assert set(case["vs_float64"]) == expected
    for key, error in case["vs_float64"].items():
        assert error < 2e-6, f"{key} vs float64: {error:.2e}"
    for key, error in case["vs_torch"].items():
        assert error < 2e-6, f"{key} vs the torch backend: {error:.2e}"
    assert case["dtypes_kept"]


@pytest.mark.parametrize("name, tolerance", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_half_precision_inputs_keep_their_dtype_with_an_fp32_state(cases, name, tolerance):
    case = cases[name]
    assert case["dtypes_kept"]  # output and every gradient in the inputs' dtype
    for key, error in case["vs_float64"].items():
        assert error < tolerance, f"{key} vs float64: {error:.2e}"


@pytest.mark.parametrize("model", ["Mamba4Rec", "BiMamba4Rec"])
def test_models_train_the_same_on_triton_and_torch(cases, model):
    case = cases[f"model_{model}"]
    assert case["same_grad_names"] and len(case["grads"]) > 30  # same parameters, all reached
    assert case["loss"] < 1e-6
    for name, error in case["grads"].items():
        assert error < 1e-5, f"{name}: {error:.2e}"


def test_triton_on_a_cpu_without_the_interpreter_is_one_line():
    from recbole_mamba.errors import BackendError
    from recbole_mamba.ssm.backends import resolve_backend
    from recbole_mamba.ssm.scan_triton import interpreting

    if interpreting():
        pytest.skip("this process runs the kernels under TRITON_INTERPRET=1")
    with pytest.raises(BackendError) as error:
        resolve_backend("triton", "cpu")
    assert "CUDA device" in str(error.value) and "\n" not in str(error.value)
