//! The `jsonwebtoken` crypto provider pgauth installs: the crate's aws-lc-rs provider, except
//! that asymmetric signing keys are parsed once per backend instead of once per token.
//!
//! The crate's own signers rebuild the key pair from its DER for every signature; for RSA that
//! includes aws-lc's key validation (about 10 ms), for ECDSA/Ed25519 a few tens of
//! microseconds. Here the parsed key pairs are kept in a small per-backend map keyed by the
//! digest of the encoded key. The signature itself is still made by aws-lc-rs, exactly as the crate does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, EncodingKey};
use signature::{Error, Signer};

/// How many parsed signing keys a backend keeps.
const MAX_CACHED: usize = 64;

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

type PairCache = HashMap<(Algorithm, [u8; 32]), Rc<Pair>>;

thread_local! {
    static PAIRS: RefCell<PairCache> = RefCell::new(HashMap::new());
}

struct CachedSigner {
    alg: Algorithm,
    pair: Rc<Pair>,
}

impl Signer<Vec<u8>> for CachedSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, Error> {
        let rng = SystemRandom::new();
        match &*self.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(Error::from_source)?;
                Ok(sig)
            }
            Pair::Ec(pair) => Ok(pair
                .sign(&rng, msg)
                .map_err(Error::from_source)?
                .as_ref()
                .to_vec()),
            Pair::Ed(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for CachedSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn parse(alg: Algorithm, der: &[u8]) -> Result<Pair> {
    match alg {
        Algorithm::RS256 => RsaKeyPair::from_der(der)
            .map(Pair::Rsa)
            .map_err(|_| ErrorKind::InvalidRsaKey("unusable RSA key".into()).into()),
        Algorithm::ES256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map(Pair::Ec)
            .map_err(|_| ErrorKind::InvalidEcdsaKey.into()),
        _ => Ed25519KeyPair::from_pkcs8(der)
            .map(Pair::Ed)
            .map_err(|_| ErrorKind::InvalidEddsaKey.into()),
    }
}

fn signer_factory(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let base = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory;
    if !matches!(alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA)
        || key.family() != alg.family()
    {
        return base(alg, key);
    }
    // Keyed by a digest of the encoded key: no second copy of private material in the map.
    let lookup = (
        *alg,
        <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()).into(),
    );
    let cached = PAIRS.with(|p| p.borrow().get(&lookup).cloned());
    let pair = match cached {
        Some(pair) => pair,
        None => {
            let pair = Rc::new(parse(*alg, key.as_bytes())?);
            PAIRS.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() >= MAX_CACHED {
                    p.clear();
                }
                p.insert(lookup, pair.clone());
            });
            pair
        }
    };
    Ok(Box::new(CachedSigner { alg: *alg, pair }))
}

/// Install the provider (once per process; later calls do nothing). Every entry point of the
/// JWT core calls this first: the crate fixes its provider at its first use.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory,
        ..jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.clone()
    });
    let _ = provider.install_default();
}
