"""The spam classifier's pieces without a database: tokenizer, Robinson/Fisher scoring,
and that training on real mail separates held-out spam from ham."""

from __future__ import annotations

import math
import os
from collections import Counter

import pytest

from mailserverd.mailfiles import iter_source
from mailserverd.spam import classifier, families
from mailserverd.spam.classifier import Counts
from mailserverd.spam.tokenizer import auth_from_header, auth_summary, message_digest, tokenize

DATA = os.path.join(os.path.dirname(__file__), "..", "data")


def messages(name: str) -> list[bytes]:
    return [message.raw for message in iter_source(os.path.join(DATA, name)) if message.error is None]


def test_chi2q_matches_the_closed_form():
    """chi2q(x, 2) is exp(-x/2) (2 degrees of freedom), and it never exceeds 1."""
    for x in (0.0, 1.0, 5.0, 40.0):
        assert chi2q_close(classifier.chi2q(x, 2), math.exp(-x / 2))
    assert classifier.chi2q(0.0, 300) == 1.0


def chi2q_close(a, b):
    return abs(a - b) < 1e-12


def test_unknown_tokens_score_one_half_and_unsure():
    """With no trained evidence every token is 0.5 and ignored: the score is 0.5 (unsure)."""
    value, clues = classifier.score({"free", "money"}, {}, 0, 0)
    assert value == 0.5 and clues == []
    assert classifier.verdict(value, 0.2, 0.9) == classifier.UNSURE


def test_robinson_probability_shrinks_rare_evidence_towards_one_half():
    """One spam sighting is weaker evidence than fifty (s = 0.45, x = 0.5)."""
    once = classifier.token_probability(Counts(1, 0), 100, 100)
    often = classifier.token_probability(Counts(50, 0), 100, 100)
    assert 0.5 < once < often < 1.0
    assert classifier.token_probability(Counts(0, 50), 100, 100) < 0.05


def test_score_is_near_one_for_spam_evidence_and_near_zero_for_ham_evidence():
    """Fisher combining: agreeing clues give confident scores in both directions.
    (Distinct counts per token: tokens with the very same counts are one clue, below.)"""
    counts = {f"s{i}": Counts(40 + i, 0) for i in range(20)}
    counts.update({f"h{i}": Counts(0, 40 + i) for i in range(20)})
    spam_value, clues = classifier.score({f"s{i}" for i in range(20)}, counts, 50, 50)
    ham_value, _ = classifier.score({f"h{i}" for i in range(20)}, counts, 50, 50)
    assert spam_value > 0.99 and ham_value < 0.01
    assert len(clues) == 20
    mixed, _ = classifier.score({"s1", "s2", "h1", "h2"}, counts, 50, 50)
    assert 0.2 < mixed < 0.8  # contradicting evidence is unsure



def test_one_clue_per_family_a_lists_header_fields_count_once():
    """The fields a list manager adds together (RFC 2369, RFC 2919) are one clue (the
    strongest), not one per field; other tokens, IP prefixes and domains at several
    depths among them, stay apart."""
    list_tokens = ["header:list-id:1", "header:list-post:1", "header:list-help:1", "precedence:bulk",
                   "header:x-beenthere:1"]
    url_tokens = ["url:example.org", "url:lists.example.org", "received:216.136"]
    counts = {token: Counts(2, 40 + i) for i, token in enumerate(list_tokens + url_tokens)}
    counts.update({"free": Counts(30, 1), "money": Counts(31, 1)})
    _value, clues = classifier.score(set(counts), counts, 50, 50)
    taken = [token for token, _prob in clues]
    assert sum(token in list_tokens for token in taken) == 1
    assert set(url_tokens) | {"free", "money"} <= set(taken)
    assert families.token_family("header:list-unsubscribe:1") == "family:list"
    _value, clues = classifier.score(set(counts), counts, 50, 50,
                                     classifier.Options(one_clue_per_family=False, same_counts_min=0))
    assert len(clues) == len(counts)


def test_common_tokens_with_identical_counts_are_one_block_of_boilerplate():
    """A footer's words occur in the same trained messages: tokens seen in at least
    same_counts_min messages with exactly the counts of a stronger clue add nothing;
    rare tokens with equal counts (hapaxes) still count apart."""
    counts = {f"footer{i}": Counts(1, 98) for i in range(6)}
    counts.update({f"rare{i}": Counts(3, 0) for i in range(4)})
    _value, clues = classifier.score(set(counts), counts, 50, 100)
    taken = [token for token, _prob in clues]
    assert sum(token.startswith("footer") for token in taken) == 1
    assert sum(token.startswith("rare") for token in taken) == 4


def test_tokenizer_mines_headers_body_urls_and_html():
    """Subject, From, Received, Content-Type, X-Mailer, list headers, decoded base64 HTML, URLs."""
    import base64
    html = b"<html><body><p>Cheap <b>pills</b> <a href='http://pills.example.biz/buy?now=1'>here</a>" \
           b"<img src='http://cdn.example.biz/x.gif'></body></html>"
    raw = (b"Received: from mail.sender.example (mail.sender.example [198.51.100.7])\r\n"
           b"\tby mx.other.test with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
           b"From: \"Pill Shop\" <offers@pills.example.biz>\r\n"
           b"Subject: =?utf-8?q?Gr=C3=BCn_deals?=\r\n"
           b"List-Unsubscribe: <mailto:u@pills.example.biz>\r\n"
           b"X-Mailer: BulkMailer 3.1\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(html).replace(b"\n", b"\r\n"))
    tokens = tokenize(raw)
    for expected in ("subject:grün", "subject:deals", "from:domain:example.biz", "from:name:pill",
                     "received:mail.sender.example", "received:198.51.100", "content-type:text/html",
                     "x-mailer:bulkmailer 3.1", "header:list-unsubscribe:1", "cheap", "pills",
                     "url:pills.example.biz", "url:buy", "proto:http", "html:img", "charset:utf-8"):
        assert expected in tokens, expected
    assert not any("<b>" in token for token in tokens)


def test_tokenizer_ignores_fields_our_delivery_adds():
    """X-Spam-* and Authentication-Results say nothing about the sender: no tokens from them."""
    plain = b"From: a@b.example\r\nSubject: hello there\r\n\r\nsome words here\r\n"
    stamped = b"X-Spam-Status: Yes, score=1.000\r\nX-Spam-Score: 1.000\r\n" \
              b"Authentication-Results: mx.test; spf=fail\r\n" + plain
    assert tokenize(stamped) == tokenize(plain)


def test_tokenizer_survives_malformed_mail_and_bounds_tokens():
    """Garbage, a missing header and a huge body never raise; the token set is bounded."""
    assert tokenize(b"") is not None
    assert tokenize(b"\x00\xff\r\n\r\n\xfe") is not None
    huge = b"Subject: x\r\n\r\n" + b" ".join(b"w%d" % i for i in range(200_000))
    assert len(tokenize(huge)) <= 5000


def test_auth_results_become_tokens_from_check_auth_or_our_header():
    """check.auth's results (object or dict) and our stored Authentication-Results give the
    same auth: tokens; absent results give none."""
    class Result:
        def __init__(self, result):
            self.result = result

    class Auth:
        spf = Result("pass")
        dkim = [Result("pass"), Result("fail")]
        dmarc = Result("fail")
        arc = Result("none")
    assert auth_summary(Auth()) == {"spf": ["pass"], "dkim": ["pass", "fail"], "dmarc": ["fail"], "arc": ["none"]}
    raw = (b"Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@b; dkim=pass header.d=b;\r\n"
           b" dkim=fail header.d=c; dmarc=fail header.from=b; arc=none\r\n"
           b"Authentication-Results: elsewhere.test; spf=fail\r\nSubject: x\r\n\r\nbody\r\n")
    assert auth_from_header(raw, "mx.test") == auth_summary(Auth())
    assert auth_from_header(raw, "other.test") == {}
    tokens = tokenize(b"Subject: x\r\n\r\nbody\r\n", auth_summary(Auth()))
    assert {"auth:spf:pass", "auth:dkim:fail", "auth:dmarc:fail"} <= tokens
    assert not any(token.startswith("auth:") for token in tokenize(b"Subject: x\r\n\r\nbody\r\n"))


def test_digest_ignores_prepended_fields_and_line_ends():
    """The copy scored at DATA, the stored copy with our prepend and an LF mbox copy share a digest."""
    raw = b"Message-ID: <1@x>\r\nSubject: s\r\n\r\nbody line\r\n"
    assert message_digest(raw) == message_digest(b"Return-Path: <a@b>\r\nX-Spam-Score: 0.5\r\n" + raw)
    assert message_digest(raw) == message_digest(raw.replace(b"\r\n", b"\n"))
    assert message_digest(raw) != message_digest(raw.replace(b"<1@x>", b"<2@x>"))


def test_training_separates_held_out_spam_from_ham():
    """Trained on 150 ham + 70 spam of the corpus sample, the held-out 50 ham and 30 spam
    are told apart: no ham is called spam, two thirds of the spam is (the rest mostly
    unsure: 70 spam is little to learn from)."""
    ham, spam = messages("ham-200.mbox"), messages("spam-100.mbox")
    assert len(ham) == 200 and len(spam) == 100
    spam_counts, ham_counts = Counter(), Counter()
    for raw in ham[:150]:
        ham_counts.update(tokenize(raw))
    for raw in spam[:70]:
        spam_counts.update(tokenize(raw))

    def score(raw):
        tokens = tokenize(raw)
        counts = {t: Counts(spam_counts[t], ham_counts[t]) for t in tokens if spam_counts[t] or ham_counts[t]}
        return classifier.score(tokens, counts, 70, 150)[0]
    ham_scores = [score(raw) for raw in ham[150:]]
    spam_scores = [score(raw) for raw in spam[70:]]
    assert max(ham_scores) < 0.9, "a held-out ham message was called spam"
    assert sum(value < 0.2 for value in ham_scores) >= 45
    assert sum(value >= 0.9 for value in spam_scores) >= 20, sorted(spam_scores)
    assert sum(value < 0.2 for value in spam_scores) <= 2, sorted(spam_scores)


@pytest.mark.parametrize("cutoffs", [(0.2, 0.9), (0.3, 0.7)])
def test_verdict_is_three_way(cutoffs):
    """Below ham_cutoff ham, from spam_cutoff on spam, unsure between."""
    ham_cutoff, spam_cutoff = cutoffs
    assert classifier.verdict(ham_cutoff - 0.01, *cutoffs) == classifier.HAM
    assert classifier.verdict(ham_cutoff, *cutoffs) == classifier.UNSURE
    assert classifier.verdict(spam_cutoff, *cutoffs) == classifier.SPAM
