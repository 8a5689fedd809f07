"""The outbound queue as an admin sees it, against the real daemon: mailserverctl
queue list|show|retry|delete|flush, and the HTTP listener's /metrics and /healthz
(every other path a JSON 404)."""

from __future__ import annotations

import http.client
import json
import smtplib
import ssl

import pytest

from tests.support.daemon import PASSWORD

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: friend@remote.test\r\nSubject: queued\r\n\r\n"
           b"Hello from the queue.\r\n")


@pytest.fixture
def server(mailserver_factory):
    # A DNS server that never answers: remote mail stays queued (deferred), it cannot bounce.
    return mailserver_factory(listeners=("submission", "http"),
                              extra_config={"dns": {"nameservers": "127.0.0.1:9"}})


def submit(server, *recipients) -> str:
    """Send MESSAGE from alice over submission; returns the "queued as" id."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*server.address("submission"), timeout=10) as client:
        client.starttls(context=context)
        client.login("alice@example.test", PASSWORD)
        client.mail("alice@example.test")
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        code, text = client.data(MESSAGE)
    assert code == 250
    return text.decode().rsplit(" ", 1)[1]


def get(server, path, method="GET"):
    connection = http.client.HTTPConnection(*server.address("http"), timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("content-type"), response.read()
    finally:
        connection.close()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_queue_list_and_show_describe_queued_mail(server):
    """A message to two remote domains is listed once per domain and shown with its envelope."""
    queue_id = submit(server, "friend@remote.test", "other@elsewhere.test")
    listed = server.ctl("queue", "list").stdout.splitlines()
    assert sorted(line.split()[0] for line in listed) == [queue_id, queue_id]
    assert any("-> remote.test (1 recipient)" in line for line in listed)
    assert any("-> elsewhere.test (1 recipient)" in line for line in listed)
    shown = server.ctl("queue", "show", queue_id.lower()).stdout
    assert f"id: {queue_id}" in shown and "<friend@remote.test>" in shown and "Subject: queued" in shown


def test_queue_show_unknown_id_fails_with_a_reason(server):
    """An unknown id exits non-zero with a one-line reason."""
    result = server.ctl("queue", "show", "NOSUCHID", check=False)
    assert result.returncode == 1 and result.stderr == "mailserverctl: no queued message NOSUCHID\n"


def test_queue_delete_removes_the_message(server):
    """queue delete ID (through the daemon) removes every delivery; a second delete fails."""
    queue_id = submit(server, "friend@remote.test")
    assert server.ctl("queue", "delete", queue_id).stdout == f"{queue_id}: deleted\n"
    assert server.ctl("queue", "list").stdout == ""
    assert server.ctl("queue", "delete", queue_id, check=False).returncode == 1


def test_queue_retry_and_flush_answer(server):
    """queue retry ID and queue flush make deliveries due now and say how many."""
    queue_id = submit(server, "friend@remote.test")
    assert server.ctl("queue", "retry", queue_id).stdout == f"{queue_id}: 1 delivery due now\n"
    assert server.ctl("queue", "flush").stdout.endswith("due now\n")
    assert server.ctl("queue", "retry", "NOSUCHID", check=False).returncode == 1


def test_queued_mail_survives_a_restart(server):
    """The queue is durable: after a restart (and with the daemon stopped) the message is listed."""
    queue_id = submit(server, "friend@remote.test")
    server.stop()
    assert server.ctl("queue", "list").stdout.startswith(queue_id)
    server.restart()
    assert server.ctl("queue", "show", queue_id).returncode == 0


def test_metrics_report_the_queue(server):
    """GET /metrics is Prometheus text with queue size, oldest age and per-state counts."""
    status, content_type, body = get(server, "/metrics")
    text = body.decode()
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert metric(text, "mailserverd_outbound_queue_size") == 0
    submit(server, "friend@remote.test")
    text = get(server, "/metrics")[2].decode()
    assert metric(text, "mailserverd_outbound_queue_size") == 1
    assert metric(text, "mailserverd_outbound_queue_messages") == 1
    assert metric(text, "mailserverd_outbound_queue_oldest_age_seconds") >= 0
    states = [line for line in text.splitlines() if line.startswith("mailserverd_outbound_queue_deliveries{")]
    assert len(states) == 4 and sum(float(line.split()[-1]) for line in states) == 1
    assert "# TYPE mailserverd_outbound_bounces_total counter" in text


def test_healthz_answers_ok(server):
    """GET /healthz is 200 with JSON status ok while the queue database answers."""
    status, content_type, body = get(server, "/healthz")
    assert status == 200 and content_type == "application/json" and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize("path", ["/index.htm", "/metrics/", "/jmap", "/jmap/nothing", "/healthz/x",
                                  "/../etc/passwd", "/webmail/../../setup.cfg"])
def test_other_paths_are_json_404(server, path):
    """Every path but /metrics, /healthz, JMAP's and the webmail's (/ and /webmail/FILE,
    tests/unit/test_webmail_static.py) is 404 with a JSON error of type notFound."""
    status, content_type, body = get(server, path)
    assert status == 404 and content_type == "application/json"
    assert json.loads(body)["type"] == "notFound"


def test_other_methods_are_json_405(server):
    """POST to /metrics is 405 (Allow: GET, HEAD) with a JSON error."""
    status, content_type, body = get(server, "/metrics", method="POST")
    assert status == 405 and json.loads(body)["type"] == "methodNotAllowed"
