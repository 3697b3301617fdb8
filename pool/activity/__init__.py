"""The activity room: remote activity tasks from the server to a slot and back.

    ActivityService  service.py     our grpc.aio channel; retry rules as pure functions
                                    (retry.py: status code, attempt, clock -> delay or give up)
    field_bytes      wire.py        large payloads moved, not re-encoded: a poll's input
    Spliced                         bytes as they came, a child's result appended to a
                                    completion's own bytes (pure)
    Slots            slots.py       a slot per task: counting, resource-based or a user's
                                    CustomSlotSupplier; RateLimiter spaces task starts
    Poller           poller.py      slot -> child reserved -> rate limit -> PollActivityTaskQueue
                                    -> the task handed to the dispatcher (pool/activity/dispatch/)
    HeartbeatManager heartbeats.py  sdk-core's throttling (clock injected) ->
                                    RecordActivityTaskHeartbeat -> cancellations
    run_in_thread    threads.py     sync activities in a user's ThreadPoolExecutor, with
                                    CancelledError raised in the thread

Each module is imported by its own name (``pool.activity.poller``); this package
re-exports nothing.
"""
