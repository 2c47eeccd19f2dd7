import copy
import pickle

import pytest

from vaultd_client import Pan, errors, types


def test_pan_never_prints_its_digits():
    p = Pan("4111111111111111")
    assert str(p) == "411111xxxxxx1111"
    assert repr(p) == "Pan(411111xxxxxx1111)"
    assert f"{p}" == "411111xxxxxx1111"
    assert f"{p:>20}" == "    411111xxxxxx1111"
    assert "%s %r" % (p, p) == "411111xxxxxx1111 Pan(411111xxxxxx1111)"
    assert p.expose() == "4111111111111111"
    assert (p.bin, p.last4, len(p)) == ("411111", "1111", 16)
    assert copy.deepcopy(p) is p
    with pytest.raises(TypeError):
        pickle.dumps(p)
    with pytest.raises(AttributeError):
        p.x = 1
    assert Pan("4111111111111111") == p and hash(Pan("4111111111111111")) == hash(p)
    assert Pan("5555555555554444") != p


def test_mask_like_the_rust_type():
    assert Pan("378282246310005").masked() == "378282xxxxx0005"
    assert Pan("1234567890").masked() == "xxxxxxxxxx"
    assert Pan("").masked() == ""


def test_check():
    assert Pan("4111111111111111").check() is None
    assert "Luhn" in Pan("4111111111111112").check()
    assert "digits only" in Pan("4111 1111 1111 1111").check()
    assert "12 to 19" in Pan("42").check()
    for bad in ("4111111111111112", "4111 1111 1111 1111"):
        assert bad not in Pan(bad).check()


def test_credentials_repr_hides_token_number_and_cryptogram():
    c = types.credentials_from_wire(
        {
            "kind": "network_token",
            "scheme": "visa",
            "network_token": "4999000000000001",
            "exp_month": 11,
            "exp_year": 2031,
            "cryptogram": "AQAHAAAAAAAAAAAAAAAAAAAAAAA=",
            "eci": "07",
            "atc": 7,
            "par": None,
            "token_ref": "tref",
        }
    )
    text = repr(c) + str(c)
    assert "4999000000000001" not in text and "AQAHAAAA" not in text
    assert "499900xxxxxx0001" in text
    p = types.credentials_from_wire(
        {"kind": "pan", "scheme": "visa", "pan": "4111111111111111", "exp_month": 12, "exp_year": 2030, "fallback_reason": "no_token"}
    )
    assert "4111111111111111" not in repr(p)
    assert p.pan.expose() == "4111111111111111"


def test_every_error_class_carries_code_and_retryable():
    retryable = {"rate_limited", "overloaded", "unavailable", "shutting_down"}
    for code, cls in errors.ERROR_CLASSES.items():
        e = errors.server_error({"code": code, "message": "m", "retryable": code in retryable}, 3)
        assert type(e) is cls and e.code == code and e.retryable == (code in retryable)
        assert e.request_id == 3 and str(e) == f"{code}: m"
    e = errors.server_error({"code": "brand_new", "message": "m", "retryable": True})
    assert type(e) is errors.ServerError and e.retryable
    for cls in (errors.ConnectionLost, errors.CallTimeout, errors.CannotConnect):
        assert cls("x").retryable
    assert issubclass(errors.CallTimeout, TimeoutError)


def test_results_keep_unknown_fields_and_name_missing_ones():
    h = types.from_wire(types.Health, {"ready": True, "version": "1", "hsm": "ok", "store": "ok", "uptime_ms": 1, "new": 5})
    assert h.extra == {"new": 5} and "new" not in repr(h)
    with pytest.raises(errors.ProtocolError) as e:
        types.from_wire(types.Health, {"ready": True})
    assert "version" in str(e.value)
    with pytest.raises(errors.ProtocolError) as e:
        types.from_wire(types.Card, {"bin": "411111", "last4": "1111", "exp_month": "4111111111111111", "exp_year": 2030, "scheme": "v", "pan_removed": False})
    assert "exp_month" in str(e.value) and "4111" not in str(e.value)
