//! Every bound pgauth puts on passwords, hashing settings and the parameters found inside stored
//! hashes. Stored hashes are input too: a hash that asks for more work than these bounds is
//! refused before any work is done, so a planted hash cannot tie up a backend.

/// Longest password accepted by hashing, verification and policy checks, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Argon2 memory cost, KiB. The GUC range and the range accepted inside stored hashes' upper bound.
pub const ARGON2_MIN_MEMORY_KIB: u32 = 8192;
pub const ARGON2_MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Argon2 iterations (time cost).
pub const ARGON2_MIN_ITERATIONS: u32 = 1;
pub const ARGON2_MAX_ITERATIONS: u32 = 64;
/// Argon2 lanes.
pub const ARGON2_MIN_PARALLELISM: u32 = 1;
pub const ARGON2_MAX_PARALLELISM: u32 = 16;
/// Upper bound on memory × iterations of a stored hash (KiB), e.g. 1 GiB × 4 or 64 MiB × 64.
pub const ARGON2_MAX_WORK: u64 = 4 * 1024 * 1024;
/// Stored-hash parallelism may exceed what pgauth itself writes (other tools use up to 64 lanes).
pub const ARGON2_MAX_STORED_PARALLELISM: u32 = 64;
/// Salt and output lengths accepted inside stored Argon2 hashes, bytes.
pub const ARGON2_SALT_BYTES: (usize, usize) = (8, 64);
pub const ARGON2_OUTPUT_BYTES: (usize, usize) = (4, 128);

/// Salt and output that pgauth writes.
pub const ARGON2_NEW_SALT_BYTES: usize = 16;
pub const ARGON2_NEW_OUTPUT_BYTES: usize = 32;

/// bcrypt cost factor (log2 rounds). 16 takes a few seconds; 31 would take days.
pub const BCRYPT_COST: (u32, u32) = (4, 16);

/// PBKDF2 iteration count (Django 5 uses 1,000,000; passlib 29,000).
pub const PBKDF2_ITERATIONS: (u64, u64) = (1, 5_000_000);
/// PBKDF2 salt length in bytes after decoding.
pub const PBKDF2_SALT_BYTES: (usize, usize) = (1, 1024);

/// sha-crypt rounds: crypt(3) writes at least 1,000; 5,000 is its default.
pub const SHA_CRYPT_ROUNDS: (u64, u64) = (1_000, 5_000_000);
