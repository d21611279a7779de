//! `jsonb` arguments read by pgauth itself.
//!
//! pgrx's `JsonB` turns the argument into a `serde_json::Value` before the function runs and
//! panics (XX000) when that fails, and jsonb accepts what serde_json cannot hold: a number such
//! as `1e400` or `-1e400` (jsonb keeps numerics of any size). [`JsonbArg`] reads the same text and
//! raises 22023 instead, so a hostile document is an invalid argument, not an internal error.
//! The SQL type stays `jsonb`: the generated signatures do not change.

use crate::error::AuthError;
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{pg_sys, FromDatum};
use serde_json::Value;
use std::ffi::CStr;

/// A `jsonb` argument as a `serde_json::Value`; see the module documentation.
pub struct JsonbArg(pub Value);

/// The text of a jsonb value (`jsonb_out`) as a `serde_json::Value`; 22023 when serde_json
/// cannot represent it (numbers beyond an f64).
pub fn parse(text: &str) -> Result<Value, AuthError> {
    serde_json::from_str(text).map_err(|e| {
        AuthError::JsonArgument(format!(
            "the JSON argument cannot be read: {}",
            // serde_json's message names the position, never the value itself
            e.to_string().replace('\n', " ")
        ))
    })
}

impl FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonbArg> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb (the function's declared argument type); jsonb_out
        // returns a palloc'd NUL-terminated string in the current memory context.
        let text = unsafe {
            let cstr = pgrx::direct_function_call::<&CStr>(pg_sys::jsonb_out, &[Some(datum)])
                .unwrap_or_else(|| AuthError::Internal("jsonb_out returned NULL".into()).raise());
            cstr.to_string_lossy().into_owned()
        };
        Some(JsonbArg(parse(&text).unwrap_or_else(|e| e.raise())))
    }
}

// SAFETY: unboxing goes through FromDatum, as pgrx does for its own JsonB.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: JsonbArg is read from a jsonb datum; it is never returned.
unsafe impl SqlTranslatable for JsonbArg {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(JsonbArg);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_serde_json_cannot_hold_are_invalid_arguments() {
        for text in ["1e400", "[-1e400]", r#"{"keys": [{"version": 1e400}]}"#] {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, AuthError::JsonArgument(_)), "{text}: {err:?}");
            assert!(err.to_string().contains("cannot be read"), "{err}");
            assert!(err.hint().is_some());
        }
        assert_eq!(
            parse(r#"{"a": [1, 2.5, 18446744073709551615]}"#).unwrap()["a"][2],
            18446744073709551615u64
        );
    }
}
