//! The pgauth user bound to the current transaction: who `auth_current_user_id()`,
//! `auth_has_permission()` and RLS policies see.
//!
//! The binding lives in a hidden setting (`pgauth.session_binding`, defined in
//! `crate::settings`) that only this module changes: its check hook refuses every `SET`,
//! `set_config` or `RESET` from SQL, superusers included. It is set with transaction-local
//! scope, so it is gone at COMMIT or ROLLBACK (a transaction-pooling pgbouncer never hands it to
//! another client), and PostgreSQL copies it to parallel workers, so checks in parallel plans
//! see the same user. The session capability decides whom to bind; caches of answers about the
//! bound user key on [`version`], which moves whenever the binding's content changes.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CStr, CString};
use std::net::IpAddr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::ids::parse_uuid;

/// The bound user, the client address seen when binding, the assurance level of the binding
/// (1: password or API key; 2: multi-factor, a passkey with user verification, or a step-up) and
/// the session it came from (None for `auth_bind_user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user_id: [u8; 16],
    pub client: Option<IpAddr>,
    pub aal: u8,
    pub session: Option<[u8; 16]>,
}

impl Binding {
    /// `user aal session|- client|-`: the hidden setting's value.
    pub fn encode(&self) -> String {
        let id = crate::ids::format_uuid(&self.user_id);
        let session = self
            .session
            .as_ref()
            .map_or_else(|| "-".to_string(), crate::ids::format_uuid);
        let client = self
            .client
            .map_or_else(|| "-".to_string(), |ip| ip.to_string());
        format!("{id} {} {session} {client}", self.aal)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let user_id = parse_uuid(parts.next()?)?;
        let aal = parts
            .next()?
            .parse::<u8>()
            .ok()
            .filter(|a| (1..=3).contains(a))?;
        let session = match parts.next()? {
            "-" => None,
            s => Some(parse_uuid(s)?),
        };
        let client = match parts.next()? {
            "-" => None,
            ip => Some(ip.parse::<IpAddr>().ok()?),
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            user_id,
            client,
            aal,
            session,
        })
    }
}

/// The setting's storage, owned by PostgreSQL's GUC machinery.
pub(crate) static mut BINDING_VALUE: *mut c_char = std::ptr::null_mut();

thread_local! {
    /// Set only while this module changes the binding; the check hook refuses all else.
    static CHANGING_BINDING: Cell<bool> = const { Cell::new(false) };
    /// The last binding string parsed and what it means. Compared by content, never by the
    /// string's address: PostgreSQL frees the old string on every change and malloc hands the
    /// same address to the next one, which once bound another client's identity.
    static PARSED: RefCell<(Vec<u8>, Option<Binding>)> = const { RefCell::new((Vec::new(), None)) };
    /// Moves each time the binding text read differs from the last one: never rewound.
    static VERSION: Cell<u64> = const { Cell::new(0) };
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn check_binding(
    _newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if CHANGING_BINDING.with(Cell::get)
        || source == pg_sys::GucSource::PGC_S_DEFAULT
        || pg_sys::InitializingParallelWorker
    {
        return true;
    }
    pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32);
    pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
        c"the pgauth session binding can only be changed by auth_set_session(), auth_bind_user() and auth_clear_session()".as_ptr(),
    );
    false
}

/// The binding of this transaction, if any (also inside parallel workers): the setting's
/// current text, parsed once per distinct text.
pub fn current() -> Option<Binding> {
    with_current(|binding, _| binding.cloned())
}

/// A number that differs whenever the binding's content differs from the last read (a rollback
/// that restores an older binding moves it too): what caches of answers about the bound user
/// key on, cheaper than comparing bindings.
pub fn version() -> u64 {
    with_current(|_, version| version)
}

/// `f` of the current binding and its version, re-parsing only when the text changed.
fn with_current<R>(f: impl FnOnce(Option<&Binding>, u64) -> R) -> R {
    // SAFETY: the GUC machinery of this backend owns the string and keeps it alive and
    // NUL-terminated while it is the setting's value; we only read it here.
    let text: &[u8] = unsafe {
        let ptr = BINDING_VALUE;
        if ptr.is_null() {
            b""
        } else {
            CStr::from_ptr(ptr).to_bytes()
        }
    };
    PARSED.with(|p| {
        let mut p = p.borrow_mut();
        if p.0 != text {
            let binding = std::str::from_utf8(text).ok().and_then(Binding::decode);
            *p = (text.to_vec(), binding);
            VERSION.with(|v| v.set(v.get() + 1));
        }
        f(p.1.as_ref(), VERSION.with(Cell::get))
    })
}

fn set(value: &str) {
    let name = c"pgauth.session_binding";
    let value = CString::new(value).expect("binding has no NUL");
    CHANGING_BINDING.with(|c| c.set(true));
    // Transaction-local, like SET LOCAL: reverted at COMMIT/ROLLBACK (and subtransaction abort).
    let result = PgTryBuilder::new(|| unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        )
    })
    .finally(|| CHANGING_BINDING.with(|c| c.set(false)))
    .execute();
    let _ = result;
}

fn client_address() -> Option<IpAddr> {
    super::spi::read_one::<String>("SELECT host(pg_catalog.inet_client_addr())", &[])
        .ok()
        .flatten()
        .and_then(|a| a.parse().ok())
}

/// Bind `user_id` to the rest of the transaction at assurance level `aal`, from `session`
/// (None for `auth_bind_user`), with the client address seen now.
pub fn bind(user_id: [u8; 16], aal: u8, session: Option<[u8; 16]>) {
    let binding = Binding {
        user_id,
        client: client_address(),
        aal,
        session,
    };
    set(&binding.encode());
}

/// Unbind: no pgauth user for the rest of the transaction.
pub fn clear() {
    set("");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_round_trip() {
        let id = parse_uuid("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        let sid = parse_uuid("1f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        for client in [
            None,
            Some("10.1.2.3".parse().unwrap()),
            Some("2001:db8::7".parse().unwrap()),
        ] {
            for (aal, session) in [(1, None), (2, Some(sid))] {
                let b = Binding {
                    user_id: id,
                    client,
                    aal,
                    session,
                };
                assert_eq!(Binding::decode(&b.encode()), Some(b));
            }
        }
        assert_eq!(Binding::decode("garbage"), None);
        assert_eq!(Binding::decode(""), None);
        assert_eq!(
            Binding::decode("0f8fad5b-d9cb-469f-a165-70867728950e 4 - -"),
            None,
            "aal out of range"
        );
        assert_eq!(
            Binding::decode("0f8fad5b-d9cb-469f-a165-70867728950e 1 - - extra"),
            None
        );
    }
}
