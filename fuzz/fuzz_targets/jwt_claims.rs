//! The claims parser behind a valid signature: the input is a header and a claims text, signed
//! here with the HS256 key, so every input gets past the signature check.
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pgauth::jwt::{self, Alg, Expected};

fuzz_target!(|data: &[u8]| {
    let (header, claims) = pgauth_fuzz::split2(data);
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signing = jsonwebtoken::EncodingKey::from_secret(pgauth_fuzz::HS256_SECRET);
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &signing, jsonwebtoken::Algorithm::HS256)
            .unwrap();
    let token = format!("{message}.{signature}");
    let key = jwt::decoding_key(Alg::Hs256, Some(pgauth_fuzz::HS256_SECRET), None).unwrap();
    let expected = Expected {
        audience: Some("api"),
        issuer: None,
    };
    if let Ok(raw) = jwt::verify_raw(&token, Alg::Hs256, &key, expected) {
        // What is handed back must be what was signed, and JSON text that jsonb takes: it
        // parses in full (serde_json cannot hold numbers beyond f64, which jsonb's numeric can,
        // so only that error is allowed), and it is an object.
        assert_eq!(raw, claims);
        match serde_json::from_slice::<serde_json::Value>(&raw) {
            Ok(parsed) => assert!(parsed.is_object()),
            Err(e) => assert!(e.to_string().starts_with("number out of range"), "{e}"),
        }
    }
});
