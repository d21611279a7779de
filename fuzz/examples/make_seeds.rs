//! Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/) from the tests' fixtures
//! and from values made here with pgauth's own code: `cargo run --release --example make_seeds` in fuzz/.
//! The audit seeds come from a real server instead (fuzz/make_audit_seeds.sh).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use pgauth::crypto::envelope;
use pgauth::jwt::{self, Alg};
use pgauth::webauthn::{self as wa, attestation::AttestationObject, authdata::AuthenticatorData};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn joined(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, &[0xFF], b].concat()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn passwords() {
    for file in ["hashes.tsv", "bad_hashes.tsv"] {
        let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
        for (i, line) in text.lines().skip(1).enumerate() {
            let cols: Vec<&str> = line.split('\t').collect();
            let (hash, password) = match cols.as_slice() {
                [_, _, password, hash] => (*hash, *password),
                [_, hash] => (*hash, ""),
                _ => continue,
            };
            write(
                "password_hash",
                &format!("{}-{i}", file.trim_end_matches(".tsv")),
                &joined(hash.as_bytes(), password.as_bytes()),
            );
        }
    }
}

fn envelopes() {
    let key = pgauth_fuzz::data_key();
    let cases: [(&[u8], Option<&[u8]>); 4] = [
        (b"", None),
        (b"secret", None),
        (
            b"a longer secret value, more than one block of AES",
            Some(b"row 1"),
        ),
        (&[0u8; 300], Some(b"\x00\x01")),
    ];
    for (i, (plain, aad)) in cases.into_iter().enumerate() {
        let sealed = envelope::seal(&key, [i as u8; 16], plain, aad).unwrap();
        write(
            "envelope",
            &format!("sealed-{i}"),
            &joined(&sealed, aad.unwrap_or(b"")),
        );
    }
}

fn tokens() {
    let key = jwt::encoding_key(Alg::Hs256, pgauth_fuzz::HS256_SECRET).unwrap();
    let claims = [
        json!({"sub": "alice", "exp": 4102444800u64, "aud": "api", "iss": "pgauth"}),
        json!({"sub": "bob", "exp": 4102444800u64, "nbf": 1, "aud": ["x", "api"], "iss": "pgauth", "aal": 2}),
        json!({"sub": "carol", "exp": 1, "aud": "api", "iss": "pgauth"}),
        json!({"sub": "dave", "exp": 4102444800.5, "aud": "other", "iss": {"x": 1}}),
    ];
    for (i, c) in claims.iter().enumerate() {
        let token = jwt::sign(Alg::Hs256, pgauth_fuzz::KID, &key, c).unwrap();
        write("jwt_token", &format!("hs256-{i}"), token.as_bytes());
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": pgauth_fuzz::KID}).to_string();
        write(
            "jwt_claims",
            &format!("claims-{i}"),
            &joined(header.as_bytes(), c.to_string().as_bytes()),
        );
    }
    write("jwt_token", "none", b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
}

fn passkeys() {
    let dir = fixtures().join("webauthn");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read(&path).unwrap();
        let doc: Value = serde_json::from_slice(&text).unwrap();
        if doc.get("registration").is_none() {
            // A real authenticator's values, each field on its own (yubikey5nfc_real.json).
            let b64 = |k: &str| URL_SAFE_NO_PAD.decode(doc[k].as_str().unwrap()).unwrap();
            let text = |k: &str| doc[k].as_str().unwrap().as_bytes().to_vec();
            write(
                "client_data",
                &format!("{stem}-create"),
                &text("registration_client_data"),
            );
            write(
                "client_data",
                &format!("{stem}-get"),
                &text("assertion_client_data"),
            );
            write("attestation_object", &stem, &b64("attestation_object"));
            write(
                "authenticator_data",
                &format!("{stem}-assertion"),
                &b64("authenticator_data"),
            );
            continue;
        }
        let ceremony = json!({"registration": doc["registration"], "assertion": doc["assertion"]});
        write("webauthn_ceremony", &stem, ceremony.to_string().as_bytes());
        let reg = wa::parse_registration(&doc["registration"]).unwrap();
        let asr = wa::parse_assertion(&doc["assertion"]).unwrap();
        write(
            "client_data",
            &format!("{stem}-create"),
            &reg.client_data_json,
        );
        write("client_data", &format!("{stem}-get"), &asr.client_data_json);
        write("attestation_object", &stem, &reg.attestation_object);
        let object = AttestationObject::parse(&reg.attestation_object).unwrap();
        write(
            "authenticator_data",
            &format!("{stem}-attested"),
            &object.auth_data,
        );
        write(
            "authenticator_data",
            &format!("{stem}-assertion"),
            &asr.authenticator_data,
        );
        let auth = AuthenticatorData::parse(&object.auth_data).unwrap();
        let cose = &auth.attested.as_ref().unwrap().public_key_cbor;
        write("cose_key", &stem, &joined(cose, &asr.signature));
    }
}

fn master_keys() {
    let key = [0x5Au8; 32];
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    write("master_key", "hex", format!("{hex}\n").as_bytes());
    write("master_key", "base64", STANDARD.encode(key).as_bytes());
    write(
        "master_key",
        "base64-unpadded",
        format!("  {}\n", STANDARD.encode(key).trim_end_matches('=')).as_bytes(),
    );
    write("master_key", "zero", "00".repeat(32).as_bytes());
}

/// audit_values seeds: every value of the audit_frames seeds, behind the index of its kind.
fn audit_values() {
    use pgauth::audit::frames;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/audit_frames");
    let columns = pgauth_fuzz::audit_columns();
    let layout: Vec<_> = columns.iter().map(|(l, _)| *l).collect();
    let mut n = 0;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let rows = std::fs::read(&path).unwrap();
        for tuple in frames::events(&rows)
            .unwrap()
            .iter()
            .flat_map(|(o, n)| [o, n])
            .flatten()
        {
            let values = frames::tuple_values(tuple, &layout).unwrap();
            for (kind, v) in values.iter().enumerate() {
                if let Some(v) = v {
                    n += 1;
                    write(
                        "audit_values",
                        &format!("value-{n}"),
                        &[&[kind as u8], *v].concat(),
                    );
                }
            }
        }
    }
}

fn key_exports() {
    let key = |id: &str, name: &str, version: u32, status: &str| {
        json!({"id": id, "name": name, "version": version, "status": status,
               "wrapped_key": STANDARD.encode([0x11u8; 60]),
               "master_key_fingerprint": "0123456789abcdef", "created_by": "postgres",
               "created_at": "2026-12-05T05:33:16.123456+00:00",
               "status_changed_at": if status == "active" { Value::Null } else {
                   json!("2026-12-05T06:00:00+00:00") }})
    };
    let docs = [
        json!({"format": "pgauth-keys/1", "keys": [], "grants": []}),
        json!({"format": "pgauth-keys/1",
               "keys": [key("0b7c6f3e-4c1a-4f57-9a4e-2f0e3d1c5b6a", "default", 1, "decrypt_only"),
                        key("1c8d7a4f-5d2b-4a68-8b5f-3a1f4e2d6c7b", "default", 2, "active"),
                        key("2d9e8b5a-6e3c-4b79-9c6a-4b2a5f3e7d8c", "pii", 1, "revoked")],
               "grants": [{"key_name": "default", "grantee": "app"},
                          {"key_name": "pii", "grantee": "pgauth_admin"}]}),
    ];
    for (i, doc) in docs.iter().enumerate() {
        write(
            "key_export",
            &format!("export-{i}"),
            serde_json::to_string_pretty(doc).unwrap().as_bytes(),
        );
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("audit-values") {
        return audit_values();
    }
    passwords();
    envelopes();
    tokens();
    passkeys();
    master_keys();
    key_exports();
}
