"""The [outbound] smarthost keys are accepted by the configuration schema, so the
relay the transport supports can actually be configured."""

from __future__ import annotations

from mailserverd.config import load_settings


def test_smarthost_keys_load(tmp_path):
    """smarthost, smarthost_user and smarthost_password are read as written; empty by default."""
    path = tmp_path / "m.conf"
    path.write_text(f"[server]\nhostname = mx.example.test\ndata_dir = {tmp_path}/data\n"
                    "[outbound]\nsmarthost = relay.example.net:587\nsmarthost_user = me\n"
                    "smarthost_password = pw\n")
    outbound = load_settings(str(path)).outbound
    assert (outbound.smarthost, outbound.smarthost_user, outbound.smarthost_password) == (
        "relay.example.net:587", "me", "pw")


def test_smarthost_defaults_to_mx_routing(tmp_path):
    """Without the keys, smarthost is empty (MX routing)."""
    path = tmp_path / "m.conf"
    path.write_text(f"[server]\nhostname = mx.example.test\ndata_dir = {tmp_path}/data\n")
    assert load_settings(str(path)).outbound.smarthost == ""
