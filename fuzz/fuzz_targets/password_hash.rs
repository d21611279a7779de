//! Stored password hashes of every scheme (argon2, bcrypt, pbkdf2 passlib and django, crypt
//! md5/sha256/sha512): parse, rehash decision, and verification where its cost is small enough to
//! run per input (the limits on cost are the parsers' job: parse refuses what is over them).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::password::{Argon2Settings, StoredHash};

fuzz_target!(|data: &[u8]| {
    let (hash, password) = pgauth_fuzz::split2(data);
    let Ok(hash) = std::str::from_utf8(hash) else {
        return;
    };
    let Ok(stored) = StoredHash::parse(hash) else {
        return;
    };
    let _ = stored.needs_rehash(&Argon2Settings {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    });
    let cheap = match &stored {
        StoredHash::Argon2(h) => h.memory_kib <= 64 && h.iterations <= 2 && h.parallelism <= 2,
        StoredHash::Pbkdf2(h) => h.iterations <= 2000,
        // bcrypt's cost 4 is its floor and still 2^4 expansions: a few per input is fine.
        StoredHash::Bcrypt(_) => hash.len() > 4 && &hash[4..6] == "04",
        StoredHash::Crypt(_) => !hash.contains("rounds="),
    };
    if cheap {
        let _ = stored.verify(password);
    }
});
