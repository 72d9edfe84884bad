"""Background work: persisting history and sending notifications.

In the embedded mode jobs run inside the gateway process; with Redis configured they go
to RQ queues served by ``rq worker`` processes. Nothing here imports the HTTP layer.
"""
