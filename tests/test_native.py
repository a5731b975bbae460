"""The C step (nram.native) against the PyTorch step, and how it is built, split and refused.

Both backends are also checked against the brute-force reference step in test_machine.py
(the ``step_backend`` fixture); here they are compared with each other where the reference
would be too slow: large batches that span several tiles and threads, and float32.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_machine import GATE_SETS, weights_from_logits

from nram import native
from nram.circuit import CircuitLayout
from nram.machine import choice_weights, constant_values, step_values
from nram.model import NRAM, MachineConfig


def step_and_gradients(layout, size, batch, dtype, seed=0):
    """A value-major step and the gradients of a random objective, on the current backend."""
    gen = torch.Generator().manual_seed(seed)
    memory = torch.softmax(3 * torch.randn(size, size, batch, generator=gen, dtype=dtype), 1).requires_grad_()
    registers = torch.softmax(3 * torch.randn(layout.num_registers, size, batch, generator=gen, dtype=dtype),
                              1).requires_grad_()
    logits = torch.randn(batch, layout.num_logits, generator=gen, dtype=dtype)
    weights = weights_from_logits(logits, layout).permute(2, 1, 0).contiguous().requires_grad_()
    new_memory, new_registers = step_values(memory, registers, weights, layout,
                                            constant_values(batch, size, dtype=dtype))
    objective = ((new_memory * torch.randn(new_memory.shape, generator=gen, dtype=dtype)).sum()
                 + (new_registers * torch.randn(new_registers.shape, generator=gen, dtype=dtype)).sum())
    return (new_memory, new_registers, *torch.autograd.grad(objective, (memory, registers, weights)))


def both_backends(monkeypatch, *args):
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("NRAM_NATIVE", switch)
        results.append(step_and_gradients(*args))
    return results


def test_a_c_compiler_on_path_gives_the_native_step():
    if not any(shutil.which(name) for name in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler on PATH")
    assert native.usable(torch.zeros(1)) and native.usable(torch.zeros(1, dtype=torch.float64))


def test_the_c_step_runs_by_default_and_infer_keeps_it_to_runs_without_gradients(monkeypatch):
    forward, calls = native.step_forward, []
    monkeypatch.setattr(native, "step_forward", lambda *args: calls.append(1) or forward(*args))
    monkeypatch.delenv("NRAM_NATIVE", raising=False)
    model = NRAM(MachineConfig(num_registers=2))
    memory0 = torch.randint(0, 5, (3, 5), generator=torch.Generator().manual_seed(0))
    model(memory0, 2).memories.sum().backward()
    assert len(calls) == 2
    monkeypatch.setenv("NRAM_NATIVE", "infer")
    model(memory0, 2).memories.sum().backward()
    assert len(calls) == 2
    with torch.no_grad():
        model(memory0, 2)
    assert len(calls) == 4


def test_an_unknown_nram_native_value_is_rejected_naming_the_choices(monkeypatch):
    monkeypatch.setenv("NRAM_NATIVE", "train")
    with pytest.raises(ValueError, match="NRAM_NATIVE must be one of 1, infer, 0, got 'train'"):
        native.usable(torch.zeros(1))


@pytest.mark.parametrize("gates", GATE_SETS)
@pytest.mark.parametrize("size,batch", [(2, 1), (5, 64), (10, 96), (10, 130), (33, 3)])  # 96: a tile and a half; 130: three tiles, the last of 2
def test_native_step_equals_the_pytorch_step_in_float64(gates, size, batch, monkeypatch):
    layout = CircuitLayout(3, gates) if gates else CircuitLayout(3)
    native_result, pytorch_result = both_backends(monkeypatch, layout, size, batch, torch.float64)
    for got, want in zip(native_result, pytorch_result):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size,batch", [(12, 100), (10, 96)])  # 10: a last, shorter block of values; 96: a
def test_native_step_equals_the_pytorch_step_in_float32(size, batch, monkeypatch):  # last tile of whole vectors
    native_result, pytorch_result = both_backends(monkeypatch, CircuitLayout(4), size, batch, torch.float32)
    for got, want in zip(native_result, pytorch_result):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_batch_split_across_threads_equals_one_call(monkeypatch):
    monkeypatch.setenv("NRAM_NATIVE", "1")
    batch = 2 * native.PARALLEL_MIN_BATCH + 3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = step_and_gradients(CircuitLayout(2), 6, batch, torch.float64)
        torch.set_num_threads(3)
        split = step_and_gradients(CircuitLayout(2), 6, batch, torch.float64)
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(split, single):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)


def test_no_working_compiler_warns_once_and_the_pytorch_step_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setenv("NRAM_CACHE_DIR", str(tmp_path))
    native.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="native CPU step is unavailable"):
            assert not native.usable(torch.zeros(1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not native.usable(torch.zeros(1))
            new_registers = step_and_gradients(CircuitLayout(2), 4, 3, torch.float32)[1]
        assert torch.allclose(new_registers.sum(1), torch.ones(()))
    finally:
        native.library.cache_clear()


def test_native_step_is_off_when_asked_and_for_other_devices_and_dtypes(monkeypatch):
    assert not native.usable(torch.zeros(1, device="meta"))
    assert not native.usable(torch.zeros(1, dtype=torch.float16))
    monkeypatch.setenv("NRAM_NATIVE", "0")
    assert not native.usable(torch.zeros(1))


def test_native_step_refuses_non_contiguous_tensors():
    layout = CircuitLayout(2)
    memory = torch.full((4, 3, 3), 1 / 3).permute(1, 2, 0)
    registers = torch.full((2, 3, 4), 1 / 3)
    weights = torch.zeros(layout.num_sources, layout.num_slots, 4)
    with pytest.raises(ValueError, match="contiguous"):
        native.step_forward(memory, registers, weights, layout)


def weights_and_gradient(layout, logits, grad_weights):
    logits = logits.clone().requires_grad_()
    weights = choice_weights(logits, layout.padding_index(), layout)
    return weights, torch.autograd.grad((weights * grad_weights).sum(), logits)[0]


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_native_choice_softmax_equals_the_padded_softmax(dtype, tolerance, monkeypatch):
    layout = CircuitLayout(3)
    gen = torch.Generator().manual_seed(0)
    logits = 8 * torch.randn(layout.num_logits, 130, generator=gen, dtype=dtype)
    logits = torch.cat([logits, torch.full_like(logits[:1], float("-inf"))])  # the blank row
    grad_weights = torch.randn(layout.num_sources, layout.num_slots, 130, generator=gen, dtype=dtype)
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("NRAM_NATIVE", switch)
        results.append(weights_and_gradient(layout, logits, grad_weights))
    for got, want in zip(*results):
        assert torch.allclose(got, want, rtol=0, atol=tolerance)


def test_native_choice_softmax_passes_gradcheck(monkeypatch):
    monkeypatch.setenv("NRAM_NATIVE", "1")
    layout = CircuitLayout(2, ("read", "add", "write"))
    logits = torch.randn(layout.num_logits + 1, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: choice_weights(z, layout.padding_index(), layout),
                                    (logits.requires_grad_(),))


def test_decisive_logits_give_exactly_one_hot_float32_weights():
    layout = CircuitLayout(2)
    logits = torch.zeros(layout.num_logits + 1, 4)
    logits[0] = 100.0  # slot 0 picks register 0 by a margin far past float32's exp range
    weights = choice_weights(logits, layout.padding_index(), layout)
    assert torch.equal(weights[:, 0], torch.eye(layout.num_sources)[0][:, None].expand(-1, 4))


def test_a_new_build_prunes_all_but_the_newest_cached_builds(monkeypatch, tmp_path):
    monkeypatch.setenv("NRAM_CACHE_DIR", str(tmp_path))
    stale = [tmp_path / f"nram_step_double_{i:016x}.so" for i in range(native.KEEP_BUILDS + 2)]
    for age, path in enumerate(stale):
        path.write_bytes(b"")
        os.utime(path, (1e9 - age, 1e9 - age))  # stale[0] is the newest
    other = tmp_path / "nram_step_float_0000000000000000.so"
    other.write_bytes(b"")
    native.library.cache_clear()
    try:
        assert native.library("double") is not None
    finally:
        native.library.cache_clear()
    kept = sorted(path.name for path in tmp_path.glob("nram_step_double_*.so"))
    built = [name for name in kept if name not in {path.name for path in stale}]
    assert len(built) == 1
    assert kept == sorted(built + [path.name for path in stale[:native.KEEP_BUILDS - 1]])
    assert other.exists()


def native_in_subprocess(cache: Path, **environment: str) -> subprocess.CompletedProcess:
    """A fresh process asks for the double-precision library (one whose build nothing has mapped yet)."""
    code = "from nram import native; print(native.library('double') is not None)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NRAM_CACHE_DIR": str(cache), **environment})


def test_a_cache_directory_others_can_write_is_never_loaded_from(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("NRAM_CACHE_DIR", str(shared))
    native.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="not private to this user"):
            assert native.library("double") is None
    finally:
        native.library.cache_clear()
    assert not list(shared.glob("*.so"))


def test_a_truncated_build_is_detected_rebuilt_and_loaded(tmp_path):
    cache = tmp_path / "cache"
    first = native_in_subprocess(cache)
    assert first.stdout.strip() == "True", first.stderr
    (build,) = cache.glob("nram_step_double_*.so")
    build.write_bytes(build.read_bytes()[:4096])  # truncated: mapping it would raise SIGBUS
    again = native_in_subprocess(cache)
    assert again.returncode == 0 and again.stdout.strip() == "True", again.stderr
    assert "damaged" in again.stderr
    assert build.with_suffix(".sha256").read_text() == hashlib.sha256(build.read_bytes()).hexdigest()


def test_a_compiler_that_hangs_is_given_up_on(monkeypatch, tmp_path):
    hanging = tmp_path / "hanging-cc"
    hanging.write_text("#!/bin/sh\nsleep 60\n")
    hanging.chmod(0o755)
    monkeypatch.setenv("CC", str(hanging))
    monkeypatch.setenv("NRAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "COMPILE_TIMEOUT_S", 1)
    native.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="timed out"):
            assert native.library("double") is None
    finally:
        native.library.cache_clear()


def test_a_compiler_that_refuses_the_first_flags_builds_from_the_next_once(monkeypatch, tmp_path):
    """Built from a later flag set, the cached build is found without trying the first set again."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler on PATH")
    calls = tmp_path / "calls"
    picky = tmp_path / "picky-cc"
    picky.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                     f'case "$*" in *-mprefer-vector-width=512*) exit 1;; esac\nexec {compiler} "$@"\n')
    picky.chmod(0o755)
    monkeypatch.setenv("CC", str(picky))
    monkeypatch.setenv("NRAM_CACHE_DIR", str(tmp_path / "cache"))
    try:
        for _ in range(2):
            native.library.cache_clear()
            assert native.library("double") is not None
    finally:
        native.library.cache_clear()
    tried = calls.read_text().splitlines()
    assert len(tried) == 2 and "-mprefer-vector-width=512" in tried[0] and "-mprefer" not in tried[1]


def test_memory_on_another_device_than_the_model_is_an_error_not_a_crash():
    model = NRAM(MachineConfig()).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="memory0 is on meta but the model on cpu"):
        model.output_memory(torch.zeros(2, 6, dtype=torch.long, device="meta"), 3)
