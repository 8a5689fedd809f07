"""Outbound delivery (issue 4).

queue.py, queueadmin.py, schedule.py: the durable SQL queue, its admin
queries and the retry schedule. worker.py: OutboundService, the queue runner
and the submission path's door to the queue. outcome.py: what an attempt's
results mean (retry, bounce kind, DSN). metrics.py, queuecli.py: Prometheus
text and `mailserverctl queue`. types.py, resolver.py, client.py,
transport.py, dkim.py: routing and the SMTP client. dsn.py, classify.py:
RFC 3464 reports and bounce classification.
"""
