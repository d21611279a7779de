//! Passkey sign-in: `auth_webauthn_login_begin` (the options, with stand-ins for names without
//! passkeys) and `auth_webauthn_login_finish`, the sign-in pipeline (`login::pipeline`) with
//! [`PasskeyStore`]. Challenges, credentials and their use are the parent's (`sql.rs`).

use hmac::{Hmac, KeyInit, Mac};
use pgrx::datum::Inet;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{
    consume_challenge, descriptors, find_credential, random_bytes, record_use, relying_party,
    store_challenge, timeout_millis, user_verification, webauthn_err, Challenge, StoredRow,
};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::ids::format_uuid;
use crate::login::api::{client_key, find_account, grant_tokens, login_row, pipeline_account};
use crate::login::api::{request, sign_in, LoginRow, Method};
use crate::login::attempts::Kind;
use crate::login::pipeline::{self, Grant, Lookup, Proof, Tokens, Verdict};
use crate::pg::event;
use crate::pg::roles::as_owner;
use crate::pg::spi::{read_one, spi_err};
use crate::webauthn::{
    base64url_encode, client_data_challenge, parse_assertion, verify_assertion, AssertionResponse,
    RelyingParty, WebauthnError,
};

/// The key that makes stand-in credential ids for names without passkeys.
fn decoy_key() -> AuthResult<Vec<u8>> {
    let fresh = random_bytes::<32>()?;
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.webauthn_decoy_key (singleton, key) VALUES (true, $1)
             ON CONFLICT (singleton) DO NOTHING",
            &[fresh.as_slice().into()],
        )?;
        read_one::<Vec<u8>>("SELECT key FROM pgauth.webauthn_decoy_key", &[])
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::Internal("decoy key missing".into()))
}

/// One credential descriptor derived from the name: the same every time, so that an unknown
/// name (or a user without passkeys) looks like a user with one passkey.
fn decoy_descriptors(username: &str) -> AuthResult<Vec<Value>> {
    let key = decoy_key()?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
        .map_err(|_| AuthError::Internal("decoy key".into()))?;
    mac.update(username.to_lowercase().as_bytes());
    let id = mac.finalize().into_bytes();
    Ok(vec![json!({
        "type": "public-key",
        "id": base64url_encode(&id),
        "transports": ["hybrid", "internal"],
    })])
}

/// PublicKeyCredentialRequestOptions for `navigator.credentials.get({publicKey: ...})`. With a
/// username: that user's passkeys in allowCredentials (a name without passkeys, known or not,
/// gets a stand-in, so the answer does not tell whether it exists). NULL: discoverable
/// credentials (passkeys the authenticator offers by itself), allowCredentials empty.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_webauthn_login_begin(
    username: default!(Option<&str>, "NULL"),
    client_ip: default!(Option<Inet>, "NULL"),
) -> JsonB {
    JsonB(login_begin(username, client_ip.as_ref()).or_raise())
}

/// Anyone may ask for sign-in challenges, and each is a row until it expires: one client
/// address (`client_ip`, else the connection's; IPv6 by /64, as for the login rate limit) may
/// hold at most `pgauth.webauthn_pending_challenges` unexpired ones.
fn check_pending(key: &str) -> AuthResult<()> {
    let limit = crate::settings::webauthn().pending_challenges();
    if limit == 0 {
        return Ok(());
    }
    let pending = as_owner(|| {
        read_one::<i64>(
            "SELECT count(*) FROM (SELECT 1 FROM pgauth.webauthn_challenges
                                     WHERE client = $1::inet AND ceremony = 'login'
                                       AND expires_at > pg_catalog.now() LIMIT $2) p",
            &[key.into(), i64::from(limit).into()],
        )
    })
    .map_err(spi_err)?
    .unwrap_or(0);
    if pending >= i64::from(limit) {
        return Err(AuthError::TooManyChallenges);
    }
    Ok(())
}

fn login_begin(username: Option<&str>, client_ip: Option<&Inet>) -> AuthResult<Value> {
    let rp = relying_party()?;
    let (_, key) = client_key(client_ip);
    check_pending(&key)?;
    let client = Some(key.as_str());
    let (challenge, allow) = match username {
        None => (store_challenge("login", None, true, client)?, Vec::new()),
        Some(name) => {
            let name: String = name.chars().take(256).collect();
            let account = if name.is_empty() {
                None
            } else {
                find_account(
                    "pg_catalog.lower(u.username) = pg_catalog.lower($1)",
                    name.as_str().into(),
                )?
            };
            let (user, mut allow) = match account {
                Some(a) => (Some(a.id), descriptors(&a.id)?),
                None => (None, Vec::new()),
            };
            if allow.is_empty() {
                allow = decoy_descriptors(&name)?;
            }
            (store_challenge("login", user, false, client)?, allow)
        }
    };
    Ok(json!({
        "challenge": base64url_encode(&challenge),
        "rpId": rp.rp_id,
        "timeout": timeout_millis(),
        "userVerification": user_verification().as_str(),
        "allowCredentials": allow,
    }))
}

/// Verify a passkey sign-in (the browser's response to `auth_webauthn_login_begin`). One row,
/// like `auth_login`; never raises for a failed sign-in.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)] // the row type is spelled out for pgrx's SQL generation
fn auth_webauthn_login_finish(
    credential: Option<crate::pg::jsonb::JsonbArg>,
    client_ip: default!(Option<Inet>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(user_id, Option<Uuid>),
        name!(reason, String),
        name!(access_token, Option<String>),
        name!(refresh_token, Option<String>),
    ),
> {
    let Some(credential) = credential else {
        AuthError::WebAuthn("the credential must not be NULL".into()).raise();
    };
    let row = login_finish(&credential.0, client_ip.as_ref()).or_raise();
    TableIterator::once(row)
}

fn login_finish(credential: &Value, client_ip: Option<&Inet>) -> AuthResult<LoginRow> {
    let rp = relying_party()?;
    // Not a credential at all: raise (nothing to count, no challenge known).
    let response = parse_assertion(credential).map_err(webauthn_err)?;
    let credential_id = base64url_encode(&response.raw_id);
    let request = request(
        Proof::Passkey {
            credential_id: &credential_id,
        },
        client_ip,
    );
    let store = PasskeyStore {
        rp: &rp,
        response: &response,
        client_ip: request.client_ip.as_deref(),
        credential_id: &credential_id,
        challenge: Vec::new(),
        stored_challenge: None,
        found: None,
    };
    let outcome = sign_in("auth_webauthn_login_finish", Kind::Passkey, store, &request)?;
    Ok(login_row(outcome))
}

/// Passkey sign-in's part of the pipeline: the challenge (used up whatever follows), the
/// credential and its user, the WebAuthn checks and the sign counter.
struct PasskeyStore<'a> {
    rp: &'a RelyingParty,
    response: &'a AssertionResponse,
    client_ip: Option<&'a str>,
    /// base64url, as in events.
    credential_id: &'a str,
    /// What clientDataJSON names, and its row as `lookup` took it out of the table.
    challenge: Vec<u8>,
    stored_challenge: Option<Challenge>,
    found: Option<StoredRow>,
}

impl PasskeyStore<'_> {
    /// Does the challenge belong to this ceremony and to the credential's user?
    fn challenge_problem(&self, cred: &StoredRow) -> Option<String> {
        let handle = self.response.user_handle.as_deref();
        match &self.stored_challenge {
            None => Some("unknown or already used challenge".into()),
            Some(c) if !c.fresh => Some("the challenge has expired".into()),
            Some(c) if c.user_id.is_some_and(|u| u != cred.user_id) => {
                Some("the challenge was issued for another user".into())
            }
            Some(c) if c.user_id.is_none() && !c.discoverable => {
                Some("the challenge was issued for another user".into())
            }
            Some(c) if (c.discoverable || handle.is_some()) && handle != cred.handle.as_deref() => {
                Some("userHandle does not belong to the credential".into())
            }
            Some(_) => None,
        }
    }
}

impl Method for PasskeyStore<'_> {
    fn lookup(&mut self, _: &Proof<'_>) -> AuthResult<Lookup> {
        let unknown = |problem: String| {
            Ok(Lookup::Unknown {
                problem: Some(problem),
            })
        };
        self.challenge = match client_data_challenge(&self.response.client_data_json) {
            Ok(c) => c,
            Err(e) => return unknown(e.to_string()),
        };
        // The challenge is used up whatever happens next.
        self.stored_challenge = consume_challenge(&self.challenge, "login")?;
        self.found = find_credential(&self.response.raw_id)?;
        let account = match &self.found {
            Some(c) => find_account("u.id = $1", c.user_id.into())?,
            None => None,
        };
        match account {
            Some(a) => Ok(Lookup::Known(pipeline_account(&a))),
            None => unknown("unknown credential".into()),
        }
    }

    /// Nothing: an unknown credential has no public key to check a signature against, and
    /// today's passkey sign-in spends no stand-in work on it (a signature check costs
    /// microseconds, not an Argon2 hash's time).
    fn dummy_verify(&mut self) {}

    fn check_proof(&mut self, account: &pipeline::Account) -> AuthResult<Verdict> {
        let Some(cred) = &self.found else {
            return Err(AuthError::Internal("passkey checked before lookup".into()));
        };
        let verified = match self.challenge_problem(cred) {
            Some(p) => Err(WebauthnError::Refused(p)),
            None => verify_assertion(self.response, &self.challenge, self.rp, &cred.stored()),
        };
        let outcome = match verified {
            Ok(outcome) => outcome,
            Err(e) => {
                if let WebauthnError::CounterRollback { stored, received } = e {
                    let d = json!({
                        "user_id": format_uuid(&account.id),
                        "credential": cred.id.to_string(),
                        "credential_id": self.credential_id,
                        "stored_count": stored,
                        "received_count": received,
                        "client_ip": self.client_ip,
                    });
                    event::record_failure("webauthn_counter_rollback", &account.username, d)?;
                }
                return Ok(Verdict::Refused {
                    problem: Some(e.to_string()),
                    no_password: false,
                });
            }
        };
        // The counter is stored whatever the account's status.
        record_use(cred, &outcome)?;
        // A passkey is possession ("hwk"); with user verification it is multi-factor.
        let (aal, amr) = if outcome.user_verified {
            (2, vec!["hwk", "user"])
        } else {
            (1, vec!["hwk"])
        };
        Ok(Verdict::Accepted(Grant {
            aal,
            amr,
            expired: false,
        }))
    }

    fn issue_tokens(&mut self, account: &pipeline::Account, grant: &Grant) -> AuthResult<Tokens> {
        grant_tokens(account, grant)
    }
}
