"""The phase strategy without a process: the planner is fed the results a scripted target would
give and says what to do next (see loadgen/planner.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scalefinder.core.errors import ScalefinderError
from scalefinder.loadgen.plan import beyond_rates, ramp_rates, replay_rates
from scalefinder.loadgen.planner import (CapacityFound, Done, EndRun, PhasePlanner, Recover, RunStep, ScaleTo,
                                         StartPhase, StepAbort, StepResult, Warn)
from scalefinder.loadgen.profile import Ramp

ABORT_REASON = "errors at 100% over the last 2 s (abort threshold 50%)"


def ramp(**settings) -> Ramp:
    """10, 20, ... 100 req/s at n tasks unless told otherwise."""
    return Ramp(**{"start_rps": 10, "step_rps": 10, "max_rps": 100, **settings})


@dataclass
class Target:
    """A service that carries ``per_task_rps`` per task within the SLO and breaks it above; the
    outcome of a step can be set per (phase, rate): good, breach, invalid, crash or abort."""

    per_task_rps: float
    outcomes: dict[tuple[str, float], str] = field(default_factory=dict)

    def outcome(self, step: RunStep) -> str:
        default = "good" if step.offered_rps <= self.per_task_rps * step.tasks else "breach"
        return self.outcomes.get((step.phase, step.offered_rps), default)


@dataclass
class Run:
    """Everything the planner asked for (and what it said after each abort), in order."""

    actions: list = field(default_factory=list)

    def steps(self, phase: str | None = None) -> list[float]:
        return [a.offered_rps for a in self.actions if isinstance(a, RunStep) and phase in (None, a.phase)]

    def step_phases(self) -> list[str]:
        return [a.phase for a in self.actions if isinstance(a, RunStep)]

    @property
    def phases(self) -> list[str]:
        return [a.name for a in self.actions if isinstance(a, StartPhase)]

    @property
    def warnings(self) -> list[str]:
        return [a.message for a in self.actions if isinstance(a, Warn)]

    @property
    def verdicts(self) -> list:
        return [a for a in self.actions if isinstance(a, (Recover, EndRun))]

    @property
    def end(self):
        return self.actions[-1]

    @property
    def capacity_rps(self) -> float | None:
        found = [a.capacity_rps for a in self.actions if isinstance(a, CapacityFound)]
        return found[0] if found else None


def drive(planner: PhasePlanner, target: Target) -> Run:
    """What the experiment does, without the engine: each step's result comes from ``target``; an
    aborted step is reported to ``on_abort`` while it ends, and an EndRun ends the run."""
    run = Run()
    step_id = 0
    while True:
        action = planner.next_action()
        run.actions.append(action)
        if isinstance(action, Done):
            return run
        if not isinstance(action, RunStep):
            continue
        outcome = target.outcome(action)
        if outcome == "abort":
            verdict = planner.on_abort(StepAbort(step_id, action.phase, action.offered_rps, ABORT_REASON))
            run.actions.append(verdict)
            if isinstance(verdict, EndRun):
                return run
        planner.record(StepResult(
            step_id=step_id, phase=action.phase, tasks=action.tasks, offered_rps=action.offered_rps,
            slo_met=outcome in ("good", "crash"), valid=outcome != "invalid", aborted=outcome == "abort",
            crashed=outcome == "crash", invalid_reason="the load generator used 90% of a core"
            if outcome == "invalid" else None))
        step_id += 1


# -- ramp and refine ------------------------------------------------------------------------------

def test_the_ramp_stops_at_the_first_breach_and_the_refinement_bisects_to_the_tolerance():
    run = drive(PhasePlanner(ramp(beyond=False), tasks=2), Target(per_task_rps=22.5))  # capacity 45 at 2 tasks
    assert run.steps("ramp") == [10, 20, 30, 40, 50]
    assert run.steps("refine") == [45, 47.5, 46.25]  # 45 good; then bad above until within 5% of 45
    assert run.capacity_rps == 45
    assert run.phases == ["ramp", "refine", "replay"]
    assert [a for a in run.actions if isinstance(a, ScaleTo)] == [ScaleTo(4)]
    assert run.end == Done("every phase is over") and run.warnings == []


def test_refinement_ends_within_the_tolerance_of_the_capacity_found():
    for capacity in (13.0, 37.3, 58.9, 91.0):
        for tolerance in (2.0, 5.0, 20.0):
            planner = PhasePlanner(ramp(refine_tolerance_pct=tolerance, beyond=False), tasks=1)
            run = drive(planner, Target(per_task_rps=capacity))
            bad = min(r for r in run.steps("ramp") + run.steps("refine") if r > capacity)
            assert run.capacity_rps <= capacity < bad
            assert bad - run.capacity_rps <= run.capacity_rps * tolerance / 100


def test_ramp_and_refine_steps_confirm_a_failure_the_phases_at_2n_do_not():
    run = drive(PhasePlanner(ramp(), tasks=1), Target(per_task_rps=45))
    confirming = {a.phase: a.confirm for a in run.actions if isinstance(a, RunStep)}
    assert confirming == {"ramp": True, "refine": True, "replay": False, "beyond": False}
    run = drive(PhasePlanner(ramp(confirm_breach=False), tasks=1), Target(per_task_rps=45))
    assert not any(a.confirm for a in run.actions if isinstance(a, RunStep))


def test_without_refinement_or_with_a_breach_already_within_the_tolerance_no_refine_phase_starts():
    run = drive(PhasePlanner(ramp(refine=False, beyond=False), tasks=1), Target(per_task_rps=45))
    assert run.steps("refine") == [] and "refine" not in run.phases and run.capacity_rps == 40
    # 100 and 103 are within 5% of each other: nothing to bisect
    run = drive(PhasePlanner(ramp(start_rps=100, step_rps=3, max_rps=130, beyond=False), tasks=1),
                Target(per_task_rps=101))
    assert run.steps("ramp") == [100, 103] and "refine" not in run.phases and run.capacity_rps == 100


def test_no_breach_up_to_max_rps_says_so_and_goes_on_from_max_rps():
    run = drive(PhasePlanner(ramp(), tasks=2), Target(per_task_rps=1000))
    assert run.steps("ramp") == ramp_rates(ramp()) and run.steps("refine") == []
    assert run.warnings == ["the SLO held up to max_rps (100 req/s); the capacity is at least that: raise "
                            "ramp.max_rps to find it"]
    assert run.capacity_rps == 100
    assert run.steps("beyond") == beyond_rates(100, ramp()) and max(run.steps("beyond")) <= 200  # 2 x max_rps


def test_the_slo_not_met_at_the_first_rate_ends_the_plan_before_anything_is_scaled():
    run = drive(PhasePlanner(ramp(), tasks=1), Target(per_task_rps=5))
    assert run.steps() == [10] and run.phases == ["ramp"]
    assert not any(isinstance(a, (ScaleTo, CapacityFound)) for a in run.actions)
    assert run.warnings == ["the SLO was not met even at 10 req/s; lower ramp.start_rps"]
    assert run.end == Done("no rate met the SLO")


def test_a_crash_ends_the_ramp_as_its_breach_even_within_the_slo():
    run = drive(PhasePlanner(ramp(beyond=False), tasks=1), Target(45, {("ramp", 30): "crash"}))
    assert run.steps("ramp") == [10, 20, 30]
    assert run.warnings == ["tasks crashed at 30 req/s: the ramp stopped there"]
    assert run.steps("refine") == [25, 27.5, 28.75] and run.capacity_rps == 28.75


# -- unknown (invalid) steps ------------------------------------------------------------------------

def test_an_invalid_ramp_step_ends_the_ramp_with_a_lower_bound_and_no_refinement():
    run = drive(PhasePlanner(ramp(), tasks=1), Target(45, {("ramp", 30): "invalid"}))
    assert run.steps("ramp") == [10, 20, 30] and run.steps("refine") == []
    assert run.warnings == ["step 2 at 30 req/s is invalid (the load generator used 90% of a core); the ramp "
                            "stopped there, so the capacity found is only a lower bound"]
    assert run.capacity_rps == 20 and run.phases == ["ramp", "replay", "beyond"]


def test_an_invalid_refine_step_is_a_bad_rate_and_an_invalid_beyond_step_ends_the_phase():
    target = Target(45, {("refine", 45): "invalid"})
    run = drive(PhasePlanner(ramp(), tasks=1), target)
    assert run.steps("refine")[0] == 45 and all(rate < 45 for rate in run.steps("refine")[1:])
    first_beyond = beyond_rates(run.capacity_rps, ramp())[0]
    target.outcomes[("beyond", first_beyond)] = "invalid"
    run = drive(PhasePlanner(ramp(), tasks=1), target)
    assert run.steps("beyond") == [first_beyond] and run.end == Done("every phase is over")


def test_the_beyond_phase_climbs_until_the_slo_breaks():
    run = drive(PhasePlanner(ramp(), tasks=1), Target(per_task_rps=45))  # 90 req/s at 2 tasks
    beyond = run.steps("beyond")
    assert beyond == beyond_rates(45, ramp())[:4] == [54.05, 64.92, 77.98, 93.66]  # the last breaks the SLO
    assert {a.tasks for a in run.actions if isinstance(a, RunStep) and a.phase == "beyond"} == {2}


# -- the replay at 2n ---------------------------------------------------------------------------------

def test_the_replay_offers_replay_steps_earlier_good_rates_at_2n_up_to_the_capacity():
    run = drive(PhasePlanner(ramp(beyond=False), tasks=3), Target(per_task_rps=15))  # capacity 45 at 3 tasks
    good = [10, 20, 30, 40, 45]
    assert run.steps("replay") == replay_rates(good, 45, 4) == [10, 20, 40, 45]
    assert {a.tasks for a in run.actions if isinstance(a, RunStep) and a.phase == "replay"} == {6}
    run = drive(PhasePlanner(ramp(replay_steps=6, beyond=False), tasks=1), Target(per_task_rps=1000))
    assert len(run.steps("replay")) >= 6 and max(run.steps("replay")) == 100
    # fewer earlier rates than replay_steps: fractions of the capacity fill the gap
    run = drive(PhasePlanner(ramp(beyond=False), tasks=1), Target(per_task_rps=20))
    assert run.capacity_rps == 20 and run.steps("replay") == [5, 10, 15, 20]


# -- aborts ---------------------------------------------------------------------------------------

def test_an_abort_in_the_ramp_is_its_first_breach_and_the_refinement_stays_below_it():
    run = drive(PhasePlanner(ramp(), tasks=1), Target(45, {("ramp", 40): "abort"}))
    assert run.steps("ramp") == [10, 20, 30, 40]
    assert run.verdicts == [Recover(resume_phase=None)]  # the abort ended the ramp: nothing to resume
    assert run.steps("refine") and all(30 < rate < 40 for rate in run.steps("refine"))
    assert run.phases == ["ramp", "refine", "replay", "beyond"] and run.end == Done("every phase is over")


def test_an_abort_in_the_refinement_is_a_bad_rate_and_the_refinement_goes_on():
    run = drive(PhasePlanner(ramp(), tasks=1), Target(45, {("refine", 45): "abort"}))
    assert run.verdicts == [Recover(resume_phase="refine")]
    assert run.steps("refine")[0] == 45 and all(40 < rate < 45 for rate in run.steps("refine")[1:])
    assert run.capacity_rps < 45


def test_an_abort_in_the_replay_is_a_warning_and_the_next_rate_is_replayed():
    planner = PhasePlanner(ramp(beyond=False), tasks=1)
    run = drive(planner, Target(45, {("replay", 20): "abort"}))
    assert run.verdicts == [Recover(resume_phase="replay")]
    assert run.steps("replay") == [10, 20, 40, 45]
    aborted_step = len(run.steps()) - 3
    assert run.warnings == [f"step {aborted_step} of the replay at 20 req/s and 2 tasks was aborted, below the "
                            "capacity found with fewer tasks; the target recovered and the replay went on"]


def test_an_abort_in_the_beyond_phase_ends_it():
    first = beyond_rates(45, ramp())[0]
    run = drive(PhasePlanner(ramp(), tasks=1), Target(45, {("beyond", first): "abort"}))  # 2 tasks carry 90
    assert run.steps("beyond") == [first] and run.verdicts == [Recover(resume_phase="beyond")]
    assert run.end == Done("every phase is over")


def test_an_abort_at_the_first_rate_of_the_ramp_ends_the_run():
    run = drive(PhasePlanner(ramp(), tasks=1), Target(45, {("ramp", 10): "abort"}))
    assert run.verdicts == [EndRun(f"{ABORT_REASON}, at the ramp's first rate (10 req/s): there is no lower rate "
                                   "to go on from; lower ramp.start_rps")]
    # once a ramp rate met the SLO, the first-rate rule no longer applies
    planner = PhasePlanner(ramp(), tasks=1)
    run = drive(planner, Target(45, {("ramp", 20): "abort"}))
    assert run.verdicts == [Recover(resume_phase=None)] and planner.aborts == 1


def test_abort_run_ends_the_run_at_the_first_abort_without_counting_it():
    planner = PhasePlanner(ramp(abort="run"), tasks=1)
    run = drive(planner, Target(45, {("ramp", 30): "abort"}))
    assert run.verdicts == [EndRun(ABORT_REASON, whole_run=True)]
    assert planner.aborts == 0 and planner.recoveries_allowed == 0
    assert PhasePlanner(ramp(max_aborts=2), tasks=1).recoveries_allowed == 2


def test_once_the_abort_budget_is_spent_no_rate_at_or_above_the_lowest_aborted_one_is_offered():
    # max_aborts = 2: the ramp aborts at 50, then the replay at 20 (at 2n, unexpectedly)
    planner = PhasePlanner(ramp(max_aborts=2), tasks=1)
    run = drive(planner, Target(45, {("ramp", 50): "abort", ("replay", 20): "abort"}))
    assert run.verdicts == [Recover(resume_phase=None), Recover(resume_phase="replay")]
    assert planner.aborts == 2 and planner.lowest_aborted_rps == 20
    assert run.steps("replay") == [10, 20]  # 40 and 45 lie above the lowest aborted rate
    edge = "2 step(s) were aborted (ramp.max_aborts = 2), so the run stays below 20 req/s, the lowest rate that aborted"
    assert f"the replay at 40 req/s was skipped: {edge}" in run.warnings
    assert f"the replay at 45 req/s was skipped: {edge}" in run.warnings
    first_beyond = beyond_rates(run.capacity_rps, ramp())[0]
    assert run.steps("beyond") == [] and run.warnings[-1] == f"the beyond phase stopped before {first_beyond:g} " \
                                                             f"req/s: {edge}"
    assert planner.past_the_edge(20) and planner.past_the_edge(25) and not planner.past_the_edge(19.99)


def test_with_budget_left_the_run_goes_past_the_lowest_aborted_rate():
    planner = PhasePlanner(ramp(max_aborts=3), tasks=1)
    run = drive(planner, Target(45, {("ramp", 50): "abort"}))
    assert not planner.past_the_edge(60) and max(run.steps("beyond")) > 50


def test_one_abort_more_than_max_aborts_ends_the_run():
    # the ramp breaks the SLO at 50 without an abort; the refinement's first step aborts
    planner = PhasePlanner(ramp(max_aborts=1), tasks=1)
    run = drive(planner, Target(45, {("refine", 45): "abort", ("replay", 20): "abort"}))
    assert run.verdicts[0] == Recover(resume_phase="refine")
    ended = run.verdicts[1]
    assert isinstance(ended, EndRun) and not ended.whole_run
    assert ended.reason == (f"step 7 at 20 req/s was aborted ({ABORT_REASON}); that is 2 aborted steps, more "
                            "than ramp.max_aborts (1)")


def test_with_no_abort_left_the_refinement_stops_rather_than_risk_ending_the_run():
    # the 60 s ECS run of the cpu archetype: the ramp's breach aborted, and so would every rate
    # above the capacity; with max_aborts = 1 a refinement step would end the run before the replay
    planner = PhasePlanner(ramp(max_aborts=1), tasks=1)
    run = drive(planner, Target(45, {("ramp", 50): "abort", ("refine", 45): "abort"}))
    assert run.verdicts == [Recover(resume_phase=None)]
    assert run.steps("refine") == [] and "refine" not in run.phases
    assert run.capacity_rps == 40 and run.steps("replay")[-1] == 40
    assert run.warnings[0] == ("the refinement stopped with the capacity between 40 and 50 req/s: 1 step(s) were "
                               "aborted (ramp.max_aborts = 1), and a step above 40 req/s that aborted too would end "
                               "the run before the replay; the capacity is taken as 40 req/s, up to 25% low (raise "
                               "ramp.max_aborts to refine it)")
    assert run.end == Done("every phase is over")
    # an abort during the refinement spends the budget just the same: the refinement stops there
    planner = PhasePlanner(ramp(max_aborts=1), tasks=1)
    run = drive(planner, Target(47, {("refine", 45): "abort"}))
    assert run.steps("refine") == [45] and run.capacity_rps == 40
    assert run.warnings[0].startswith("the refinement stopped with the capacity between 40 and 45 req/s")
    # with a recovery left, or when an abort ends the run anyway, the refinement goes on as before
    run = drive(PhasePlanner(ramp(max_aborts=2), tasks=1), Target(45, {("ramp", 50): "abort"}))
    assert run.steps("refine") and run.capacity_rps >= 45 * 0.95
    run = drive(PhasePlanner(ramp(abort="run"), tasks=1), Target(45))
    assert run.steps("refine") and run.capacity_rps >= 45 * 0.95


# -- driving the planner --------------------------------------------------------------------------------

def test_the_planner_wants_each_steps_result_before_the_next_action():
    planner = PhasePlanner(ramp(), tasks=1)
    assert planner.next_action() == StartPhase("ramp", 1)
    with pytest.raises(ScalefinderError, match="a step result it did not ask for"):
        planner.record(StepResult(0, "ramp", 1, 10, slo_met=True))
    assert planner.next_action() == RunStep("ramp", 1, 10, confirm=True)
    with pytest.raises(ScalefinderError, match="needs the result of the ramp step at 10 req/s"):
        planner.next_action()
    planner.record(StepResult(0, "ramp", 1, 10, slo_met=True))
    with pytest.raises(ScalefinderError, match="did not ask for"):
        planner.record(StepResult(0, "ramp", 1, 10, slo_met=True))
    assert planner.next_action() == RunStep("ramp", 1, 20, confirm=True)


def test_done_stays_done_and_ramp_only_stops_after_the_ramp():
    planner = PhasePlanner(ramp(), tasks=1, ramp_only=True)
    run = drive(planner, Target(per_task_rps=45))
    assert run.steps() == [10, 20, 30, 40, 50] and run.end == Done("the ramp is over")
    assert planner.good_rates == [10, 20, 30, 40] and planner.first_bad_rps == 50
    assert planner.next_action() == Done("the ramp is over")


def test_actions_runs_the_whole_plan_from_known_results():
    planner = PhasePlanner(ramp(), tasks=2)
    actions = list(planner.actions(lambda step: StepResult(0, step.phase, step.tasks, step.offered_rps, True)))
    beyond = beyond_rates(100, ramp())
    assert len(beyond) == 3  # 120, 144, 172.8: the next would pass 2 x max_rps
    assert [a.phase for a in actions if isinstance(a, RunStep)] == ["ramp"] * 10 + ["replay"] * 4 + ["beyond"] * 3
    assert planner.next_action() == Done("every phase is over")
