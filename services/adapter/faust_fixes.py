"""Work-arounds for faust-streaming behaviour that loses events, applied per app.

**The first event after a table recovery could be dropped** (faust-streaming 0.15.3). When a
worker starts with a non-empty changelog, recovery resumes flow control to read the changelog,
then (``Recovery.on_recovery_completed``) resumes the stream partitions, awaits the seek to the
committed offsets, and resumes flow control *again*. ``FlowControlEvent.resume()`` always
clears every stream queue, and the fetcher is already running, so whatever it delivered into a
stream queue during that await was thrown away while its offset counted as read: the event at a
partition's committed offset was never processed, and the next commit passed over it. The
broker test ``test_state_comes_back_from_the_changelog_after_a_restart`` lost one user's event
in about one run in three.

Clearing on resume exists to drop messages fetched before a rebalance suspended the flow. A
resume while the flow is already active has nothing stale to drop, so here it is a no-op.
"""

from __future__ import annotations

from typing import Any


def keep_queues_on_repeated_resume(flow_control: Any) -> None:
    """Make ``flow_control.resume()`` clear the queues only when the flow was suspended."""
    original = flow_control.resume
    if getattr(original, "_metarec_wrapped", False):
        return

    def resume() -> None:
        if flow_control.is_active():
            return  # already flowing: clearing now would drop events that were delivered in order
        original()

    resume._metarec_wrapped = True  # type: ignore[attr-defined]
    flow_control.resume = resume


#: sha256 of ``inspect.getsource(Recovery.on_recovery_completed)`` in faust-streaming 0.15.3, the
#: method :func:`seek_before_resuming_streams` replaces (its canary test checks it is unchanged)
ON_RECOVERY_COMPLETED_SHA256 = "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"


def seek_before_resuming_streams() -> None:
    """**After a recovery, events at the committed offsets were delivered twice** (faust-streaming
    0.15.3; the class's method is replaced, once). ``Recovery.on_recovery_completed`` resumes the
    stream partitions and *then* awaits the seek to the committed offsets; the fetcher runs meanwhile
    (the recovery started it), so it can fetch and deliver events from the old position, and the seek
    then rewinds to the committed offset and delivers them again. The state's replay check drops the
    second copy (nothing is counted twice), but every such event is processed twice
    (``metarec_events_redelivered_total``; the graceful-shutdown broker test saw 60 of 60 in one run
    of two). Here the seek comes first, while the partitions are still paused; the rest is faust's
    method as it is."""
    import asyncio
    from typing import cast

    from faust.tables.recovery import Recovery

    if getattr(Recovery.on_recovery_completed, "_metarec_wrapped", False):
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                              self.standbys_for_table[table]))
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
                             f"param {generation_id}")
            return
        if assignment:  # metarec: seek while the stream partitions are still paused ...
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})  # ... then resume
        self.completed.set()
        self.log.dev("Resume stream partitions")
        self.app.flow_control.resume()
        consumer.resume_flow()
        await cast(Any, self.app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    on_recovery_completed._metarec_wrapped = True  # type: ignore[attr-defined]
    on_recovery_completed._metarec_original = Recovery.on_recovery_completed  # type: ignore[attr-defined]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
