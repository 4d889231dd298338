"""make_problem (buckets, padding, missing SLOs, validation) and engine profiles."""

import numpy as np
import pytest

from sajax.engine_model import engine_model_to_dict, make_engine_model
from sajax.problem import bucket_size, make_problem, n_requests
from sajax.profiles import available_profiles, load_profile, read_profile


def test_bucket_sizes_are_few_and_tight():
    sizes = {bucket_size(n) for n in range(1, 5000)}
    assert min(sizes) == 64 and len(sizes) < 40
    for n in (65, 100, 1000, 1025, 4999):
        b = bucket_size(n)
        assert n <= b < 1.25 * n + 1


def test_padding_rows_and_missing_slos():
    p = make_problem([12, 300], [64, 20], [2000, float("nan")], [None, 5.0])
    assert len(p.mask) == 64 and n_requests(p) == 2
    assert p.input_len.dtype == np.int32 and p.slo_e2e_ms.dtype == np.float32
    np.testing.assert_array_equal(p.slo_e2e_ms[:2], [2000, np.inf])
    np.testing.assert_array_equal(p.slo_ttft_ms[:2], [np.inf, 5.0])
    assert np.all(np.isinf(p.slo_tpot_ms))
    # padding: no SLO, weight 0, lengths 1
    assert not p.mask[2:].any() and np.all(p.weight[2:] == 0) and np.all(p.output_len[2:] == 1)
    assert len(make_problem([1] * 70, [1] * 70, size=100).mask) == 100


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_len=[0, 3], output_len=[1, 1]), "input_len"),
        (dict(input_len=[3, 3], output_len=[1, 2.5]), "output_len"),
        (dict(input_len=[3], output_len=[1, 1]), "rows"),
        (dict(input_len=[3, 3], output_len=[1, 1], slo_e2e_ms=[1, -5]), "slo_e2e_ms.*1"),
        (dict(input_len=[3], output_len=[1], weight=[0]), "weight"),
        (dict(input_len=[3, 4], output_len=[1, 1], size=1), "size"),
    ],
)
def test_bad_input_is_refused_with_the_column(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_problem(**kwargs)


def test_shipped_profiles_load():
    assert {"gpu-7b-a100", "cpu-smollm2-135m"} <= set(available_profiles())
    gpu = load_profile("gpu-7b-a100")
    assert int(gpu.slots) == 128 and int(gpu.kv_capacity) > 0
    cpu = load_profile("cpu-smollm2-135m")
    # NOTES-engines.md: one sequence decodes at ~90-100 tok/s; a 900-token prompt ~3.3 s
    step = float(cpu.a_ms + cpu.b_ms + cpu.c_ms * 100)
    assert 90 <= 1000 / step <= 100
    assert engine_model_to_dict(load_profile("default")) == engine_model_to_dict(cpu)
    assert read_profile("gpu-7b-a100")["engine"] == "turbomind"


def test_profile_from_path_and_errors(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[model]\nslots = 2\ntoken_budget = 16\na_ms = 1.0\nb_ms = 0.5\n")
    m = load_profile(str(path))
    assert engine_model_to_dict(m) == engine_model_to_dict(make_engine_model(2, 16, 1.0, 0.5))
    path.write_text("[model]\nslots = 0\ntoken_budget = 16\na_ms = 1.0\nb_ms = 0.5\n")
    with pytest.raises(ValueError, match="slots"):
        load_profile(path)
    path.write_text("[model]\nslots = 2\ntoken_budget = 16\na_ms = 1.0\nb_ms = 0.5\nd_ms = 1\n")
    assert float(load_profile(path).d_ms) == 1.0  # the cost per sampled row, optional
    path.write_text("[model]\nslots = 2\ntoken_budget = 16\na_ms = 1.0\nb_ms = 0.5\ne_ms = 1\n")
    with pytest.raises(ValueError, match="unknown"):
        load_profile(path)
    with pytest.raises(ValueError, match="no engine profile"):
        load_profile("no-such-profile")
