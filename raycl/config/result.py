"""What a trial reports: the fields of `result.json`, and from them the names a sweep may optimise.

Three nested records, each the part of the one before that travels further:
- `StageRecord`: the stage matrix and its per-stage views (MLflow's `stage_matrix.json`);
- `TrialSummary`: that plus every scalar metric (what Tune, Optuna and MLflow receive);
- `TrialResult`: that plus curves, timings, drift and the config (`result.json`).
A field annotated `Reported` is a metric that objectives and constraints may name; benchmark metrics
(`bench_<task>`, `bench_<task>_delta`, `bench_max_drop`) join them under their prefix.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self


class _Reported:
    """Marks a scalar field of `TrialSummary` as a metric a sweep may optimise or constrain."""


Reported = Annotated[float, _Reported()]
ReportedWhereKnown = Annotated[float | None, _Reported()]  # None where it does not apply
BENCHMARK_PREFIX = "bench_"


class StageRecord(BaseModel):
    """Held-out losses by stage, as MLflow keeps them beside each child run."""

    stage_names: list[str]
    stage_matrix: list[list[float]] = Field(
        description="R[i][j]: held-out loss on stage j after stage i; row 0 before training"
    )
    retention_losses: list[float] = Field(description="held-out loss on the original distribution after each row")
    stage_forgetting: list[float] = Field(description="per stage: final loss minus the best loss after training it")


class TrialSummary(StageRecord):
    """A finished trial as the sweep sees it: its reported metrics and its stage record.

    Extra fields are benchmark metrics, named `bench_...`.
    """

    model_config = ConfigDict(extra="allow")

    learning: Reported = Field(description="1 - ppl_after / ppl_before on held-out new data (higher is better)")
    forgetting: Reported = Field(description="loss_after - loss_before on held-out original data, in nats")
    learning_nats: Reported = Field(description="loss_before - loss_after on held-out new data, in nats")
    base_loss_before: Reported = Field(
        description="held-out loss on the original distribution before the stream (L_before)"
    )
    base_loss_after: Reported = Field(
        description="held-out loss on the original distribution after the stream (L_after)"
    )
    forgetting_fraction: Reported = Field(
        description="(L_after - L_before) / (L_init - L_before) on held-out "
        "original data: the share of pretraining progress undone"
    )
    bwt: Reported = Field(description="backward transfer: mean of R[j+1][j] - R[T][j]")
    fwt: Reported = Field(description="forward transfer: mean of R[0][j] - R[j][j]")
    average_final_loss: Reported = Field(description="mean held-out loss over the stages after the last one")
    drift_spread: Reported = Field(description="spread across layers of the relative weight drift")
    tokens_per_s: Reported
    eval_time_fraction: Reported = Field(description="share of the trial's wall time spent evaluating")
    replay_generation_fraction: Reported = Field(description="share of wall time spent sampling self-generated replay")
    peak_memory_bytes: Reported
    optimizer_state_bytes: Reported
    train_peak_bytes: Reported = Field(
        description="peak memory of one training step: weights, gradients, optimizer state and activations"
    )
    num_params: Reported = Field(description="the base model's parameters, before any adapter")
    num_params_non_embedding: Reported = Field(
        description="the base model's parameters outside its token embeddings and output head"
    )
    wall_time_s: Reported
    train_tokens: Reported = Field(description="tokens trained on, replay rows included")
    base_pretrain_tokens: ReportedWhereKnown = Field(
        default=None, description="tokens the base model was pretrained on (ladder models)"
    )
    base_pretrain_loss: ReportedWhereKnown = Field(
        default=None, description="the base model's final pretraining loss (ladder models)"
    )
    new_tokens: Reported = Field(description="tokens of new data trained on")
    lr: ReportedWhereKnown = Field(
        default=None,
        description="the learning rate trained at: train.lr, or the LR range test's for train.lr_at_loss_drop",
    )
    adaptation_steps_mean: ReportedWhereKnown = Field(
        default=None,
        description="online trials: mean over stages of adaptation_steps; None where a stage's loss did not fall",
    )

    @model_validator(mode="after")
    def _extras_are_benchmarks(self) -> TrialSummary:
        for name in self.model_extra or {}:
            if not name.startswith(BENCHMARK_PREFIX):
                raise ValueError(f"{name}: not a field of a trial result")
        return self

    @classmethod
    def of(cls, report: dict[str, Any]) -> Self:
        """The summary inside a larger record (a Tune result, a trial result), other keys ignored."""
        return cls.model_validate(
            {k: v for k, v in report.items() if k in cls.model_fields or k.startswith(BENCHMARK_PREFIX)}
        )

    def metrics(self) -> dict[str, float]:
        """Every reported scalar metric by name, benchmark metrics included."""
        reported = {name: float(getattr(self, name)) for name in REPORTED_METRICS if getattr(self, name) is not None}
        return reported | {name: float(value) for name, value in (self.model_extra or {}).items()}

    def stage_record(self) -> StageRecord:
        return StageRecord.model_validate(self.model_dump(include=set(StageRecord.model_fields)))


class TrialResult(TrialSummary):
    """Everything a trial writes to `result.json`."""

    train_time_s: float
    eval_time_s: float
    stage_time_s: list[float]
    benchmarks: list[dict[str, float]] = Field(description="lm-eval scores at step 0 and after each stage")
    curves: list[dict[str, Any]] = Field(description="quick evaluations between stage ends")
    data_summary: str | None = Field(description="rows read and skipped, for a real-data stream")
    config: dict[str, Any] = Field(description="the trial config, as JSON")
    drift: dict[str, float] = Field(description="relative weight drift of each 2-D weight")
    method_info: dict[str, Any]
    dtype: Literal["fp32", "bf16"] = Field(default="fp32", description="train.dtype as resolved: bf16 autocast or fp32")
    device: str = Field(default="cpu", description="where the trial trained: cpu, cuda")
    cpu_threads: int | None = Field(default=None, description="torch threads (train.cpu_threads as resolved)")
    train_memory: dict[str, int] = Field(description="train_peak_bytes by part, measured on one dedicated step")
    resumed_after_stage: int
    stopped: str | None = Field(
        default=None,
        description="why the stream stopped before its last stage (train.stop_when); None: it ran every stage",
    )
    adaptation_steps: list[int | None] | None = Field(
        default=None,
        description="online trials, per stage: steps until its held-out loss "
        "fell by train.adaptation_share of the stage's whole drop",
    )
    lr_range: dict[str, Any] | None = Field(
        default=None,
        description="train.lr_at_loss_drop trials: the drop asked, the LR it resolved to, and the range test's record",
    )

    def summary(self) -> TrialSummary:
        return TrialSummary.of(self.model_dump())


REPORTED_METRICS: tuple[str, ...] = tuple(
    name for name, field in TrialSummary.model_fields.items() if any(isinstance(m, _Reported) for m in field.metadata)
)


def is_reported_metric(name: str) -> bool:
    """Whether a trial's summary carries `name` as a scalar metric the sweep records."""
    return name in REPORTED_METRICS or name.startswith(BENCHMARK_PREFIX)


class _Measured:
    """Marks a field of `EvalRecord` as a metric the evaluation measured (not where or what kind it was)."""


Measured = Annotated[float, _Measured()]
MeasuredAtStageEnds = Annotated[float | None, _Measured()]  # None in a quick evaluation


class EvalRecord(BaseModel):
    """One evaluation of a running trial, as it reports it (to Tune, and from there to MLflow's `eval/` curves,
    early stopping and the live table): a quick one between stage ends, or the full one at a stage end (and at
    step 0), which adds learning, forgetting and the benchmark scores (extra fields, `bench_<task>`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    stage: int = Field(description="stages finished")
    step: int = Field(description="optimizer steps taken over the whole stream")
    new_loss: Measured = Field(description="mean held-out loss over the stages' new data")
    base_loss: Measured = Field(description="held-out loss on the original distribution")
    full_eval: bool = Field(description="a stage end's full evaluation (or step 0's), not a quick one")
    learning: MeasuredAtStageEnds = Field(default=None, description="full evaluations: the trial's learning so far")
    forgetting: MeasuredAtStageEnds = Field(default=None, description="full evaluations: the trial's forgetting so far")

    @model_validator(mode="after")
    def _extras_are_benchmarks(self) -> EvalRecord:
        for name in self.model_extra or {}:
            if not name.startswith(BENCHMARK_PREFIX):
                raise ValueError(f"{name}: not a field of an evaluation record")
        return self

    def metrics(self) -> dict[str, float]:
        """What the evaluation measured, by name: the losses, and at full evaluations learning, forgetting and
        benchmark scores."""
        measured = self.to_report().items()
        return {name: v for name, v in measured if name in MEASURED_AT_STAGE_ENDS or name.startswith(BENCHMARK_PREFIX)}

    def to_report(self) -> dict[str, float]:
        """Every field as a float (Tune's results and MLflow's metrics are numbers), less those a quick one lacks."""
        return {name: float(value) for name, value in self.model_dump(exclude_none=True).items()}

    @classmethod
    def in_report(cls, report: dict[str, Any]) -> EvalRecord | None:
        """The evaluation record inside a Tune result (other keys ignored); None for a result that is no evaluation."""
        if not all(name in report for name, field in cls.model_fields.items() if field.is_required()):
            return None
        fields = {k: v for k, v in report.items() if k in cls.model_fields or k.startswith(BENCHMARK_PREFIX)}
        return cls.model_validate(fields)


# What every stage end measures (beside `bench_<task>` scores): the metrics `train.stop_when` may name.
MEASURED_AT_STAGE_ENDS: tuple[str, ...] = tuple(
    name for name, field in EvalRecord.model_fields.items() if any(isinstance(m, _Measured) for m in field.metadata)
)


class Divergence(BaseModel):
    """A trial stopped because its training loss diverged: what `result.json` holds instead of a result."""

    diverged: Literal[True] = True
    step: int = Field(description="the step whose loss diverged, counted from 1 over the whole stream")
    stage: int = Field(description="the stage it was in, counted from 1")
    loss: float | None = Field(description="that step's loss; None when NaN or infinite")
    first_loss: float | None = Field(description="the trial's first step's loss, the reference of the bound")
    bound: float | None = Field(description="divergence_factor x first_loss")
    uniform_loss: float | None = Field(
        default=None,
        description="ln(vocab), a uniform guess's loss, when the loss stayed above it for "
        "train.divergence_above_uniform_steps steps",
    )
    config: dict[str, Any] = Field(description="the trial config, as JSON")

    def reason(self) -> str:
        """One line: where it diverged and why."""
        if self.loss is None:
            why = "the loss is not finite"
        elif self.uniform_loss is not None:
            why = (
                f"the loss {self.loss:.4g} stayed above {self.uniform_loss:.4g}, a uniform guess's (ln vocab), "
                "for train.divergence_above_uniform_steps steps after it was below"
            )
        else:
            why = (
                f"the loss {self.loss:.4g} is above {self.bound:.4g} "
                f"(train.divergence_factor x the first step's {self.first_loss:.4g})"
            )
        return f"diverged at step {self.step} (stage {self.stage}): {why}"


class TrialDiverged(RuntimeError):
    """Raised by a trial whose loss diverged, after its `Divergence` was written to result.json."""

    def __init__(self, divergence: Divergence):
        super().__init__(divergence)
        self.divergence = divergence

    def __str__(self) -> str:
        return self.divergence.reason()
