"""A provider named in the settings must come with what it needs, checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tidings.config import Settings
from tidings.runtime import ConfigError, check_providers


def test_a_named_provider_without_credentials_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="TIDINGS_TWILIO_ACCOUNT_SID"):
        check_providers(Settings(sms_providers="twilio"))


def test_a_complete_provider_passes(tmp_path: Path) -> None:
    account = tmp_path / "firebase.json"
    account.write_text("{}")
    check_providers(
        Settings(
            sms_providers="vonage, twilio",
            twilio_account_sid="AC1",
            twilio_auth_token="t",
            twilio_from="+15005550006",
            vonage_api_key="k",
            vonage_api_secret="s",
            vonage_from="Shop",
            push_providers="fcm",
            fcm_service_account_file=account,
        )
    )


def test_a_missing_service_account_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no file"):
        check_providers(
            Settings(push_providers="fcm", fcm_service_account_file=tmp_path / "none.json")
        )


def test_provider_lists_keep_their_order_and_refuse_unknown_names() -> None:
    assert Settings(email_providers=" Postmark , smtp,postmark").email_providers == "postmark,smtp"
    with pytest.raises(ValidationError, match="unknown provider twillio"):
        Settings(sms_providers="twillio")
