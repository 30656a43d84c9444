"""``lanes token``: keys and signed lane tokens for the edge (docs/design.md, "The edge")."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lane_router._edge_wire import ALGORITHMS, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_LEEWAY

__all__ = ["HELP", "add_arguments", "run"]

HELP = "make signing keys, mint and verify lane tokens (signed lane selection at the edge)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    keygen = sub.add_parser(
        "keygen",
        help="write a new private key and add its public key to a JWKS (rotation: run again)",
        description="Write a new private key (a JWK, mode 0600) and add its public half to the "
        "JWKS file, keeping the keys already there: rotation is keygen, deploy the JWKS, mint "
        "with the new key, then remove the old kid from the JWKS.",
    )
    keygen.add_argument("--key", required=True, metavar="FILE", help="private key to write")
    keygen.add_argument("--jwks", required=True, metavar="FILE", help="JWKS to create or extend")
    keygen.add_argument("--alg", choices=ALGORITHMS, default="ES256", help="default: ES256")
    keygen.add_argument("--kid", metavar="KID", help="key id (default: lanes-<date>-<random>)")

    mint = sub.add_parser("mint", help="print a signed lane token")
    mint.add_argument("--key", required=True, metavar="FILE", help="private key (keygen's JWK)")
    mint.add_argument("--lane", required=True, metavar="LANE")
    mint.add_argument("--ttl", default="8h", metavar="TTL", help="lifetime: 90s, 30m, 8h, 2d")
    mint.add_argument("--iss", default=DEFAULT_ISSUER, help=f"issuer (default {DEFAULT_ISSUER})")
    mint.add_argument(
        "--aud", default=DEFAULT_AUDIENCE, help=f"audience (default {DEFAULT_AUDIENCE})"
    )
    mint.add_argument("--kid", metavar="KID", help="key id (default: the key file's)")

    verify = sub.add_parser("verify", help="print a token's claims, or why it does not verify")
    verify.add_argument("--jwks", required=True, metavar="FILE")
    verify.add_argument("--iss", default=DEFAULT_ISSUER)
    verify.add_argument("--aud", default=DEFAULT_AUDIENCE)
    verify.add_argument(
        "--leeway", type=float, default=DEFAULT_LEEWAY, help="clock skew in seconds"
    )
    verify.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")


def run(args: argparse.Namespace) -> int:
    from lane_router._token import JwksError

    try:
        return {"keygen": _keygen, "mint": _mint, "verify": _verify}[args.token_command](args)
    except (JwksError, ValueError, OSError) as exc:
        print(f"lanes token {args.token_command}: {exc}", file=sys.stderr)
        return 2


def _keygen(args: argparse.Namespace) -> int:
    from lane_router._files import write_atomically
    from lane_router._token import generate_key, load_jwks

    key_path, jwks_path = Path(args.key), Path(args.jwks)
    if key_path.exists():
        raise ValueError(f"{key_path} exists: never overwritten (pick another --key)")
    keys: list[dict[str, object]] = []
    if jwks_path.exists():
        text = jwks_path.read_text()
        load_jwks(text, source=str(jwks_path))  # refuse to extend a broken JWKS
        keys = json.loads(text)["keys"]
    private, public = generate_key(args.alg, args.kid)
    if any(k.get("kid") == public["kid"] for k in keys):
        raise ValueError(f"{jwks_path} already has kid {public['kid']!r}")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(private)
    write_atomically(jwks_path, json.dumps({"keys": [*keys, public]}, indent=2) + "\n")
    print(f"kid {public['kid']} ({args.alg}): private key {key_path}, public JWKS {jwks_path}")
    return 0


def _mint(args: argparse.Namespace) -> int:
    from lane_router._token import load_signing_key, mint, parse_ttl

    key = load_signing_key(Path(args.key).read_text(), kid=args.kid, source=args.key)
    print(mint(key, args.lane, parse_ttl(args.ttl), issuer=args.iss, audience=args.aud))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from lane_router._token import Verifier, load_jwks

    keyset = load_jwks(Path(args.jwks).read_bytes(), source=args.jwks)
    token = sys.stdin.read(65536).strip() if args.token == "-" else args.token
    verdict = Verifier(keyset, issuer=args.iss, audience=args.aud, leeway=args.leeway).verify(token)
    if verdict.outcome == "valid":
        print(json.dumps(dict(verdict.claims), indent=2, sort_keys=True))
        return 0
    print(f"{verdict.outcome}: {verdict.reason} (baseline at the edge)", file=sys.stderr)
    return 1
