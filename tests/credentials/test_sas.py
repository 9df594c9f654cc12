"""SAS tokens and derived keys (roost.credentials.keys.sas), and the helpers of the provisioning
service that need no server (secret sealing, device ids from hostnames)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.credentials.keys import sas
from roost.credentials.keys.service import SecretBox
from roost.errors import AuthenticationFailed, InvalidInput
from roost.provisioning.service import hash_id, hostname_device_id

KEY = base64.b64decode(sas.new_key())


def test_derived_key_matches_the_published_azure_dps_example() -> None:
    """Group key, registration id and derived key from Microsoft's tutorial "Provision devices
    using symmetric key enrollment groups" (section "Derive a device key"):
    https://learn.microsoft.com/azure/iot-dps/how-to-legacy-device-symm-key
    """
    group_key = (
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
    )
    derived = sas.derive_key_b64(group_key, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6")
    assert derived == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="


def test_sign_then_parse_round_trips_and_verifies() -> None:
    token = sas.sign(KEY, "t1/devices/dev-1", 2_000_000_000, key_name="key_abc")
    assert token.startswith("SharedAccessSignature sr=t1%2Fdevices%2Fdev-1&sig=")
    fields = sas.parse_sas(token)
    assert fields.resource == "t1/devices/dev-1"
    assert fields.expiry == 2_000_000_000
    assert fields.key_name == "key_abc"
    assert sas.signature_matches(KEY, fields)
    assert not sas.signature_matches(base64.b64decode(sas.new_key()), fields)
    assert sas.parse_device_resource(fields.resource) == ("t1", "dev-1")


def test_the_signature_is_azures_hmac_over_the_encoded_resource_and_expiry() -> None:
    # Built by hand as Azure's documentation describes it, with encodeURIComponent-style
    # encoding of the resource (Node's SDK): accepted as well.
    resource = "t1/devices/dev:1"
    encoded = quote(resource, safe="")
    mac = hmac.new(KEY, f"{encoded}\n1900000000".encode(), hashlib.sha256).digest()
    token = (
        f"SharedAccessSignature sr={encoded}&sig={quote(base64.b64encode(mac).decode(), safe='')}"
        "&se=1900000000"
    )
    fields = sas.parse_sas(token)
    assert fields.resource == resource and fields.key_name is None
    assert sas.signature_matches(KEY, fields)


def test_a_changed_expiry_or_resource_breaks_the_signature() -> None:
    token = sas.sign(KEY, "t1/devices/dev-1", 2_000_000_000)
    longer = token.replace("se=2000000000", "se=2000000001")
    assert not sas.signature_matches(KEY, sas.parse_sas(longer))
    other = token.replace("dev-1", "dev-2")
    assert not sas.signature_matches(KEY, sas.parse_sas(other))


@pytest.mark.parametrize(
    "text",
    [
        "Bearer abc",
        "SharedAccessSignature ",
        "SharedAccessSignature sr=a&se=1",
        "SharedAccessSignature sr=a&sig=AAAA&se=1",  # not an HMAC-SHA256 (3 bytes)
        "SharedAccessSignature sr=a&sig=***&se=1",
        "SharedAccessSignature sr=a&sig=" + "A" * 43 + "=&se=soon",
        "SharedAccessSignature sr=a&sr=b&sig=" + "A" * 43 + "=&se=1",
        "SharedAccessSignature sr=a&garbage&se=1",
        "SharedAccessSignature sr=" + "a" * 3000,
    ],
)
def test_malformed_tokens_are_refused_as_authentication_failures(text: str) -> None:
    with pytest.raises(AuthenticationFailed, match="malformed SAS token"):
        sas.parse_sas(text)


@pytest.mark.parametrize("resource", ["t1/dev-1", "t1/things/dev-1", "/devices/x", "a/devices/"])
def test_a_device_resource_has_three_parts(resource: str) -> None:
    with pytest.raises(AuthenticationFailed):
        sas.parse_device_resource(resource)


def test_registration_resource_round_trips() -> None:
    resource = sas.registration_resource("enr-1", "sn-1")
    assert resource == "enr-1/registrations/sn-1"
    assert sas.parse_registration_resource(resource) == ("enr-1", "sn-1")
    with pytest.raises(AuthenticationFailed):
        sas.parse_registration_resource("enr-1/devices/sn-1")


def test_keys_must_be_base64_of_at_least_16_bytes() -> None:
    assert len(sas.decode_key(sas.new_key())) == sas.KEY_BYTES
    with pytest.raises(InvalidInput):
        sas.decode_key("not base64!")
    with pytest.raises(InvalidInput):
        sas.decode_key(base64.b64encode(b"short").decode())


@given(st.text(max_size=300))
def test_no_text_makes_the_parser_raise_anything_but_a_refusal(text: str) -> None:
    try:
        sas.parse_sas("SharedAccessSignature " + text)
    except AuthenticationFailed:
        pass


@given(st.text(min_size=1, max_size=60), st.integers(min_value=0, max_value=10**11))
def test_any_resource_round_trips(resource: str, expiry: int) -> None:
    fields = sas.parse_sas(sas.sign(KEY, resource, expiry, key_name="k"))
    assert (fields.resource, fields.expiry, fields.key_name) == (resource, expiry, "k")
    assert sas.signature_matches(KEY, fields)


def test_sealed_secrets_open_only_with_the_same_key_and_context() -> None:
    box = SecretBox("server-secret")
    sealed = box.seal(b"raw key", "key_1")
    assert b"raw key" not in sealed
    assert box.open(sealed, "key_1") == b"raw key"
    assert SecretBox("server-secret").open(sealed, "key_1") == b"raw key"
    with pytest.raises(ValueError):
        box.open(sealed, "key_2")
    with pytest.raises(ValueError):
        SecretBox("another secret").open(sealed, "key_1")


def test_device_ids_from_hostnames() -> None:
    assert hostname_device_id("store-12.example") == "store-12.example"
    assert hostname_device_id(" Till 3 (front) ") == "Till-3-front"
    assert hostname_device_id("-pos_1") == "pos_1"
    assert len(hostname_device_id("a" * 300)) == 128
    with pytest.raises(InvalidInput):
        hostname_device_id("/// ")


def test_hashes_are_stored_as_their_own_sha256() -> None:
    value = hashlib.sha256(b"board serial 42").hexdigest()
    assert hash_id(value) == hashlib.sha256(bytes.fromhex(value)).hexdigest()
    assert hash_id(value) != value
