//! Hostile input to the WebAuthn core: every truncation and bit flip of a vector, crafted CBOR
//! and COSE keys, malformed envelopes and settings: each an error, never a panic.

use super::*;

#[test]
fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
    for (name, _) in VECTORS {
        let v = vector(name);
        for field in ["attestationObject", "clientDataJSON"] {
            let original = base64url_decode(
                v["registration"]["response"][field].as_str().unwrap(),
                "",
                1 << 20,
            )
            .unwrap();
            for cut in 0..original.len() {
                let edited = edit_response(&v["registration"], field, |b| b.truncate(cut));
                assert!(
                    register_edited(&v, &edited, false).is_err(),
                    "{name} {field} cut at {cut}"
                );
            }
            for i in 0..original.len() {
                let edited = edit_response(&v["registration"], field, |b| b[i] ^= 0x80);
                let _ = register_edited(&v, &edited, false);
            }
        }
        // Every byte of an assertion is signed: any change is refused.
        for field in ["authenticatorData", "clientDataJSON", "signature"] {
            let original = base64url_decode(
                v["assertion"]["response"][field].as_str().unwrap(),
                "",
                1 << 20,
            )
            .unwrap();
            for i in 0..original.len() {
                let edited = edit_response(&v["assertion"], field, |b| b[i] ^= 0x04);
                assert!(
                    assert_with(&v, &edited, 0).is_err(),
                    "{name} {field} byte {i}"
                );
            }
            for cut in 0..original.len() {
                let edited = edit_response(&v["assertion"], field, |b| b.truncate(cut));
                assert!(
                    assert_with(&v, &edited, 0).is_err(),
                    "{name} {field} cut at {cut}"
                );
            }
        }
    }
}

#[test]
fn hostile_cbor_is_malformed() {
    // Nesting beyond the limit, a length that claims far more than is there, and garbage.
    let mut deep = vec![0x81u8; 200];
    deep.push(0x00);
    malformed_kind(cbor_item(&deep, "x"));
    malformed_kind(cbor_item(
        &[0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
        "x",
    ));
    malformed_kind(cbor_item(
        &[0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
        "x",
    ));
    malformed_kind(cbor_item(
        &[0xbb, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        "x",
    ));
    malformed_kind(cbor_item(&[0xff], "x"));
    malformed_kind(cbor_item(&[], "x"));
    malformed_kind(attestation::AttestationObject::parse(&[0xa0, 0x00]));
    malformed_kind(AuthenticatorData::parse(&[0u8; 36]));
    let mut huge_id = vec![0u8; 37];
    huge_id[32] = authdata::FLAG_UP | authdata::FLAG_AT;
    huge_id.extend_from_slice(&[0u8; 16]);
    huge_id.extend_from_slice(&[0x04, 0x00]);
    assert!(malformed_kind(AuthenticatorData::parse(&huge_id)).contains("1024"));
}

fn cose(entries: Vec<(i64, ciborium::Value)>) -> WebauthnResult<CoseKey> {
    let map = ciborium::Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (ciborium::Value::Integer(k.into()), v))
            .collect(),
    );
    CoseKey::from_cbor(&map)
}

#[test]
fn cose_keys_are_checked() {
    use ciborium::Value as V;
    let int = |i: i64| V::Integer(i.into());
    // Unknown algorithm (ES384), wrong key type for the algorithm, wrong curve.
    assert!(malformed_kind(cose(vec![(1, int(2)), (3, int(-35))])).contains("-35"));
    malformed_kind(cose(vec![(1, int(1)), (3, int(-7)), (-1, int(1))]));
    malformed_kind(cose(vec![
        (1, int(2)),
        (3, int(-7)),
        (-1, int(2)),
        (-2, V::Bytes(vec![1; 32])),
        (-3, V::Bytes(vec![1; 32])),
    ]));
    // Coordinates of the wrong length, and a point that is not on the curve.
    malformed_kind(cose(vec![
        (1, int(2)),
        (3, int(-7)),
        (-1, int(1)),
        (-2, V::Bytes(vec![1; 31])),
        (-3, V::Bytes(vec![1; 32])),
    ]));
    assert!(malformed_kind(cose(vec![
        (1, int(2)),
        (3, int(-7)),
        (-1, int(1)),
        (-2, V::Bytes(vec![1; 32])),
        (-3, V::Bytes(vec![1; 32]))
    ]))
    .contains("valid"));
    malformed_kind(cose(vec![
        (1, int(1)),
        (3, int(-8)),
        (-1, int(6)),
        (-2, V::Bytes(vec![1; 33])),
    ]));
    // RSA: too short a modulus, an even exponent.
    malformed_kind(cose(vec![
        (1, int(3)),
        (3, int(-257)),
        (-1, V::Bytes(vec![0xc5; 128])),
        (-2, V::Bytes(vec![1, 0, 1])),
    ]));
    malformed_kind(cose(vec![
        (1, int(3)),
        (3, int(-257)),
        (-1, V::Bytes(vec![0xc5; 256])),
        (-2, V::Bytes(vec![1, 0, 2])),
    ]));
    // Duplicate labels and non-maps.
    malformed_kind(cose(vec![(1, int(2)), (1, int(2)), (3, int(-7))]));
    malformed_kind(CoseKey::from_cbor(&V::Array(vec![])));
    malformed_kind(CoseKey::from_cbor_bytes(&[0xa0, 0x00]));
}

#[test]
fn envelopes_are_checked() {
    let v = vector("es256_none");
    let reg = &v["registration"];
    let mut other_id = reg.clone();
    other_id["id"] = json!(base64url_encode(b"other"));
    assert!(malformed_kind(parse_registration(&other_id)).contains("rawId"));
    let mut wrong_type = reg.clone();
    wrong_type["type"] = json!("password");
    malformed_kind(parse_registration(&wrong_type));
    let mut missing = reg.clone();
    missing["response"]
        .as_object_mut()
        .unwrap()
        .remove("attestationObject");
    assert!(malformed_kind(parse_registration(&missing)).contains("missing"));
    let mut not_b64 = reg.clone();
    not_b64["response"]["clientDataJSON"] = json!("***");
    assert!(malformed_kind(parse_registration(&not_b64)).contains("base64url"));
    let mut padded = reg.clone();
    padded["id"] = json!(format!("{}=", reg["id"].as_str().unwrap()));
    padded["rawId"] = padded["id"].clone();
    let _ = parse_registration(&padded);
    let mut oversized = reg.clone();
    oversized["clientExtensionResults"] = json!({"x": "a".repeat(MAX_CREDENTIAL_JSON)});
    malformed_kind(parse_registration(&oversized));
    let mut big_client_data = reg.clone();
    big_client_data["response"]["clientDataJSON"] =
        json!(base64url_encode(&vec![b' '; MAX_CLIENT_DATA + 1]));
    malformed_kind(parse_registration(&big_client_data));
    malformed_kind(parse_registration(&json!([1, 2])));
    let mut transports = reg.clone();
    transports["response"]["transports"] = json!(["usb", 3]);
    malformed_kind(parse_registration(&transports));
    let mut handle = v["assertion"].clone();
    handle["response"]["userHandle"] = json!(base64url_encode(&[1u8; 65]));
    malformed_kind(parse_assertion(&handle));
    // clientDataJSON that is not JSON: malformed, not refused.
    let garbage = edit_response(&v["assertion"], "clientDataJSON", |b| *b = b"{".to_vec());
    malformed_kind(assert_with(&v, &garbage, 0));
}

#[test]
fn settings_are_validated() {
    assert!(check_rp_id("example.com").is_ok());
    assert!(check_rp_id("localhost").is_ok());
    for bad in [
        "",
        "Example.com",
        "https://example.com",
        "example.com:443",
        "a..b",
        "-a.com",
        "ex ample.com",
    ] {
        assert!(check_rp_id(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_origins(
            " https://example.com, https://login.example.com:8443/ ,http://localhost:3000"
        )
        .unwrap(),
        vec![
            "https://example.com",
            "https://login.example.com:8443",
            "http://localhost:3000"
        ]
    );
    assert!(parse_origins("android:apk-key-hash:cGFzc2tleXM").is_ok());
    for bad in [
        "http://example.com",
        "https://example.com/login",
        "example.com",
        "https://",
        "ftp://x.com",
        "https://x.com:99999",
    ] {
        assert!(parse_origins(bad).is_err(), "{bad}");
    }
}
