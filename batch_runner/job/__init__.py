"""One batch job: read -> plan -> execute -> write, crash-safe and resumable.

    summary = run_job(JobConfig(input="requests.parquet", out="results.parquet", engine="sim"))

Steps:
  1. read and validate the request file (``batch_runner.requests.read_requests``, SLO presets
     from ``slo_config`` at ``slo_scale``);
  2. open the checkpoint ``OUT.parts`` (``--resume``: skip ids already done; the input file
     must be the one the checkpoint was made from);
  3. plan the rows not yet done (``make_plan``: order + in-flight cap + predicted e2e, and the
     planner's predicted attainment of that plan and of FCFS for the summary). Output lengths
     for planning: ``max_new_tokens`` under ignore_eos, else ``output_tokens_hint``, else the
     task's median from ``--length-predictor`` (or the ``--profile`` file's
     ``[output_lengths.<task>]`` tables, as ``sajax calibrate --history`` writes them), capped
     at ``max_new_tokens``, else ``max_new_tokens``;
  4. execute the plan on the engine, checkpointing finished rows every K rows / T seconds;
  5. write ``OUT`` (every input row once, input order), the summary (``--summary-json``) and the
     report (``--report``), then delete ``OUT.parts``.

Exit codes (click exceptions): 2 a user error (bad input, checkpoint of another file, the
results file could not be written: ``batch_runner.errors``), 3 the engine died, 4 the results
file is written but the summary or the report is not (``outputs.ReportWriteError``: the message
says which and prints the ``sajax report`` command that writes them), 130 SIGINT, 143 SIGTERM.
After a failed results write, 3, 130 and 143 the finished rows are checkpointed, and the same
command with ``--resume`` continues the job (the message prints it).

Times of a resumed job: each run measures its rows from its own start (the engine's clock when
that run's execution began), as if the rows left were a new offline bat

Modules: ``config`` (JobConfig, JobPlan, the exit-code exceptions), ``plan_step`` (step 3:
output lengths, the problem, ``make_plan``), ``engines`` (``make_engine``, the engine
requests), ``run_step`` (``run_job`` and the execution), ``stops`` (signals, the resume
command), ``outputs`` (the summary JSON and the report).
"""

from batch_runner.job.config import (
    EngineDied,
    JobConfig,
    JobInterrupted,
    JobPlan,
    OutputWriteError,
)
from batch_runner.job.engines import AUTO_ENGINES, _engine_requests, make_engine
from batch_runner.job.outputs import EXIT_RESULTS_ONLY, ReportWriteError
from batch_runner.job.plan_step import (
    OBJECTIVES,
    POLICY_HEURISTICS,
    OutputLengths,
    _predicted_output_tokens,
    make_plan,
)
from batch_runner.job.run_step import run_job
from batch_runner.job.stops import resume_command

__all__ = [
    "AUTO_ENGINES",
    "EXIT_RESULTS_ONLY",
    "OBJECTIVES",
    "POLICY_HEURISTICS",
    "EngineDied",
    "JobConfig",
    "JobInterrupted",
    "JobPlan",
    "OutputLengths",
    "OutputWriteError",
    "ReportWriteError",
    "_engine_requests",
    "_predicted_output_tokens",
    "make_engine",
    "make_plan",
    "resume_command",
    "run_job",
]
