"""The spam tokenizer's feature families added for accuracy (bench/filter.py, issue 13):
where mail entered the system, reply markers and CJK text in Subject, unlabelled 8-bit
bodies, word pairs, HTML with no plain alternative, and the shape of the body text."""

from __future__ import annotations

import time

from mailserverd.spam.tokenizer import tokenize

LIST_RELAYED = (
    b"Received: from mx1.lists.example.org (mx1.lists.example.org [192.0.2.10])\r\n"
    b"\tby mail.example.net with ESMTP id A1; Sat, 7 Sep 2002 06:14:19 -0500\r\n"
    b"Received: from localhost (localhost [127.0.0.1])\r\n"
    b"\tby hub.lists.example.org with SMTP id B2; Sat, 7 Sep 2002 04:14:14 -0700\r\n"
    b"Received: from p6044-ipad22.tokyo.example.ne.jp (HELO D) (198.51.100.44)\r\n"
    b"  by relay.example.jp with SMTP; 7 Sep 2002 09:24:03 -0000\r\n"
    b"From: someone@example.jp\r\n"
    b"Subject: Re: [list] meeting notes\r\n"
    b"\r\n"
    b"Please review these meeting notes before tomorrow.\r\n"
)


def test_origin_is_the_oldest_hop_outside_one_host():
    """The oldest Received field that is not a hop inside one host gives origin: tokens
    (its domain, the client IP's /16 and /24 from brackets or qmail's parentheses, and a
    dynamic-looking host name); hops inside one host (127.0.0.1) are skipped."""
    tokens = tokenize(LIST_RELAYED)
    assert "origin:198.51" in tokens and "origin:198.51.100" in tokens
    assert "origin:example.ne.jp" in tokens
    assert "origin:dynamic-host" in tokens
    assert "received:198.51.100" in tokens  # the IP in parentheses is mined as a hop too
    assert not any(token.startswith("origin:127") for token in tokens)


def test_subject_reply_prefix_survives_the_word_length_floor():
    """"Re:" (after a list tag) becomes subject:prefix:re although words under 3
    characters are dropped; a subject without a marker says subject:prefix:none."""
    assert "subject:prefix:re" in tokenize(LIST_RELAYED)
    assert "subject:prefix:none" in tokenize(b"Subject: meeting notes\r\n\r\nbody text\r\n")
    assert "subject:prefix:fwd" in tokenize(b"Subject: Fwd: meeting\r\n\r\nbody text\r\n")


def test_cjk_subject_yields_character_bigrams():
    """A Japanese Subject (RFC 2047 encoded word) gives subject:cjk: character pairs."""
    subject = "しじみともも".encode("iso2022_jp")
    import base64
    raw = (b"Subject: =?iso-2022-jp?B?" + base64.b64encode(subject) + b"?=\r\n\r\nbody text\r\n")
    tokens = tokenize(raw)
    assert "subject:cjk:しじ" in tokens and "subject:cjk:もも" in tokens


def test_unlabelled_8bit_body_is_a_clue_and_east_asian_text_is_recovered():
    """8-bit text with no charset parameter (RFC 2045 5.2 says US-ASCII) gives
    body:8bit-unlabelled; Shift_JIS that decodes strictly yields its CJK bigrams."""
    body = "ももがはじけてぶどうがゆれる\nご注文はお早めに\nいつまで営業できるかわかりません\n"
    raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\n" + body.encode("shift_jis")
    tokens = tokenize(raw)
    assert "body:8bit-unlabelled" in tokens
    assert "body:guessed:shift_jis" in tokens
    assert "cjk:営業" in tokens
    labelled = b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode()
    assert "body:8bit-unlabelled" not in tokenize(labelled)
    assert "cjk:営業" in tokenize(labelled)


def test_word_pairs_of_longer_words():
    """Adjacent body words of 4-12 characters pair into bi: tokens; a shorter word
    breaks the chain (pairs of function words misled the filter)."""
    raw = b"Subject: x\r\n\r\nClick here today to claim your free prize\r\n"
    tokens = tokenize(raw)
    assert "bi:click here" in tokens and "bi:here today" in tokens
    assert "bi:claim your" in tokens and "bi:your free" in tokens and "bi:free prize" in tokens
    assert not any(token.startswith("bi:today") or token.endswith(" to") for token in tokens)


def test_html_without_plain_alternative_and_body_shape():
    """HTML as the only text gives body:html-only (not when a text/plain alternative is
    there); the share of capitals and the count of '!' become bucketed tokens."""
    html_only = (b"Subject: x\r\nContent-Type: text/html\r\n\r\n"
                 b"<html><body><p>BUY NOW AND SAVE BIG ON EVERYTHING TODAY!!! LIMITED OFFER!</p>"
                 b"</body></html>\r\n")
    tokens = tokenize(html_only)
    assert "body:html-only" in tokens
    assert "body:caps%:50" in tokens and "body:bangs:4" in tokens
    alternative = (b"Subject: x\r\nMIME-Version: 1.0\r\n"
                   b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
                   b"--b\r\nContent-Type: text/plain\r\n\r\nhello there\r\n"
                   b"--b\r\nContent-Type: text/html\r\n\r\n<p>hello there</p>\r\n--b--\r\n")
    tokens = tokenize(alternative)
    assert "body:html-only" not in tokens
    assert "part:text/html" in tokens


def test_tokenising_stays_cheap_on_a_large_message():
    """A 1 MB body of words costs bounded time: word pairs read only the first 8 KiB
    of a part and words the first 64 KiB."""
    raw = b"Subject: x\r\n\r\n" + b"alpha bravo charlie delta echo foxtrot golf hotel\r\n" * 20000
    before = time.process_time()
    tokens = tokenize(raw)
    assert time.process_time() - before < 1.0
    assert "bi:alpha bravo" in tokens


def test_order_of_core_fields_fingerprints_the_writer():
    """The order of the first From, To, Subject, Date, Message-ID, Cc, Reply-To,
    MIME-Version and Content-Type fields becomes one header:order: token."""
    raw = (b"Received: from a.example (a.example [192.0.2.1]) by b.example; Sat, 7 Sep 2002 06:14:19 -0500\r\n"
           b"Date: Sat, 7 Sep 2002 06:14:19 -0500\r\nFrom: a@example.org\r\nTo: b@example.org\r\n"
           b"Subject: hi\r\nMessage-ID: <1@example.org>\r\nFrom: second@example.org\r\n\r\nbody text\r\n")
    assert "header:order:dftsi" in tokenize(raw)


def test_full_width_letters_read_as_the_words_they_show():
    """NFKC folds full-width and compatibility characters, so "ＦＲＥＥ　ＭＯＮＥＹ" gives the
    tokens "free" and "money" and a body:nfkc-changed clue."""
    raw = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nＦＲＥＥ　ＭＯＮＥＹ now\r\n".encode()
    tokens = tokenize(raw)
    assert {"free", "money", "body:nfkc-changed"} <= tokens


def test_numbers_in_url_paths_keep_their_shape_only():
    """A URL path piece with digits (ids, tracking codes) becomes its shape ("url:id9")
    so every mail of one campaign shares it; words in the path stay as they are."""
    tokens = tokenize(b"Subject: x\r\n\r\nsee http://shop.example.com/offer/id48213?ref=news2002 now\r\n")
    assert {"url:offer", "url:id9", "url:news9", "url:example.com"} <= tokens
    assert "url:id48213" not in tokens


def test_date_far_from_the_oldest_received_hop_is_a_clue():
    """A Date more than an hour after the oldest Received hop took the message gives
    date:future, more than three days before it date:past; a few minutes apart, or a
    Date/Received that does not parse, gives neither."""
    def tokens_for(date):
        return tokenize(LIST_RELAYED.replace(b"From: someone", b"Date: " + date + b"\r\nFrom: someone"))
    assert "date:future" in tokens_for(b"Sun, 8 Sep 2002 09:24:03 +0000")
    assert "date:past" in tokens_for(b"Mon, 2 Sep 2002 09:24:03 +0000")
    for date in (b"Sat, 7 Sep 2002 09:20:00 +0000", b"Sat, 7 Sep 2002 11:30:00 +0200", b"garbage"):
        assert not {"date:future", "date:past"} & tokens_for(date)


def test_charset_label_against_the_bytes_of_a_part():
    """8-bit bytes under a us-ascii label, ASCII text under an 8-bit label, and an HTML
    <meta> charset naming another codec than the MIME label are clues; aliases of one
    codec ("latin1" for ISO-8859-1) are not a mismatch."""
    def part(charset, body, kind=b"plain"):
        return tokenize(b"Subject: x\r\nContent-Type: text/" + kind + b"; charset=" + charset + b"\r\n\r\n" + body)
    assert "charset:ascii-label-8bit" in part(b"us-ascii", "café ouvert".encode("latin-1"))
    assert "charset:8bit-label-ascii-text" in part(b"iso-8859-1", b"plain words only")
    assert "charset:8bit-label-ascii-text" not in part(b"iso-8859-1", "café".encode("latin-1"))
    html = b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=%s"></head>caf\xe9</html>'
    assert "charset:meta-differs" in part(b"iso-8859-1", html % b"big5", b"html")
    assert "charset:meta-differs" not in part(b"iso-8859-1", html % b"latin1", b"html")
