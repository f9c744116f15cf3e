"""What a reconcile blames on the spec (InvalidSpec: the job fails, the user fixes it) and what on the controller
(an error: logged, retried); how the loop's watches report the ways they end. No API server: plain objects."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from kubernetes.client import ApiException

from a2c.controller import handlers, loop, validation
from a2c.controller import spec as jobspec
from a2c.observe import metrics


def job(name: str = "cp", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml", "uid": "u"}, "spec": spec}


@pytest.mark.parametrize(("spec", "said"), [
    ({"trainers": {"replicas": "two"}}, "spec.trainers.replicas must be a number, not a string ('two')"),
    ({"trainers": None}, "spec.trainers must be an object, not null"),
    ({"algorithm": {"hiddenSizes": [64, "wide"]}}, "spec.algorithm.hiddenSizes[1] must be a number"),
    ({"checkpoint": {"persistent": "yes"}}, "spec.checkpoint.persistent must be a boolean, not a string"),
    ({"players": {"replicasPerTrainer": True}}, "must be a number, not a boolean"),
    ({"tls": {"mutual": True}}, "spec.tls.mutual needs spec.tls.secretName"),  # spec.py's own ValueError
    ({"trainers": {"gpus": 2}}, "a trainer pod runs one rank on one GPU"),
])
def test_spec_errors_are_invalid_spec(spec: dict[str, Any], said: str) -> None:
    with pytest.raises(validation.InvalidSpecError, match=None) as caught:
        validation.checked_spec(job(**spec))
    assert said in str(caught.value)


def test_names_and_specs_that_are_not_objects_are_invalid() -> None:
    with pytest.raises(validation.InvalidSpecError, match="DNS-1035"):
        validation.checked_spec(job("Not_A_Name"))
    with pytest.raises(validation.InvalidSpecError, match="spec must be an object, not a list"):
        validation.checked_spec({"metadata": {"name": "cp", "namespace": "ml"}, "spec": [1]})


def test_a_valid_spec_comes_back_filled_and_empty_placement_may_be_null() -> None:
    spec = validation.checked_spec(job(players={"tolerations": None, "resources": None}, trainers={"replicas": 2}))
    assert spec["trainers"]["replicas"] == 2 and spec["algorithm"] == jobspec.defaults()["algorithm"]


def test_a_bug_in_our_code_is_not_an_invalid_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> Any:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(jobspec, "player_config", broken)
    with pytest.raises(TypeError):
        validation.checked_spec(job())


def test_the_jobs_gauge_has_a_series_per_job_and_forgets_deleted_jobs() -> None:
    """Metric labels are bound once per process (by `a2c controller`); the phase gauge names each job."""
    handlers._jobs_gauge("one", "Running").set(1)
    handlers._jobs_gauge("two", "Running").set(1)
    samples = {(s.labels["a2c_job"], s.labels["phase"]): s.value for m in metrics.CONTROLLER_JOBS.collect()
               for s in m.samples}
    assert samples[("one", "Running")] == samples[("two", "Running")] == 1
    handlers._forget("one")
    left = {s.labels["a2c_job"] for m in metrics.CONTROLLER_JOBS.collect() for s in m.samples}
    assert "one" not in left and "two" in left
    handlers._forget("never-seen")  # no error


class Watches:
    """A Kube whose watch of A2CJobs ends in the given ways, one per call (then the loop is stopped)."""

    def __init__(self, runner: Any, ends: list[Any]) -> None:
        self.ends, self.runner = ends, runner

    def list_at(self, *_: Any) -> tuple[list[dict[str, Any]], str]:
        return [], "1"

    def watch(self, *_: Any, **__: Any) -> Iterator[dict[str, Any]]:
        if not self.ends:
            self.runner.shutdown()
            return
        end = self.ends.pop(0)
        if isinstance(end, BaseException):
            raise end
        yield from end


def run_watch(ends: list[Any], caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    runner = loop.Loop(SimpleNamespace(kube=None), resync_s=0.01)  # type: ignore[arg-type]
    runner.kube = Watches(runner, ends)  # type: ignore[assignment]
    runner.watch_retry_s = 0.1
    with caplog.at_level(logging.DEBUG, logger="a2c.controller.loop"):
        thread = threading.Thread(target=runner._watch, args=(jobspec.API_VERSION, jobspec.KIND, loop._job_key))
        thread.start()
        thread.join(10)
    assert not thread.is_alive()
    return [r for r in caplog.records if r.name == "a2c.controller.loop"]


def test_watches_that_end_as_watches_do_are_quiet(caplog: pytest.LogCaptureFixture) -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    records = run_watch([
        [],  # the server's timeoutSeconds: the stream just ends
        urllib3.exceptions.ReadTimeoutError(None, "/apis", "Read timed out."),  # type: ignore[arg-type]  # idle
        urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"),  # the API server restarted
        [gone],  # 410: list again
    ], caplog)
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
    assert any("expired" in r.getMessage() for r in records)


def test_watches_that_are_refused_or_fail_are_warnings(caplog: pytest.LogCaptureFixture) -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = '{"kind":"Status","message":"a2cjobs.a2c.dev is forbidden: User cannot watch"}'
    bad = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd is down"}}
    records = run_watch([forbidden, forbidden, [bad]], caplog)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "watch A2CJob failed (1 in a row; retrying in 0.1 s): 403 Forbidden: a2cjobs.a2c.dev is forbidden" \
        in warnings[0]
    assert "(2 in a row" in warnings[1] and "etcd is down" in warnings[2]


def test_watch_back_off_doubles_to_the_resync_period() -> None:
    assert [loop.backoff(n, 0.5, 10.0) for n in range(7)] == [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
