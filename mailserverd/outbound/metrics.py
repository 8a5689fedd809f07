"""The outbound queue in Prometheus text exposition format (version 0.0.4).

Queue gauges come from SQL (the queue is shared, so every node reports the
same numbers); counters are this process's own since it started.
"""

from __future__ import annotations

from .queue import COMPLAINT, HARD, SOFT
from .queueadmin import STATES, QueueStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESULTS = ("delivered", "deferred", "failed")
BOUNCE_KINDS = (HARD, SOFT, COMPLAINT)
DSN_TARGETS = ("local", "remote")


def _family(lines: list[str], name: str, kind: str, doc: str, samples) -> None:
    lines.append(f"# HELP {name} {doc}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        label_text = ",".join(f'{key}="{val}"' for key, val in labels)
        number = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")


def render(stats: QueueStats, counters) -> str:
    """stats from queueadmin.stats(); counters: OutboundService.counters ((group, label) -> n)."""
    lines: list[str] = []
    _family(lines, "mailserverd_outbound_queue_size", "gauge",
            "Deliveries (message x recipient domain) in the outbound queue.", [((), stats.deliveries)])
    _family(lines, "mailserverd_outbound_queue_messages", "gauge",
            "Messages in the outbound queue.", [((), stats.messages)])
    _family(lines, "mailserverd_outbound_queue_oldest_age_seconds", "gauge",
            "Age of the oldest message in the outbound queue (0 when empty).", [((), float(stats.oldest_age))])
    _family(lines, "mailserverd_outbound_queue_deliveries", "gauge",
            "Outbound queue deliveries by state.",
            [((("status", state),), stats.by_state.get(state, 0)) for state in STATES])
    _family(lines, "mailserverd_outbound_suppressed_addresses", "gauge",
            "Addresses refused at submission after a recent hard bounce.", [((), stats.suppressed)])
    _family(lines, "mailserverd_outbound_recipients_total", "counter",
            "Recipient outcomes of delivery attempts by this node.",
            [((("result", result),), counters.get(("recipients", result), 0)) for result in RESULTS])
    _family(lines, "mailserverd_outbound_bounces_total", "counter",
            "Failed recipients by bounce kind (hard, soft, complaint).",
            [((("kind", kind),), counters.get(("bounces", kind), 0)) for kind in BOUNCE_KINDS])
    _family(lines, "mailserverd_outbound_dsns_total", "counter",
            "Delivery status notifications sent to local INBOXes or queued for remote senders.",
            [((("to", target),), counters.get(("dsns", target), 0)) for target in DSN_TARGETS])
    _family(lines, "mailserverd_outbound_attempts_total", "counter",
            "Delivery attempts recorded by this node.", [((), counters.get(("attempts", "total"), 0))])
    return "\n".join(lines) + "\n"
