//! One sign-in, whatever the proof: rate limit → account → lockout → proof → status → tokens →
//! audit, in [`sign_in`]. Password sign-in (`auth_login`), passkey sign-in
//! (`auth_webauthn_login_finish`) and API-key verification differ only in their [`Store`] and in
//! the rules of their [`Proof`]; the order, the counters and every event's name, subject and
//! details are decided here, once.
//!
//! Plain Rust, unit-tested with a fake store. The secret (password, assertion, key) stays with
//! the store: this file sees only the identifier it claims, so it can never format a secret.

use serde_json::{json, Value};

use super::{status_reason, Reason};
use crate::ids::format_uuid;

/// The kind of proof, and the identifier it claims (the name typed, the credential id in
/// base64url, the API key's prefix; empty when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof<'a> {
    Password { username: &'a str },
    Passkey { credential_id: &'a str },
    ApiKey { prefix: &'a str },
}

impl Proof<'_> {
    /// The method's name (in `rate_limited`, the one event all methods share).
    pub fn method(&self) -> &'static str {
        match self {
            Proof::Password { .. } => "password",
            Proof::Passkey { .. } => "passkey",
            Proof::ApiKey { .. } => "api_key",
        }
    }
    /// The event of a refused attempt (any reason but the rate limit and expiry).
    pub fn failed_event(&self) -> &'static str {
        match self {
            Proof::Password { .. } => "login_failed",
            Proof::Passkey { .. } => "webauthn_login_failed",
            Proof::ApiKey { .. } => "api_key_failed",
        }
    }
    /// The event of a success; API keys are verified on every request and audit only failures.
    pub fn succeeded_event(&self) -> Option<&'static str> {
        match self {
            Proof::Password { .. } => Some("login_succeeded"),
            Proof::Passkey { .. } => Some("webauthn_login_succeeded"),
            Proof::ApiKey { .. } => None,
        }
    }
    /// A rate limit per client address, a lockout per account and a session: sign-ins only.
    /// An API key carries 256 random bits: guessing is hopeless, and a limit or a lockout
    /// would only let anyone block an application server's keys.
    pub fn is_sign_in(&self) -> bool {
        !matches!(self, Proof::ApiKey { .. })
    }
    /// The subject of events about an attempt whose account is not known (at most 256
    /// characters: anyone chooses it).
    pub fn attempted(&self) -> String {
        let (Proof::Password { username: s }
        | Proof::Passkey { credential_id: s }
        | Proof::ApiKey { prefix: s }) = self;
        s.chars().take(256).collect()
    }
    /// Details that name the proof (never the secret).
    fn describe(&self, details: &mut Value) {
        match self {
            Proof::Password { .. } => {}
            Proof::Passkey { credential_id } => details["credential_id"] = json!(credential_id),
            Proof::ApiKey { prefix } => details["prefix"] = json!(prefix),
        }
    }
}

/// One attempt: the proof and the client address (`client_ip` as given or the connection's,
/// None over a Unix socket; `rate_key` its bucket, see `rate_limit_key`).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub proof: Proof<'a>,
    pub client_ip: Option<String>,
    pub rate_key: String,
}

/// An account as the pipeline needs it. The store may keep more (the hash, the credential row)
/// for its later steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: [u8; 16],
    pub username: String,
    /// `pgauth.users.status`: active, locked (by an administrator), disabled.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Account),
    /// No such account, or nothing that names one; `problem` says what (passkeys: "unknown
    /// credential", a malformed clientDataJSON).
    Unknown {
        problem: Option<String>,
    },
}

/// The store's judgement of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Grant),
    Refused {
        problem: Option<String>,
        /// The account has no password at all (password method only).
        no_password: bool,
    },
}

/// What a right proof is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Assurance level and RFC 8176 methods for the session (1 ["pwd"]; passkeys 1 ["hwk"] or
    /// 2 ["hwk", "user"]).
    pub aal: i32,
    pub amr: Vec<&'static str>,
    /// The password has passed its policy's maximum age.
    pub expired: bool,
}

/// A charged attempt that failed: the failures now counted, and whether this one started a
/// lockout (of `lockout_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub count: u32,
    pub newly_locked: bool,
    pub lockout_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
}

/// An audit event. `kept`: written so that a rollback of the caller's transaction does not
/// remove it (every refusal); a success is written in the caller's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub subject: String,
    pub details: Value,
    pub kept: bool,
}

/// What `auth_login` and `auth_webauthn_login_finish` return (`ok` is `reason == Ok`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reason: Reason,
    /// On success, and with `PasswordExpired` (so the application can offer a change).
    pub user_id: Option<[u8; 16]>,
    pub tokens: Option<Tokens>,
}

impl Outcome {
    fn refused(reason: Reason) -> Self {
        Outcome {
            reason,
            user_id: None,
            tokens: None,
        }
    }
}

/// The side effects of a sign-in, one implementation per method over SPI and shared memory.
pub trait Store {
    type Error;
    /// Count one attempt from the address bucket `key` (a rollback must not undo it); false:
    /// over the limit.
    fn rate_limit(&mut self, key: &str) -> Result<bool, Self::Error>;
    fn lookup(&mut self, proof: &Proof<'_>) -> Result<Lookup, Self::Error>;
    /// The work a check of a real account's secret costs, for an unknown one (equal timing).
    fn dummy_verify(&mut self);
    /// Charge an attempt on the account's lockout counter before its proof is checked;
    /// false: locked out (nothing charged).
    fn begin_attempt(&mut self, account: &Account) -> Result<bool, Self::Error>;
    /// Check the secret. Effects of an accepted proof that must happen whatever the status
    /// (a passkey's sign counter) belong here.
    fn check_proof(&mut self, account: &Account) -> Result<Verdict, Self::Error>;
    /// The charged attempt stays counted.
    fn attempt_failed(&mut self, account: &Account) -> Result<Failure, Self::Error>;
    /// The proof was right: the charged attempt is given back.
    fn attempt_succeeded(&mut self, account: &Account) -> Result<(), Self::Error>;
    /// Open the session (and what goes with a success, such as upgrading an old hash).
    fn issue_tokens(&mut self, account: &Account, grant: &Grant) -> Result<Tokens, Self::Error>;
    /// Flood control of events anyone can cause: Some(occurrence this minute) when the event of
    /// `key` is to be written (`shared::event_number`).
    fn event_number(&mut self, key: &str) -> Option<u32>;
    fn record(&mut self, event: Event) -> Result<(), Self::Error>;
}

/// The events of one request: subject and details in one place.
struct Audit<'r, 'a> {
    request: &'r Request<'a>,
}

impl Audit<'_, '_> {
    /// The account's username when it is known, else the identifier the attempt claimed.
    fn subject(&self, account: Option<&Account>) -> String {
        account.map_or_else(|| self.request.proof.attempted(), |a| a.username.clone())
    }

    fn details(&self, reason: Reason, account: Option<&Account>, problem: Option<&str>) -> Value {
        let mut d = json!({
            "reason": reason.as_str(),
            "user_id": account.map(|a| format_uuid(&a.id)),
            "client_ip": self.request.client_ip,
        });
        self.request.proof.describe(&mut d);
        if let Some(p) = problem {
            d["problem"] = json!(p);
        }
        d
    }

    /// Write a refusal's event (kept after a rollback); with a flood key, only when flood
    /// control lets it through, and then with its occurrence number.
    fn emit<S: Store>(
        &self,
        store: &mut S,
        name: &'static str,
        account: Option<&Account>,
        mut details: Value,
        flood: Option<String>,
    ) -> Result<(), S::Error> {
        if let Some(key) = flood {
            let Some(n) = store.event_number(&key) else {
                return Ok(());
            };
            details["occurrence_this_minute"] = json!(n);
        }
        store.record(Event {
            name,
            subject: self.subject(account),
            details,
            kept: true,
        })
    }
}

/// Sign in (or verify an API key). Refusals are outcomes, not errors: an error of the store
/// (SPI, cancel) propagates, and an attempt it interrupts after the charge stays charged.
pub fn sign_in<S: Store>(store: &mut S, request: &Request<'_>) -> Result<Outcome, S::Error> {
    let proof = &request.proof;
    let failed_event = proof.failed_event();
    let audit = Audit { request };

    // 1. The address's rate limit, before any lookup or hashing; not a failure of any user.
    if proof.is_sign_in() && !store.rate_limit(&request.rate_key)? {
        let mut d = audit.details(Reason::RateLimited, None, None);
        d["rate_limit_key"] = json!(request.rate_key);
        d["method"] = json!(proof.method());
        audit.emit(store, "rate_limited", None, d, Some("rate_limited".into()))?;
        return Ok(Outcome::refused(Reason::RateLimited));
    }

    // 2. The account. Unknown: the same work and the same answer as a wrong secret; charged to
    //    no one (anyone can make up names, and they must not crowd out real counters).
    let account = match store.lookup(proof)? {
        Lookup::Known(account) => account,
        Lookup::Unknown { problem } => {
            store.dummy_verify();
            let mut d = audit.details(Reason::InvalidCredentials, None, problem.as_deref());
            d["known_user"] = json!(false);
            let flood = Some(format!("{failed_event} unknown"));
            audit.emit(store, failed_event, None, d, flood)?;
            return Ok(Outcome::refused(Reason::InvalidCredentials));
        }
    };
    let known = Some(&account);

    // 3. The lockout: the attempt is charged before the proof is checked; a locked account is
    //    refused without looking at it (cheap for anyone who knows the name: flood-controlled).
    if proof.is_sign_in() && !store.begin_attempt(&account)? {
        let d = audit.details(Reason::Locked, known, None);
        let flood = Some(format!("{failed_event} locked"));
        audit.emit(store, failed_event, known, d, flood)?;
        return Ok(Outcome::refused(Reason::Locked));
    }

    // 4. The proof. Wrong: the charge stays (with the lockout it may start). Right: given back.
    let grant = match store.check_proof(&account)? {
        Verdict::Refused {
            problem,
            no_password,
        } => {
            let mut d = audit.details(Reason::InvalidCredentials, known, problem.as_deref());
            if no_password {
                d["no_password"] = json!(true);
            }
            // A charged failure costs its sender a lockout step: each is written. Uncharged
            // ones (API keys) cost nothing: flood-controlled.
            let mut flood = Some(format!("{failed_event} refused"));
            if proof.is_sign_in() {
                let failure = store.attempt_failed(&account)?;
                if failure.newly_locked {
                    let locked = json!({
                        "user_id": format_uuid(&account.id),
                        "failed_count": failure.count,
                        "lockout_seconds": failure.lockout_seconds,
                    });
                    audit.emit(store, "account_locked", known, locked, None)?;
                }
                d["failed_count"] = json!(failure.count);
                flood = None;
            }
            audit.emit(store, failed_event, known, d, flood)?;
            return Ok(Outcome::refused(Reason::InvalidCredentials));
        }
        Verdict::Accepted(grant) => {
            if proof.is_sign_in() {
                store.attempt_succeeded(&account)?;
            }
            grant
        }
    };

    // 5. Status, then expiry: only now, so neither tells anything to someone without the proof.
    if let Some(reason) = status_reason(&account.status) {
        let d = audit.details(reason, known, None);
        audit.emit(store, failed_event, known, d, None)?;
        return Ok(Outcome::refused(reason));
    }
    if grant.expired {
        let d = audit.details(Reason::PasswordExpired, known, None);
        audit.emit(store, "password_expired", known, d, None)?;
        return Ok(Outcome {
            reason: Reason::PasswordExpired,
            user_id: Some(account.id),
            tokens: None,
        });
    }

    // 6. Tokens.
    let tokens = if proof.is_sign_in() {
        Some(store.issue_tokens(&account, &grant)?)
    } else {
        None
    };

    // 7. Audit. A password is always aal 1 ["pwd"]; login_succeeded's details stay
    //    {reason, user_id, client_ip} (pinned by regress audit_direct).
    if let Some(name) = proof.succeeded_event() {
        let mut d = audit.details(Reason::Ok, known, None);
        if let Proof::Passkey { .. } = proof {
            d["aal"] = json!(grant.aal);
            d["amr"] = json!(grant.amr);
        }
        store.record(Event {
            name,
            subject: audit.subject(known),
            details: d,
            kept: false,
        })?;
    }
    Ok(Outcome {
        reason: Reason::Ok,
        user_id: Some(account.id),
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 16] = [0xab; 16];
    type Res<T> = Result<T, &'static str>;

    /// Answers as configured and records every call by its method's name.
    #[derive(Default)]
    struct Fake {
        calls: Vec<&'static str>,
        events: Vec<Event>,
        over_limit: bool,
        status: Option<&'static str>, // None: an unknown account
        locked: bool,
        verdict: Option<Verdict>, // None: check_proof fails (a cancel, an SPI error)
        newly_locked: bool,
        flooded: bool,
    }

    impl Fake {
        fn with(mut self, change: impl FnOnce(&mut Fake)) -> Fake {
            change(&mut self);
            self
        }
        fn call<T>(&mut self, name: &'static str, answer: T) -> Res<T> {
            self.calls.push(name);
            Ok(answer)
        }
    }

    impl Store for Fake {
        type Error = &'static str;
        fn rate_limit(&mut self, key: &str) -> Res<bool> {
            assert_eq!(key, "192.0.2.7/32");
            self.call("rate_limit", !self.over_limit)
        }
        fn lookup(&mut self, _: &Proof<'_>) -> Res<Lookup> {
            let found = match self.status {
                Some(status) => Lookup::Known(Account {
                    id: ID,
                    username: "alice".into(),
                    status: status.into(),
                }),
                None => Lookup::Unknown {
                    problem: Some("unknown credential".into()),
                },
            };
            self.call("lookup", found)
        }
        fn dummy_verify(&mut self) {
            self.calls.push("dummy_verify");
        }
        fn begin_attempt(&mut self, _: &Account) -> Res<bool> {
            self.call("begin_attempt", !self.locked)
        }
        fn check_proof(&mut self, _: &Account) -> Res<Verdict> {
            self.calls.push("check_proof");
            self.verdict.clone().ok_or("canceling statement")
        }
        fn attempt_failed(&mut self, _: &Account) -> Res<Failure> {
            let (count, newly_locked, lockout_seconds) = (3, self.newly_locked, 900);
            self.call(
                "attempt_failed",
                Failure {
                    count,
                    newly_locked,
                    lockout_seconds,
                },
            )
        }
        fn attempt_succeeded(&mut self, _: &Account) -> Res<()> {
            self.call("attempt_succeeded", ())
        }
        fn issue_tokens(&mut self, _: &Account, grant: &Grant) -> Res<Tokens> {
            let access = format!("aal{}", grant.aal);
            self.call(
                "issue_tokens",
                Tokens {
                    access,
                    refresh: None,
                },
            )
        }
        fn event_number(&mut self, _: &str) -> Option<u32> {
            self.calls.push("event_number");
            (!self.flooded).then_some(7)
        }
        fn record(&mut self, event: Event) -> Res<()> {
            self.events.push(event);
            self.call("record", ())
        }
    }

    fn accepted(expired: bool) -> Option<Verdict> {
        let amr = vec!["hwk", "user"];
        Some(Verdict::Accepted(Grant {
            aal: 2,
            amr,
            expired,
        }))
    }

    fn wrong(no_password: bool) -> Option<Verdict> {
        Some(Verdict::Refused {
            problem: None,
            no_password,
        })
    }

    fn active(verdict: Option<Verdict>) -> Fake {
        Fake {
            status: Some("active"),
            verdict,
            ..Fake::default()
        }
    }

    const PASSWORD: Proof<'static> = Proof::Password { username: "ALICE" };
    const PASSKEY: Proof<'static> = Proof::Passkey {
        credential_id: "Y3JlZA",
    };
    const SIGN_INS: [Proof<'static>; 2] = [PASSWORD, PASSKEY];

    fn run(proof: Proof<'static>, mut fake: Fake) -> (Res<Outcome>, Fake) {
        let request = Request {
            proof,
            client_ip: Some("192.0.2.7".into()),
            rate_key: "192.0.2.7/32".into(),
        };
        (sign_in(&mut fake, &request), fake)
    }

    /// The one event of a run: (name, subject, reason, kept).
    fn only_event(fake: &Fake) -> (&'static str, &str, &str, bool) {
        assert_eq!(fake.events.len(), 1, "{:?}", fake.events);
        let e = &fake.events[0];
        (
            e.name,
            &e.subject,
            e.details["reason"].as_str().unwrap(),
            e.kept,
        )
    }

    #[test]
    fn a_rate_limited_attempt_does_nothing_else() {
        for proof in SIGN_INS {
            let (outcome, fake) = run(proof, active(accepted(false)).with(|f| f.over_limit = true));
            assert_eq!(outcome.unwrap(), Outcome::refused(Reason::RateLimited));
            assert_eq!(fake.calls, ["rate_limit", "event_number", "record"]);
            let attempted = proof.attempted();
            assert_eq!(
                only_event(&fake),
                ("rate_limited", &*attempted, "rate_limited", true)
            );
            let d = &fake.events[0].details;
            assert_eq!(d["rate_limit_key"], "192.0.2.7/32");
            assert_eq!(
                (&d["method"], &d["occurrence_this_minute"]),
                (&json!(proof.method()), &json!(7))
            );
            // Flood control drops the event, not the refusal.
            let (outcome, fake) = run(
                proof,
                Fake {
                    over_limit: true,
                    flooded: true,
                    ..Fake::default()
                },
            );
            assert_eq!(outcome.unwrap().reason, Reason::RateLimited);
            assert!(fake.events.is_empty());
        }
    }

    #[test]
    fn an_unknown_account_costs_the_work_and_charges_no_one() {
        for proof in SIGN_INS {
            let (outcome, fake) = run(proof, Fake::default());
            assert_eq!(
                outcome.unwrap(),
                Outcome::refused(Reason::InvalidCredentials)
            );
            let calls = [
                "rate_limit",
                "lookup",
                "dummy_verify",
                "event_number",
                "record",
            ];
            assert_eq!(fake.calls, calls);
            let (failed, attempted) = (proof.failed_event(), proof.attempted());
            assert_eq!(
                only_event(&fake),
                (failed, &*attempted, "invalid_credentials", true)
            );
            let d = &fake.events[0].details;
            assert_eq!(
                (&d["known_user"], &d["user_id"]),
                (&json!(false), &Value::Null)
            );
            assert_eq!(d["problem"], "unknown credential");
        }
        let long = "x".repeat(300);
        assert_eq!(Proof::Password { username: &long }.attempted().len(), 256);
    }

    #[test]
    fn a_locked_account_is_refused_without_checking_the_proof() {
        for proof in SIGN_INS {
            let (outcome, fake) = run(proof, active(accepted(false)).with(|f| f.locked = true));
            assert_eq!(outcome.unwrap(), Outcome::refused(Reason::Locked));
            let calls = [
                "rate_limit",
                "lookup",
                "begin_attempt",
                "event_number",
                "record",
            ];
            assert_eq!(fake.calls, calls);
            assert_eq!(
                only_event(&fake),
                (proof.failed_event(), "alice", "locked", true)
            );
        }
    }

    #[test]
    fn a_wrong_proof_stays_charged_and_may_start_a_lockout() {
        for proof in SIGN_INS {
            let (outcome, fake) = run(proof, active(wrong(false)).with(|f| f.newly_locked = true));
            assert_eq!(
                outcome.unwrap(),
                Outcome::refused(Reason::InvalidCredentials)
            );
            assert_eq!(
                fake.calls[..4],
                ["rate_limit", "lookup", "begin_attempt", "check_proof"]
            );
            assert_eq!(fake.calls[4..], ["attempt_failed", "record", "record"]);
            let names: Vec<_> = fake.events.iter().map(|e| e.name).collect();
            assert_eq!(names, ["account_locked", proof.failed_event()]);
            assert!(fake.events.iter().all(|e| e.subject == "alice" && e.kept));
            let expected =
                json!({"user_id": format_uuid(&ID), "failed_count": 3, "lockout_seconds": 900});
            assert_eq!(fake.events[0].details, expected);
            assert_eq!(fake.events[1].details["failed_count"], 3);
        }
        let (_, fake) = run(PASSWORD, active(wrong(true)));
        assert_eq!(fake.events[0].details["no_password"], true);
    }

    #[test]
    fn a_charge_is_never_given_back_without_a_right_proof() {
        for proof in SIGN_INS {
            for verdict in [wrong(false), None] {
                let interrupted = verdict.is_none();
                let (outcome, fake) = run(proof, active(verdict));
                assert_eq!(outcome.is_err(), interrupted);
                assert!(fake.calls.contains(&"begin_attempt"));
                assert!(!fake.calls.contains(&"attempt_succeeded"));
                assert!(!fake.calls.contains(&"issue_tokens"));
            }
        }
    }

    #[test]
    fn a_right_proof_of_an_inactive_account_gives_the_attempt_back_and_no_tokens() {
        for proof in SIGN_INS {
            for status in ["locked", "disabled"] {
                let (outcome, fake) = run(
                    proof,
                    active(accepted(true)).with(|f| f.status = Some(status)),
                );
                assert_eq!(outcome.unwrap().reason.as_str(), status);
                assert_eq!(
                    fake.calls[3..],
                    ["check_proof", "attempt_succeeded", "record"]
                );
                assert_eq!(
                    only_event(&fake),
                    (proof.failed_event(), "alice", status, true)
                );
            }
        }
        // An expired password: after the status, with the user id, without tokens.
        let (outcome, fake) = run(PASSWORD, active(accepted(true)));
        let outcome = outcome.unwrap();
        assert_eq!(
            (outcome.reason, outcome.user_id),
            (Reason::PasswordExpired, Some(ID))
        );
        assert!(outcome.tokens.is_none() && !fake.calls.contains(&"issue_tokens"));
        let expired = ("password_expired", "alice", "password_expired", true);
        assert_eq!(only_event(&fake), expired);
    }

    #[test]
    fn a_success_gives_the_attempt_back_issues_tokens_and_is_audited() {
        for proof in SIGN_INS {
            let (outcome, fake) = run(proof, active(accepted(false)));
            let outcome = outcome.unwrap();
            assert_eq!((outcome.reason, outcome.user_id), (Reason::Ok, Some(ID)));
            assert_eq!(outcome.tokens.unwrap().access, "aal2");
            let calls = ["check_proof", "attempt_succeeded", "issue_tokens", "record"];
            assert_eq!(fake.calls[3..], calls);
            let name = proof.succeeded_event().unwrap();
            assert_eq!(only_event(&fake), (name, "alice", "ok", false));
        }
        // The password's details exactly as regress audit_direct pins them.
        let (_, fake) = run(PASSWORD, active(accepted(false)));
        let expected =
            json!({"reason": "ok", "user_id": format_uuid(&ID), "client_ip": "192.0.2.7"});
        assert_eq!(fake.events[0].details, expected);
        let (_, fake) = run(PASSKEY, active(accepted(false)));
        let d = &fake.events[0].details;
        assert_eq!((&d["aal"], &d["amr"]), (&json!(2), &json!(["hwk", "user"])));
        assert_eq!(d["credential_id"], "Y3JlZA");
    }

    /// In every situation password and passkey take the same steps and write events with the
    /// same subjects and details, but for the credential id (and a passkey's assurance).
    #[test]
    fn password_and_passkey_events_agree() {
        let situations = || {
            [
                Fake::default().with(|f| f.over_limit = true),
                Fake::default(),
                active(wrong(false)).with(|f| f.locked = true),
                active(wrong(false)).with(|f| f.newly_locked = true),
                active(accepted(false)).with(|f| f.status = Some("disabled")),
                active(accepted(false)),
            ]
        };
        for (a, b) in situations().into_iter().zip(situations()) {
            let ((_, a), (_, b)) = (run(PASSWORD, a), run(PASSKEY, b));
            assert_eq!(a.calls, b.calls);
            for (a, b) in a.events.iter().zip(&b.events) {
                assert_eq!(a.kept, b.kept);
                let unknown = (PASSWORD.attempted(), PASSKEY.attempted());
                assert!(
                    (&a.subject, &b.subject) == (&unknown.0, &unknown.1) || a.subject == b.subject
                );
                let strip = |d: &Value, keys: &[&str]| {
                    let mut d = d.clone();
                    d.as_object_mut()
                        .unwrap()
                        .retain(|k, _| !keys.contains(&k.as_str()));
                    d
                };
                let extra = ["method", "credential_id", "aal", "amr"];
                assert_eq!(strip(&a.details, &["method"]), strip(&b.details, &extra));
            }
        }
    }

    #[test]
    fn an_api_key_is_neither_limited_nor_locked_and_audits_only_failures() {
        let api_key = Proof::ApiKey { prefix: "abcd1234" };
        let (outcome, fake) = run(api_key, active(accepted(false)));
        let outcome = outcome.unwrap();
        assert_eq!(
            (outcome.reason, outcome.user_id, outcome.tokens),
            (Reason::Ok, Some(ID), None)
        );
        assert_eq!(fake.calls, ["lookup", "check_proof"]);
        // A wrong secret charges nothing, so its event is flood-controlled like an unknown key's.
        for fake in [active(wrong(false)), Fake::default()] {
            let (outcome, fake) = run(api_key, fake);
            assert_eq!(outcome.unwrap().reason, Reason::InvalidCredentials);
            assert!(!fake.calls.iter().any(|c| c.starts_with("attempt")));
            assert_eq!(
                fake.calls[fake.calls.len() - 2..],
                ["event_number", "record"]
            );
            assert_eq!(only_event(&fake).0, "api_key_failed");
            assert_eq!(fake.events[0].details["prefix"], "abcd1234");
        }
    }
}
