//! Helpers for the `#[pg_test]`s of every capability.

use pgrx::prelude::*;

/// Run `query` in a subtransaction and return the SQLSTATE it failed with, or None if it
/// succeeded.
pub fn sqlstate_of(query: &str) -> Option<String> {
    // A success raises this made-up SQLSTATE, so "no error" and "some error" cannot be confused.
    const SUCCEEDED: &str = "PGA00";
    let wrapped = format!(
        "DO $t$ BEGIN PERFORM ({query}); RAISE EXCEPTION USING ERRCODE = '{SUCCEEDED}'; \
         EXCEPTION WHEN others THEN PERFORM pg_catalog.set_config('pgauth_test.state', SQLSTATE, true); END $t$"
    );
    Spi::run(&wrapped).unwrap();
    let state = Spi::get_one::<String>("SELECT pg_catalog.current_setting('pgauth_test.state')")
        .unwrap()
        .unwrap_or_default();
    (state != SUCCEEDED).then_some(state)
}

/// The boolean a one-row, one-column query returns.
pub fn one_bool(query: &str) -> bool {
    Spi::get_one::<bool>(query).unwrap().unwrap()
}
