//! What differs between the PostgreSQL majors pgauth builds for (15 to 18), in one place, so
//! that the rest of the crate reads the same on every major. Each function behaves identically
//! on all of them; only the way to reach PostgreSQL changes.

use pgrx::pg_sys;

/// The backend's local transaction id (`MyProc->lxid`; `MyProc->vxid.lxid` from 17).
///
/// # Safety
/// In a backend or parallel worker with `MyProc` set.
pub unsafe fn local_transaction_id() -> u32 {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    return (*pg_sys::MyProc).lxid;
    #[cfg(not(any(feature = "pg15", feature = "pg16")))]
    return (*pg_sys::MyProc).vxid.lxid;
}

/// Attribute `i` (from 0) of a tuple descriptor, as C's `TupleDescAttr`. From 18 the
/// `pg_attribute` array follows an array of `CompactAttribute`s instead of being the last field.
///
/// # Safety
/// `desc` is a valid tuple descriptor and `i < natts`.
pub unsafe fn tuple_desc_attr(
    desc: pg_sys::TupleDesc,
    i: usize,
) -> *mut pg_sys::FormData_pg_attribute {
    #[cfg(not(feature = "pg18"))]
    return (*desc).attrs.as_mut_ptr().add(i);
    #[cfg(feature = "pg18")]
    return (*desc)
        .compact_attrs
        .as_mut_ptr()
        .add((*desc).natts as usize)
        .cast::<pg_sys::FormData_pg_attribute>()
        .add(i);
}

/// The relation's primary key index, or `InvalidOid`; a deferrable primary key counts as none,
/// as it always did before 18 made that a parameter.
///
/// # Safety
/// `rel` is an open relation.
pub unsafe fn primary_key_index(rel: pg_sys::Relation) -> pg_sys::Oid {
    #[cfg(not(feature = "pg18"))]
    return pg_sys::RelationGetPrimaryKeyIndex(rel);
    #[cfg(feature = "pg18")]
    return pg_sys::RelationGetPrimaryKeyIndex(rel, false);
}

/// Index entries for a freshly inserted heap tuple (a plain insert: no update, no arbiter
/// indexes). 16 added the trailing `onlySummarizing` flag, which only matters for HOT updates.
///
/// # Safety
/// As `ExecInsertIndexTuples`: indices opened on `rri`, `slot` holds the inserted tuple.
pub unsafe fn insert_index_tuples(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
) {
    let (no_conflict, no_arbiters) = (std::ptr::null_mut(), std::ptr::null_mut());
    #[cfg(feature = "pg15")]
    pg_sys::ExecInsertIndexTuples(rri, slot, estate, false, false, no_conflict, no_arbiters);
    #[cfg(not(feature = "pg15"))]
    pg_sys::ExecInsertIndexTuples(
        rri,
        slot,
        estate,
        false,
        false,
        no_conflict,
        no_arbiters,
        false,
    );
}
