"""The configuration schema: typed values, one-line errors, the documented reference."""

from __future__ import annotations

import os

import pytest

from mailserverd import config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(tmp_path, text):
    path = tmp_path / "m.conf"
    path.write_text(text)
    return str(path)


def test_defaults_and_types(tmp_path):
    """Absent keys take production defaults; sizes, durations and addresses are typed."""
    settings = config.load_settings(write(tmp_path, "[server]\ndata_dir = data\n"
                                                    "[listen]\nsmtp = 127.0.0.1:2525\n"
                                                    "[limits]\nmax_message_size = 10M\n"))
    assert settings.limits.max_message_size == 10 * 1024 * 1024
    assert settings.limits.max_header_size == 100 * 1024
    assert settings.listen.smtp == ("127.0.0.1", 2525)
    assert settings.listen.submission is None, "absent listeners are off"
    assert settings.smtp.timeout == 300.0
    assert settings.storage.shards == 4
    assert settings.server.data_dir == str(tmp_path / "data"), "relative to the file"


@pytest.mark.parametrize("text, expected", [
    ("[nonsense]\nx = 1\n", "[nonsense]: unknown section"),
    ("[server]\ncolour = blue\n", "[server] colour: unknown key"),
    ("[limits]\nmax_message_size = lots\n", "[limits] max_message_size: expected a size"),
    ("[listen]\nsmtp = 127.0.0.1:99999\n", "[listen] smtp: port out of range"),
    ("[listen]\nsmtp = nowhere\n", "[listen] smtp: expected host:port"),
    ("[tls]\ncert = /x.pem\n", "[tls] key: cert and key must be given together"),
    ("[storage]\nshards = nope\n", "[storage] shards: not a SQLAlchemy URL"),
    ("no section header\n", "malformed configuration"),
])
def test_errors_name_file_section_and_key(tmp_path, text, expected):
    """Every bad configuration raises ConfigError with one line naming file, section and key."""
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as caught:
        config.load_settings(path)
    message = str(caught.value)
    assert message.startswith(path) and expected in message and "\n" not in message


def test_missing_file_is_one_line(tmp_path):
    """An unreadable file is reported, not a traceback."""
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load_settings(str(tmp_path / "absent.conf"))


def test_shards_accept_urls():
    """[storage] shards takes a count or a list of SQLAlchemy URLs."""
    assert config.parse_shards("postgresql://a/b, postgresql://c/d") == ("postgresql://a/b", "postgresql://c/d")
    assert config.parse_shards("8") == 8


def test_etc_file_documents_every_key_and_loads():
    """etc/mailserverd.conf is the rendered schema, and itself a valid configuration."""
    with open(os.path.join(ROOT, "etc", "mailserverd.conf")) as handle:
        assert handle.read() == config.render_reference()
    settings = config.load_settings(os.path.join(ROOT, "etc", "mailserverd.conf"))
    assert settings.listen.smtp == ("0.0.0.0", 25)
