"""The staged ramp's rates, and ``scalefinder plan`` (which sends nothing)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalefinder.loadgen.plan import beyond_rates, plan_profile, ramp_rates, refine_rate, replay_rates
from scalefinder.loadgen.profile import Ramp, load_profile
from scalefinder.cli import cli

DEMO = Path(__file__).resolve().parent.parent / "profiles" / "demo.toml"


def test_additive_and_geometric_ramps_end_at_max_rps():
    assert ramp_rates(Ramp(start_rps=5, max_rps=22, step_rps=5)) == [5, 10, 15, 20, 22]
    assert ramp_rates(Ramp(start_rps=10, max_rps=30, step_factor=1.5)) == [10, 15, 22.5, 30]
    assert ramp_rates(Ramp(start_rps=7, max_rps=7, step_rps=1)) == [7]


def test_refinement_bisects_until_within_tolerance():
    assert refine_rate(40, 50, 5) == 45
    assert refine_rate(45, 47, 5) is None  # 2 <= 5% of 45
    good, bad, steps = 40.0, 50.0, 0
    while (rate := refine_rate(good, bad, 5)) is not None:
        steps += 1
        good, bad = (rate, bad) if rate <= 43.3 else (good, rate)  # true capacity 43.3
    assert steps <= 3 and good <= 43.3 < bad and bad - good <= 0.05 * good


def test_replay_reuses_earlier_rates_up_to_the_capacity():
    assert replay_rates([5, 10, 15, 20, 25, 30, 33], 33, 4) == [5, 15, 25, 33]
    assert replay_rates([10, 20], 20, 4) == [5, 10, 15, 20]
    assert len(replay_rates([2.5, 5, 7.5, 10, 12.5, 15, 15.62], 15.62, 4)) == 4


def test_beyond_climbs_past_the_capacity():
    rates = beyond_rates(40, Ramp(start_rps=5, max_rps=100, step_rps=5, beyond_factor=2.5))
    assert len(rates) == 5 and rates[0] > 40 and rates[-1] == 100
    assert all(a < b for a, b in zip(rates, rates[1:]))


def test_demo_plan_has_enough_steps_below_capacity():
    plan = plan_profile(load_profile(DEMO))
    ramp = [s for s in plan.steps if s.phase == "ramp"]
    assert len(ramp) >= 8 and all(s.tasks == 2 for s in ramp)
    assert {s.tasks for s in plan.steps if s.phase in ("replay", "beyond")} == {4}
    assert plan.request_count == sum(s.requests for s in plan.steps + plan.repeats)


def test_plan_command_prints_steps_duration_peak_and_requests():
    result = CliRunner().invoke(cli, ["plan", str(DEMO)])
    assert result.exit_code == 0, result.output
    for text in ("ramp", "replay", "Load and scaling: at most", "Wall time: about", "Peak rate:", "Requests: at most",
                 "local cluster (archetype cpu)"):
        assert text in result.output


def test_the_worst_case_includes_a_repeat_of_every_ramp_step_unless_confirmation_is_off():
    profile = load_profile(DEMO)
    confirming = plan_profile(profile)
    ramp = [s for s in confirming.steps if s.phase == "ramp"]
    assert confirming.repeats == tuple(ramp)
    assert confirming.request_count == sum(s.requests for s in confirming.steps + confirming.repeats)
    unconfirmed = plan_profile(replace(profile, ramp=replace(profile.ramp, confirm_breach=False)))
    assert unconfirmed.repeats == () and unconfirmed.steps == confirming.steps
    assert unconfirmed.request_count == confirming.request_count - sum(s.requests for s in ramp)


def test_the_plan_of_every_example_profile_is_the_longest_run_the_phases_allow():
    # The plan is the phase planner fed steps that all meet the SLO: the ramp up to max_rps with
    # every step confirming a failure, no refinement, the replay of earlier rates and the beyond
    # phase from max_rps at twice the tasks, and every recovery the abort rules allow.
    for path in sorted(DEMO.parent.glob("*.toml")):
        profile = load_profile(path)
        ramp, n = profile.ramp, profile.capacity.tasks
        rates = ramp_rates(ramp)
        expected = ([("ramp", n, rate) for rate in rates]
                    + [("replay", 2 * n, rate) for rate in replay_rates(rates, rates[-1], ramp.replay_steps)]
                    + [("beyond", 2 * n, rate) for rate in (beyond_rates(rates[-1], ramp) if ramp.beyond else [])])
        planned = plan_profile(profile)
        assert [(s.phase, s.tasks, s.offered_rps) for s in planned.steps] == expected, path.name
        assert all(s.hold_s == ramp.hold_s for s in planned.steps + planned.repeats)
        assert [s.offered_rps for s in planned.repeats] == (rates if ramp.confirm_breach else [])
        assert len(planned.recoveries) == (ramp.max_aborts if ramp.abort == "step" else 0)


def test_samples_per_step_are_the_periods_that_fit():
    from scalefinder.loadgen.plan import samples_in

    # instants every second in a 4 s window: at least 4 of them; whole minutes in an aligned
    # window (test_an_aligned_hold_ends_on_a_boundary_...): as many as fit
    assert samples_in(4, 1) == 4
    assert samples_in(180, 60) == 3
    assert samples_in(30, 60) == 0


def test_plan_shows_samples_waits_and_wall_time_of_an_ecs_run():
    from scalefinder.loadgen.plan import cost_lines, wall_time

    path = DEMO.parent / "ecs-staging.example.toml"
    example = load_profile(path)
    assert "Warning" not in "\n".join(cost_lines(example, plan_profile(example)))  # its holds give 6 samples
    profile = replace(example, ramp=replace(example.ramp, hold_s=300, min_hold_s=240))  # the holds it had before
    plan = plan_profile(profile)
    lines = cost_lines(profile, plan)
    text = "\n".join(lines)
    ramp = profile.ramp
    assert f"Samples per step from cloudwatch (one every 60 s after the {ramp.warmup_s:g} s warm-up" in text
    assert "whole periods only; holds end on a period boundary" in text
    assert "3 in one ended at min_hold_s" in text and "the analysis judges a step steady from 6 samples" in text
    assert f"A min_hold_s of {ramp.warmup_s + 6 * 60:g} s gives 6 at any alignment" in text
    assert "Holds end on the 60 s boundaries" in text
    assert f"up to {ramp.scale_timeout_s:g} s each" in text and "180 s after the last step" in text
    times = wall_time(profile, plan)
    assert times.expected_s < times.worst_s
    assert times.settle_s == 180
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code == 0 and "Wall time: about" in result.output, result.output


@pytest.mark.parametrize("name", sorted(path.stem for path in DEMO.parent.glob("*.toml")))
def test_the_worst_wall_time_is_never_below_the_expected_one(name):
    # The worst case's plan (every rate held up to max_rps) can have fewer steps than the expected
    # one (a breach halfway, the refinement, then the beyond phase at twice the tasks); with the
    # ECS profiles' beyond phase it had, and `plan` said "about 2 h 28 min, at most 2 h 27 min".
    from scalefinder.loadgen.plan import wall_time

    profile = load_profile(DEMO.parent / f"{name}.toml")
    times = wall_time(profile, plan_profile(profile))
    assert times.expected_s <= times.worst_s


def test_the_expected_wall_time_counts_the_repeats_that_confirm_a_breach():
    from scalefinder.loadgen.plan import wall_time

    profile = load_profile(DEMO)
    confirming = replace(profile, ramp=replace(profile.ramp, confirm_breach=True))
    trusting = replace(profile, ramp=replace(profile.ramp, confirm_breach=False))
    with_repeats, without = (wall_time(p, plan_profile(p)) for p in (confirming, trusting))
    assert with_repeats.confirmations >= 1 and without.confirmations == 0
    assert with_repeats.expected_steps == without.expected_steps + with_repeats.confirmations
    assert with_repeats.expected_s == pytest.approx(
        without.expected_s + with_repeats.confirmations * profile.ramp.min_hold_s)


@pytest.mark.parametrize("hold_s, warmup_s, period_s", [(420, 60, 60), (480, 60, 60), (300, 30, 60), (7, 1, 1),
                                                        (14, 2, 2), (600, 60, 120)])
def test_an_aligned_hold_ends_on_a_boundary_with_its_whole_periods_after_the_warmup(hold_s, warmup_s, period_s):
    from scalefinder.loadgen.plan import aligned_hold_end, step_change_slack_s, step_seconds

    samples = int((hold_s - warmup_s) // period_s)
    slack = step_change_slack_s(warmup_s)
    base = 1_764_000_000 // period_s * period_s  # a boundary in unix time, as CloudWatch's minutes are
    for tenth in range(0, 10 * int(period_s)):
        start = base + tenth / 10.0
        end = aligned_hold_end(start, hold_s, warmup_s, period_s)
        assert end % period_s == pytest.approx(0.0, abs=1e-6) or end % period_s == pytest.approx(period_s)
        # the whole periods inside the step that begin once the warm-up is over (within the slack)
        whole = [k * period_s for k in range(int(start // period_s), int(end // period_s) + 1)
                 if k * period_s >= start + warmup_s - slack - 1e-9 and (k + 1) * period_s <= end + 1e-9]
        assert len(whole) == samples, (start, end)
        assert end - start <= hold_s + period_s
        if tenth / 10.0 <= slack:  # starting just after a boundary, as a step that follows another does
            assert end - start <= hold_s
    assert step_seconds(hold_s, warmup_s, period_s) <= hold_s
    assert step_seconds(hold_s, warmup_s, None) == hold_s


def test_holds_are_aligned_only_with_a_source_that_aggregates_whole_periods():
    from scalefinder.loadgen.plan import hold_period_s

    assert hold_period_s(load_profile(DEMO)) is None  # local samples are instants
    ecs = load_profile(DEMO.parent / "ecs-emulated.toml")
    assert hold_period_s(ecs) == 60
    high_resolution = replace(ecs, sources={"cloudwatch": {**ecs.sources["cloudwatch"], "period_s": 10}})
    assert hold_period_s(high_resolution) == 60  # AWS's own metrics still come a minute at a time
    compressed = replace(ecs, sources={"cloudwatch": {**ecs.sources["cloudwatch"], "period_s": 2, "minute_s": 2}})
    assert hold_period_s(compressed) == 2
