#!/usr/bin/env python3
"""A software WebAuthn authenticator plus the browser's part, for pgauth's tests.

It reads the options JSON that auth_webauthn_register_begin / auth_webauthn_login_begin return
(what a page passes to navigator.credentials.create/get after base64url-decoding challenge,
user.id and credential ids) and prints the credential JSON a browser's
PublicKeyCredential.toJSON() gives, which the page posts to auth_webauthn_*_finish.

Built on the `fido2` package (CBOR, COSE keys, authenticator data, client data) and
`cryptography` (keys and signatures): an implementation independent of pgauth's Rust.

  create --state F --alg ES256|EdDSA|RS256 --origin O [--rp-id R] [--fmt none|packed|packed-x5c]
         [--no-uv] [--reuse]
  get    --state F --origin O [--rp-id R] [--counter N] [--flip-signature] [--no-uv]
  fixtures DIR   write unit-test vectors, each checked with fido2.server.Fido2Server first

The state file keeps the private key, credential id, user handle and sign counter between
calls (the authenticator's memory).
"""
import argparse
import base64
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from fido2 import cose
from fido2.webauthn import (
    Aaguid,
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)
from fido2.utils import sha256, websafe_decode, websafe_encode

FLAG = AuthenticatorData.FLAG
AAGUID = Aaguid(bytes.fromhex("70676175746820736f667420617574")[:15] + b"\x68")


def new_key(alg):
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise SystemExit(f"unknown algorithm {alg}")


def cose_key(alg, private_key):
    cls = {"ES256": cose.ES256, "EdDSA": cose.EdDSA, "RS256": cose.RS256}[alg]
    return cls.from_cryptography_key(private_key.public_key())


def sign(alg, private_key, message):
    if alg == "ES256":
        return private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    if alg == "EdDSA":
        return private_key.sign(message)
    return private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def attestation_certificate(aaguid):
    """A batch attestation key and its certificate as WebAuthn §8.2.1 wants it (self-signed
    here: pgauth checks the certificate's contents and signature, not a trust path)."""
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pgauth test vendor"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
        x509.NameAttribute(NameOID.COMMON_NAME, "pgauth soft authenticator"),
    ])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + bytes(aaguid)
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.DER)


def load_state(path):
    with open(path) as f:
        state = json.load(f)
    state["key"] = serialization.load_pem_private_key(state["key_pem"].encode(), None)
    return state


def save_state(path, state):
    out = {k: v for k, v in state.items() if k != "key"}
    out["key_pem"] = state["key"].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with open(path, "w") as f:
        json.dump(out, f)


def make_credential(options, origin, alg, rp_id=None, fmt="none", uv=True, backup=False, reuse=None):
    """navigator.credentials.create(): returns (credential JSON, authenticator state).
    `reuse`: an earlier state whose key and credential id are used again."""
    rp_id = rp_id or options["rp"]["id"]
    offered = [p["alg"] for p in options["pubKeyCredParams"]]
    if reuse:
        alg, key, credential_id = reuse["alg"], reuse["key"], websafe_decode(reuse["credential_id"])
    else:
        key, credential_id = new_key(alg), os.urandom(32)
    public = cose_key(alg, key)
    assert public.ALGORITHM in offered, f"{alg} not offered: {offered}"
    client_data = CollectedClientData.create(
        "webauthn.create", options["challenge"], origin
    )
    flags = FLAG.UP | FLAG.AT | (FLAG.UV if uv else 0)
    if backup:
        flags |= FLAG.BE | FLAG.BS
    auth_data = AuthenticatorData.create(
        sha256(rp_id.encode()),
        flags,
        0,
        AttestedCredentialData.create(AAGUID, credential_id, public),
    )
    if fmt == "packed":
        stmt = {"alg": public.ALGORITHM, "sig": sign(alg, key, bytes(auth_data) + client_data.hash)}
    elif fmt == "packed-x5c":
        att_key, att_cert = attestation_certificate(AAGUID)
        signature = sign("ES256", att_key, bytes(auth_data) + client_data.hash)
        stmt = {"alg": -7, "sig": signature, "x5c": [att_cert]}
    else:
        stmt = {}
    attestation = AttestationObject.create(fmt.split("-")[0], auth_data, stmt)
    credential = {
        "id": websafe_encode(credential_id),
        "rawId": websafe_encode(credential_id),
        "type": "public-key",
        "response": {
            "clientDataJSON": websafe_encode(bytes(client_data)),
            "attestationObject": websafe_encode(bytes(attestation)),
            "transports": ["internal", "hybrid"],
        },
        "authenticatorAttachment": "platform",
        "clientExtensionResults": {},
    }
    state = {
        "alg": alg,
        "key": key,
        "credential_id": websafe_encode(credential_id),
        "user_handle": options["user"]["id"],
        "rp_id": rp_id,
        "counter": 0,
        "backup": backup,
    }
    return credential, state


def get_assertion(options, origin, state, rp_id=None, counter=None, flip=False, uv=True):
    """navigator.credentials.get(): returns the assertion JSON; advances the counter."""
    rp_id = rp_id or options.get("rpId") or state["rp_id"]
    if counter is None:
        counter = state["counter"] + 1
    state["counter"] = counter
    client_data = CollectedClientData.create("webauthn.get", options["challenge"], origin)
    flags = FLAG.UP | (FLAG.UV if uv else 0)
    if state.get("backup"):
        flags |= FLAG.BE | FLAG.BS
    auth_data = bytes(AuthenticatorData.create(sha256(rp_id.encode()), flags, counter))
    signature = bytearray(sign(state["alg"], state["key"], auth_data + client_data.hash))
    if flip:
        signature[len(signature) // 2] ^= 0x01
    return {
        "id": state["credential_id"],
        "rawId": state["credential_id"],
        "type": "public-key",
        "response": {
            "clientDataJSON": websafe_encode(bytes(client_data)),
            "authenticatorData": websafe_encode(auth_data),
            "signature": websafe_encode(bytes(signature)),
            "userHandle": state["user_handle"],
        },
        "authenticatorAttachment": "platform",
        "clientExtensionResults": {},
    }


def fixtures(directory):
    """Vectors for the Rust unit tests, each accepted by fido2's own server first."""
    from fido2.server import Fido2Server
    from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

    rp_id, origin = "example.com", "https://example.com"
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=rp_id))
    os.makedirs(directory, exist_ok=True)
    for alg, fmt in [
        (alg, fmt) for alg in ("ES256", "EdDSA", "RS256") for fmt in ("none", "packed")
    ] + [("ES256", "packed-x5c"), ("EdDSA", "packed-x5c")]:
        if True:
            user = PublicKeyCredentialUserEntity(name="alice", id=os.urandom(16))
            create_options, reg_state = server.register_begin(user, user_verification="preferred")
            options = dict(create_options)["publicKey"]
            options = json.loads(json.dumps(options))
            credential, state = make_credential(options, origin, alg, fmt=fmt, backup=(alg == "EdDSA"))
            auth_cred = server.register_complete(reg_state, credential).credential_data
            request_options, auth_state = server.authenticate_begin([auth_cred])
            request = json.loads(json.dumps(dict(request_options)["publicKey"]))
            assertion = get_assertion(request, origin, state, counter=7)
            server.authenticate_complete(auth_state, [auth_cred], assertion)
            vector = {
                "rp_id": rp_id,
                "origin": origin,
                "algorithm": alg,
                "format": fmt,
                "registration_challenge": options["challenge"],
                "registration": credential,
                "assertion_challenge": request["challenge"],
                "assertion": assertion,
                "assertion_counter": 7,
            }
            name = f"{alg.lower()}_{fmt.replace('-', '_')}.json"
            with open(os.path.join(directory, name), "w") as f:
                json.dump(vector, f, indent=1)
                f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("--state", required=True)
    c.add_argument("--alg", default="ES256")
    c.add_argument("--origin", required=True)
    c.add_argument("--rp-id")
    c.add_argument("--fmt", default="none")
    c.add_argument("--no-uv", action="store_true")
    c.add_argument("--reuse", action="store_true", help="the key and id of the state file again")
    g = sub.add_parser("get")
    g.add_argument("--state", required=True)
    g.add_argument("--origin", required=True)
    g.add_argument("--rp-id")
    g.add_argument("--counter", type=int)
    g.add_argument("--flip-signature", action="store_true")
    g.add_argument("--no-uv", action="store_true")
    f = sub.add_parser("fixtures")
    f.add_argument("directory")
    args = parser.parse_args()

    if args.command == "fixtures":
        fixtures(args.directory)
        return
    options = json.load(sys.stdin)
    if args.command == "create":
        reuse = load_state(args.state) if args.reuse else None
        credential, state = make_credential(
            options, args.origin, args.alg, rp_id=args.rp_id, fmt=args.fmt, uv=not args.no_uv,
            reuse=reuse,
        )
        save_state(args.state, state)
        print(json.dumps(credential))
    else:
        state = load_state(args.state)
        allowed = [c["id"] for c in options.get("allowCredentials", [])]
        if allowed and state["credential_id"] not in allowed:
            # A browser would not offer this credential; the tests send it anyway.
            print("warning: credential not in allowCredentials", file=sys.stderr)
        assertion = get_assertion(
            options,
            args.origin,
            state,
            rp_id=args.rp_id,
            counter=args.counter,
            flip=args.flip_signature,
            uv=not args.no_uv,
        )
        save_state(args.state, state)
        print(json.dumps(assertion))


if __name__ == "__main__":
    main()
