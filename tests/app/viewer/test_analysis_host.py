"""The analysis process: its runs report plain data, its threads run only on idle CPU time, a crash fails the run
with a message and the next run starts a new process, and stopping it is prompt."""

from __future__ import annotations

import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from viewer_support import slow_bundle_model, tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("bundle"), ["NILM", "SIL"], ["Superficial squamous", "HSIL"])


@pytest.fixture
def host():
    from cervixfm_app.viewer.analysis_host import AnalysisHost

    h = AnalysisHost()
    yield h
    h.stop()


def _request(view_slide, bundle, out_root, **kw):
    from cervixfm_app.viewer.analysis_run import RunRequest

    return RunRequest(Path(view_slide.path), bundle, out_root=out_root, batch_size=2, **kw)


def _replies_until_end(run, timeout=60.0):
    kinds, end = [], time.monotonic() + timeout
    while True:
        kind, payload = run.next(timeout=max(0.1, end - time.monotonic()))
        kinds.append(kind)
        if kind in ("end", "failed"):
            return kinds, payload


def test_a_run_reports_its_plan_each_batch_and_its_result(host, bundle, view_slide, tmp_path):
    from core.pipeline.runner import Progress

    run = host.submit(_request(view_slide, bundle, tmp_path))
    kind, plan = run.next(timeout=60)
    assert kind == "plan" and len(plan.boxes) > 0 and plan.model_name
    assert [h.name for h in plan.tile_heads] == ["tiles"] and plan.slide_heads == ["slide"]
    progress = []
    while True:
        kind, payload = run.next(timeout=60)
        if kind == "progress":
            assert isinstance(payload, Progress) and len(payload.batch_indices) <= 2
            assert payload.batch_outputs["tiles.probs"].shape == (len(payload.batch_indices), 2)
            progress.append(payload.done)
        elif kind == "end":
            break
    result = payload
    assert result.status == "complete" and len(result.tiles) == len(plan.boxes) == progress[-1]
    assert progress == sorted(progress) and result.folder.is_dir() and result.folder.is_relative_to(tmp_path)
    assert host.pid != os.getpid()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread scheduling policy is Linux's")
def test_the_process_runs_only_on_idle_cpu_time(host, bundle, view_slide, tmp_path):
    run = host.submit(_request(view_slide, bundle, tmp_path, loader=partial(slow_bundle_model, 0.2)))
    assert run.next(timeout=60)[0] == "plan"
    policies = {}
    for task in Path(f"/proc/{host.pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        policies[task.name] = int(fields[38])  # field 41 of stat: the scheduling policy
    run.cancel()
    _replies_until_end(run)
    assert len(policies) >= 2 and set(policies.values()) == {os.SCHED_IDLE}, policies


def test_a_dead_process_fails_its_run_and_the_next_run_starts_a_new_one(host, bundle, view_slide, tmp_path):
    run = host.submit(_request(view_slide, bundle, tmp_path, loader=partial(slow_bundle_model, 0.2)))
    assert run.next(timeout=60)[0] == "plan"
    first = host.pid
    os.kill(first, signal.SIGKILL)  # out of memory, or killed by the user
    kinds, (user_error, message) = _replies_until_end(run)
    assert kinds[-1] == "failed" and not user_error and "ended unexpectedly" in message

    again = host.submit(_request(view_slide, bundle, tmp_path))
    kinds, result = _replies_until_end(again)
    assert kinds[0] == "plan" and kinds[-1] == "end" and result.status == "complete"
    assert host.pid != first


def test_a_bad_bundle_fails_the_run_with_the_users_message(host, view_slide, tmp_path):
    run = host.submit(_request(view_slide, tmp_path / "no_such_bundle", tmp_path))
    kinds, (user_error, message) = _replies_until_end(run)
    assert kinds == ["failed"] and user_error and "no_such_bundle" in message


def test_stop_cancels_the_run_and_ends_the_process_promptly(host, bundle, view_slide, tmp_path):
    run = host.submit(_request(view_slide, bundle, tmp_path, loader=partial(slow_bundle_model, 0.2)))
    assert run.next(timeout=60)[0] == "plan"
    pid = host.pid
    started = time.monotonic()
    host.stop()
    assert time.monotonic() - started < 5.0 and not host.is_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
