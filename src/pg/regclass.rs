//! `regclass` arguments that may name no relation.
//!
//! A regclass literal can be a bare OID (`'5'::regclass`), which PostgreSQL accepts without
//! looking it up; pgrx's `PgRelation` then opens it with `relation_open`, which fails with
//! XX000 ("could not open relation with OID 5"). [`RegclassArg`] opens it with
//! `try_relation_open` and raises 42P01 when there is no such relation.

use crate::error::AuthError;
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{pg_sys, FromDatum, PgRelation};

/// The relation of a `regclass` argument, opened with AccessShareLock (kept to the end of the
/// transaction, as relation_open's callers here expect).
pub struct RegclassArg(pub PgRelation);

impl FromDatum for RegclassArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<RegclassArg> {
        if is_null {
            return None;
        }
        // SAFETY: a regclass datum is an OID; try_relation_open returns NULL when no relation
        // has it, and an open relation otherwise, closed when the PgRelation is dropped.
        unsafe {
            let oid = pg_sys::Oid::from_datum(datum, false)?;
            let rel = pg_sys::try_relation_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            if rel.is_null() {
                AuthError::NoSuchRelation(format!(
                    "relation with OID {} does not exist",
                    oid.to_u32()
                ))
                .raise();
            }
            Some(RegclassArg(PgRelation::from_pg_owned(rel)))
        }
    }
}

// SAFETY: unboxing goes through FromDatum, as pgrx does for its own PgRelation.
unsafe impl<'fcx> ArgAbi<'fcx> for RegclassArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: RegclassArg is read from a regclass datum; it is never returned.
unsafe impl SqlTranslatable for RegclassArg {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RegclassArg);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("regclass"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("regclass")));
}
