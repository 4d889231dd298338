"""How well does t_iter = a + b * forward + c * context fit the real llama.cpp engine?

Runs ``sajax calibrate``'s default sweep (batch sizes x prompt lengths x output lengths) on the
llamacpp engine (SmolLM2-135M by default), fits (a, b, c) on all iterations, and reports:

- the in-sample fit error (RMSE, mean |relative error|, R^2, outliers left out);
- held-out error: leave one sweep point out, fit on the rest, predict the left-out point's
  total time (sum of its iterations), over every point;
- the same for the shipped profile ``cpu-smollm2-135m`` (no fitting), for comparison;
- decode-only and prefill-only per-token costs (separate fits), to show what one ``b`` hides.

    .venv/bin/python benchmarks/calibration_fit.py [--slots 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime
import platform

import numpy as np

from batch_runner.calibrate import (
    DEFAULT_SWEEP,
    fit_from_iteration_log,
    run_sweep,
    sweep_points,
)
from batch_runner.engines.llamacpp import LlamaCppEngine
from sajax.profiles import load_profile


def predict_ms(records, a, b, c):
    return sum(a + b * (r.decode_tokens + r.prefill_tokens) + c * r.context_tokens for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    engine = LlamaCppEngine(slots=args.slots, seed=args.seed)
    points = [p for p in sweep_points(*DEFAULT_SWEEP) if p.batch <= args.slots]
    per_point = run_sweep(engine, points, seed=args.seed, by_point=True)
    everything = [r for log in per_point for r in log]
    fit = fit_from_iteration_log(everything)
    shipped = load_profile("cpu-smollm2-135m")

    held_fit, held_shipped = [], []
    for k, log in enumerate(per_point):
        rest = [r for j, other in enumerate(per_point) if j != k for r in other]
        f = fit_from_iteration_log(rest)
        measured = 1000 * sum(r.seconds for r in log)
        held_fit.append(predict_ms(log, f.a_ms, f.b_ms, f.c_ms) / measured - 1)
        held_shipped.append(
            predict_ms(log, float(shipped.a_ms), float(shipped.b_ms), float(shipped.c_ms))
            / measured
            - 1
        )

    decode_only = [r for r in everything if r.prefill_tokens == 0]
    prefill_heavy = [r for r in everything if r.prefill_tokens >= 64]

    print(f"# calibration_fit  {datetime.datetime.now():%Y-%m-%d %H:%M}  {platform.node()}")
    print(f"points {len(points)}, iterations {len(everything)}, slots {args.slots}")
    print(
        f"fit: a={fit.a_ms:.3f} ms  b={fit.b_ms:.4f} ms/token  c={fit.c_ms:.6f} ms/ctx token  "
        f"RMSE {fit.rmse_ms:.2f} ms  mean|rel| {100 * fit.mean_abs_rel_error:.1f}%  "
        f"R^2 {fit.r2:.4f}  outliers {fit.outliers}"
    )
    for name, errs in (
        ("fitted (leave-one-point-out)", held_fit),
        ("shipped profile", held_shipped),
    ):
        e = np.abs(errs)
        print(
            f"per-point total time, {name}: mean |rel err| {100 * e.mean():.1f}%  "
            f"max {100 * e.max():.1f}%  mean signed {100 * np.mean(errs):+.1f}%"
        )
    if len(decode_only) >= 3:
        d = fit_from_iteration_log(decode_only, with_context=False)
        print(f"decode-only iterations: a={d.a_ms:.3f} ms  b={d.b_ms:.4f} ms/token (n={d.rows})")
    if len(prefill_heavy) >= 3:
        p = fit_from_iteration_log(prefill_heavy, with_context=False)
        print(f"prefill-heavy iterations: a={p.a_ms:.3f} ms  b={p.b_ms:.4f} ms/token (n={p.rows})")


if __name__ == "__main__":
    main()
