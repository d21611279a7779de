//! Authorization: users, groups, roles with inheritance, permissions and scoped, network- and
//! time-conditioned role assignments (tables and administration in `sql/rbac.sql`), and the
//! permission checks that run per row inside row-level-security policies.
//!
//! `model.rs` is plain Rust: a user's effective permissions and the check. `sql.rs` loads them
//! once per user into backend memory (invalidated by a generation counter at each statement), so
//! a per-row check is hash lookups with no SPI.

pub mod model;
pub(crate) mod sql;
