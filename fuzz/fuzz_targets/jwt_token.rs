//! JWTs as `auth_jwt_verify` and `auth_set_session` receive them: header peek, then full
//! verification (signature, exp/nbf, aud, iss) with an HS256 key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::jwt::{self, Alg, Expected};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = jwt::peek_header(token);
    let key = jwt::decoding_key(Alg::Hs256, Some(pgauth_fuzz::HS256_SECRET), None).unwrap();
    let _ = jwt::verify(
        token,
        Alg::Hs256,
        &key,
        Expected {
            audience: Some("api"),
            issuer: Some("pgauth"),
        },
    );
});
