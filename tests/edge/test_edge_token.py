"""Lane tokens with the real JOSE library: keygen/mint/verify, the attack list, rotation, cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edge_tokens import attack_tokens, make_keys

from lane_router._token import (
    JwksError,
    Verifier,
    generate_key,
    load_jwks,
    mint,
    parse_ttl,
)
from lane_router.cli import main


def test_valid_tokens_of_both_algorithms(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    verifier = Verifier(load_jwks(keys.jwks_path.read_text()))
    for key in (keys.a, keys.b):
        verdict = verifier.verify(mint(key, "feature-a", 600))
        assert (verdict.outcome, verdict.lane) == ("valid", "feature-a"), verdict.reason
        assert verdict.claims["iss"] == "traffic-lanes" and verdict.claims["aud"] == "lanes-edge"


def test_every_attack_is_refused_without_raising(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    verifier = Verifier(load_jwks(keys.jwks_path.read_text()))
    outcomes = {}
    for name, token in attack_tokens(keys).items():
        verdict = verifier.verify(token)
        assert verdict.lane is None, name
        outcomes[name] = verdict.outcome
    assert outcomes.pop("expired") == "expired"
    assert set(outcomes.values()) == {"invalid"}, outcomes
    for absent in (None, "", b""):
        assert verifier.verify(absent).outcome == "absent"
    assert verifier.verify(b"\xff\xfe.x.y").outcome == "invalid"


def test_clock_skew_is_tolerated_and_bounded(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    verifier = Verifier(load_jwks(keys.jwks_path.read_text()), leeway=60)
    now = time.time()
    assert verifier.verify(mint(keys.a, "feature-a", 60, now=now - 90)).outcome == "valid"
    assert verifier.verify(mint(keys.a, "feature-a", 60, now=now - 200)).outcome == "expired"
    near = mint(keys.a, "feature-a", 600, not_before=now + 30)
    assert verifier.verify(near).outcome == "valid"


def test_cache_respects_expiry_and_is_bounded(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    verifier = Verifier(load_jwks(keys.jwks_path.read_text()), leeway=0, cache_size=4)
    now = time.time()
    token = mint(keys.a, "feature-a", 100, now=now)
    assert verifier.verify(token, now=now).outcome == "valid"
    assert verifier.verify(token, now=now + 50).lane == "feature-a"  # the cached verdict
    assert verifier.verify(token, now=now + 101).outcome == "expired"
    tokens = [mint(keys.a, f"lane-{i}", 600) for i in range(10)]
    for t in tokens:
        assert verifier.verify(t).outcome == "valid"
    assert len(verifier._cache) == 4


def test_rotation_old_and_new_keys_then_removal(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    old, new = mint(keys.a, "feature-a", 600), mint(keys.b, "feature-b", 600)
    both = Verifier(load_jwks(json.dumps(keys.jwks)))
    assert both.verify(old).lane == "feature-a" and both.verify(new).lane == "feature-b"
    only_b = Verifier(load_jwks(json.dumps({"keys": [keys.jwks["keys"][1]]})))  # type: ignore[index]
    assert only_b.verify(old).outcome == "invalid"
    assert only_b.verify(new).lane == "feature-b"


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("{", "not JSON"),
        ('{"keys": []}', "at least one key"),
        ('{"keys": [{"kty": "EC"}]}', "kid missing"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]}', "HS256"),
        ('{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k", "x": "AA", "y": "AA"}]}', "(k)"),
    ],
)
def test_bad_jwks_is_refused_with_a_reason(text: str, fault: str) -> None:
    with pytest.raises(JwksError, match=fault.replace("(", r"\(").replace(")", r"\)")):
        load_jwks(text)


def test_a_jwks_with_a_private_key_is_refused() -> None:
    text, _ = generate_key()
    with pytest.raises(JwksError, match="private key"):
        load_jwks(json.dumps({"keys": [json.loads(text)]}))


def test_ttl() -> None:
    assert [parse_ttl(t) for t in ("90", "90s", "30m", "8h", "2d")] == [90, 90, 1800, 28800, 172800]
    for bad in ("0", "-1", "8x", "", "1e9"):
        with pytest.raises(ValueError, match="ttl"):
            parse_ttl(bad)


def test_cli_keygen_mint_verify_and_rotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key1, key2, jwks = tmp_path / "k1.json", tmp_path / "k2.json", tmp_path / "jwks.json"
    assert main(["token", "keygen", "--key", str(key1), "--jwks", str(jwks), "--kid", "k1"]) == 0
    assert os.stat(key1).st_mode & 0o777 == 0o600
    assert main(["token", "keygen", "--key", str(key2), "--jwks", str(jwks), "--alg", "EdDSA"]) == 0
    kids = [k["kid"] for k in json.loads(jwks.read_text())["keys"]]
    assert len(kids) == 2 and kids[0] == "k1"
    capsys.readouterr()
    assert main(["token", "keygen", "--key", str(key1), "--jwks", str(jwks)]) == 2
    assert "never overwritten" in capsys.readouterr().err

    for key in (key1, key2):
        assert main(["token", "mint", "--key", str(key), "--lane", "feature-a", "--ttl", "1h"]) == 0
        token = capsys.readouterr().out.strip()
        assert main(["token", "verify", "--jwks", str(jwks), token]) == 0
        assert json.loads(capsys.readouterr().out)["lane"] == "feature-a"

    assert main(["token", "mint", "--key", str(key1), "--lane", "Bad Lane"]) == 2
    assert "not a valid lane" in capsys.readouterr().err
    assert main(["token", "mint", "--key", str(jwks), "--lane", "a"]) == 2
    assert "not a private JWK" in capsys.readouterr().err
    assert main(["token", "mint", "--key", str(key1), "--lane", "a", "--aud", "other"]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["token", "verify", "--jwks", str(jwks), token]) == 1
    assert "invalid" in capsys.readouterr().err


def test_cli_verify_reads_stdin(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    token = mint(keys.a, "feature-a", 600)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lane_router.cli",
            "token",
            "verify",
            "--jwks",
            str(keys.jwks_path),
            "-",
        ],
        input=token,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lane"] == "feature-a"


def test_lasting_refusals_cost_one_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale QA cookie repeats one expired token: one signature check, then a lookup. A token
    not yet valid is checked again (it may become valid)."""
    import lane_router._token as token_module

    keys = make_keys(tmp_path)
    verifier = Verifier(load_jwks(keys.jwks_path.read_text()))
    calls = []
    real = token_module.jwt.decode
    monkeypatch.setattr(
        token_module.jwt, "decode", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    attacks = attack_tokens(keys)
    for _ in range(3):
        assert verifier.verify(attacks["expired"]).outcome == "expired"
        assert verifier.verify(attacks["wrong-key"]).outcome == "invalid"
    assert len(calls) == 2
    for _ in range(2):
        assert verifier.verify(attacks["not-yet-valid"]).outcome == "invalid"
    assert len(calls) == 4
