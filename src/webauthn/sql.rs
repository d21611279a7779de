//! SQL functions for passkeys (placeholder while the core is tested).
