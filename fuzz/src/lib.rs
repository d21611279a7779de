//! What the fuzz targets share: fixed keys (the targets must be deterministic: the same input
//! always takes the same path) and the relying party of the WebAuthn fixtures.

use pgauth::crypto::keys::DataKey;
use pgauth::webauthn::RelyingParty;

/// The data key every `envelope` seed was sealed with (by `make_seeds`).
pub const DATA_KEY: [u8; 32] = [0x42; 32];
/// The HS256 secret of the `jwt_*` seeds.
pub const HS256_SECRET: &[u8; 32] = b"pgauth-fuzz-hs256-secret-32bytes";
/// The `kid` of the `jwt_*` seeds.
pub const KID: &str = "fuzz";

pub fn data_key() -> DataKey {
    DataKey::from_bytes(&DATA_KEY)
}

/// The relying party of tests/fixtures/webauthn (every fixture was made for it).
pub fn relying_party() -> RelyingParty {
    RelyingParty {
        rp_id: "example.com".into(),
        origins: vec!["https://example.com".into()],
        require_user_verification: false,
    }
}

/// Split fuzz input at the first 0xFF byte (a separator no valid UTF-8 has): two inputs from one.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

use pgauth::audit::frames::Layout;
use pgauth::audit::values::Kind;

fn array_of(elem_oid: u32, elem_len: i16, elem_align: u8, elem: Kind) -> Kind {
    Kind::Array {
        elem_oid,
        elem_len,
        elem_align,
        elem: Box::new(elem),
    }
}

/// The columns of the table the audit seeds were captured from (fuzz/make_audit_seeds.sql), as
/// the reader sees them: each column's tuple layout and its value check.
pub fn audit_columns() -> Vec<(Layout, Kind)> {
    vec![
        ((4, b'i'), Kind::Int4),
        ((-1, b'i'), Kind::Text { oid: 25 }),
        ((8, b'd'), Kind::Int8),
        ((1, b'c'), Kind::Bool),
        ((2, b's'), Kind::Int2),
        ((-1, b'i'), Kind::Numeric),
        ((-1, b'i'), Kind::Jsonb),
        (
            (16, b'c'),
            Kind::Fixed {
                oid: 2950,
                len: 16,
                byval: false,
            },
        ),
        ((64, b'c'), Kind::Name),
        ((-1, b'i'), Kind::Inet { oid: 869 }),
        ((-1, b'i'), array_of(23, 4, b'i', Kind::Int4)),
        ((-1, b'i'), array_of(25, -1, b'i', Kind::Text { oid: 25 })),
        (
            (8, b'd'),
            Kind::Fixed {
                oid: 1184,
                len: 8,
                byval: true,
            },
        ),
        ((-1, b'i'), Kind::Bytea),
        // An enum column: stored as its label's text (records of earlier builds held the label's
        // OID: Kind::Enum, in audit_kinds()).
        ((-1, b'i'), Kind::Text { oid: 25 }),
    ]
}

/// Every kind a value can be checked as, for `audit_values` (the first input byte picks one).
pub fn audit_kinds() -> Vec<Kind> {
    let mut kinds: Vec<Kind> = audit_columns().into_iter().map(|(_, k)| k).collect();
    kinds.push(Kind::Enum { oid: 0 });
    kinds.push(array_of(1700, -1, b'i', Kind::Numeric));
    kinds.push(array_of(3802, -1, b'i', Kind::Jsonb));
    kinds.push(array_of(869, -1, b'i', Kind::Inet { oid: 869 }));
    kinds.push(array_of(20, 8, b'd', Kind::Int8));
    kinds.push(array_of(19, 64, b'c', Kind::Name));
    kinds
}

/// Most bytes one allocation may ask for: a parser of hostile input must not let the input
/// choose a huge allocation. libFuzzer's own `-malloc_limit_mb` needs a sanitizer runtime, which
/// the stable toolchain here does not build with, so the targets check it in their allocator.
pub const MAX_ALLOCATION: usize = 64 << 20;

struct Limited;

// SAFETY: forwards to the system allocator unchanged; only refuses (by aborting with a message,
// which libFuzzer reports as a crash and saves the input of) requests over MAX_ALLOCATION.
unsafe impl std::alloc::GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        check(layout.size());
        std::alloc::System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        check(layout.size());
        std::alloc::System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        check(new);
        std::alloc::System.realloc(ptr, layout, new)
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No allocation here (the message is static): print and abort.
        let msg = b"pgauth-fuzz: an allocation over 64 MiB\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
        std::process::abort();
    }
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;
