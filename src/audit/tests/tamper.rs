//! The verifier against tampering: modified, deleted, forged and swapped records, a rewritten
//! or cut chain, archived parts, unsealed records, chunked verification.

use super::*;

#[test]
fn an_intact_log_verifies() {
    let (chain, rows) = sample();
    let v = verify(&chain, &rows, None);
    assert_eq!(
        v,
        Verdict {
            ok: true,
            checked: 6,
            first_bad_id: None,
            reason: None
        }
    );
    let head = Head {
        position: 3,
        digest: chain[2].chain_digest.clone(),
    };
    assert!(verify(&chain, &rows, Some(&head)).ok);
}

#[test]
fn a_modified_row_is_found_at_its_id() {
    let (chain, mut rows) = sample();
    rows[3].0.events = rows[3]
        .0
        .events
        .as_ref()
        .map(|e| e.replace("{\"id\": 4}", "{\"id\": 40}"));
    assert_ne!(rows[3].0.events, sample().1[3].0.events);
    let v = verify(&chain, &rows, None);
    assert!(!v.ok);
    assert_eq!(v.first_bad_id, Some(4));
    assert!(v.reason.unwrap().contains("modified"));
}

#[test]
fn a_modified_row_with_a_recomputed_digest_fails_its_transaction() {
    let (chain, mut rows) = sample();
    rows[4].0.event = "insert".into();
    rows[4].1 = rows[4].0.digest().to_vec();
    let v = verify(&chain, &rows, None);
    assert_eq!(
        v.first_bad_id,
        Some(1),
        "reported at the transaction's first id"
    );
    assert!(v.reason.unwrap().contains("do not match its digest"));
}

#[test]
fn a_deleted_row_is_found() {
    let (chain, mut rows) = sample();
    rows.remove(2); // id 3, transaction 900 (ids 1, 3, 5)
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(1));
    assert!(v.reason.unwrap().contains("3 audit records, 2 remain"));
    let (chain, mut rows) = sample();
    rows.remove(5); // the only row of the last transaction
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
}

#[test]
fn a_forged_row_is_found() {
    let (chain, mut rows) = sample();
    let forged = row(7, 999, "insert", Some("{}"));
    let d = forged.digest().to_vec();
    rows.push((forged, d));
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(7));
    assert!(v.reason.unwrap().contains("not covered by the audit chain"));
    // Forged into an existing transaction, past its last id.
    let (chain, mut rows) = sample();
    let forged = row(8, 902, "insert", Some("{}"));
    let d = forged.digest().to_vec();
    rows.push((forged, d));
    assert_eq!(verify(&chain, &rows, None).first_bad_id, Some(8));
}

#[test]
fn swapped_rows_are_found_at_the_lower_id() {
    let (chain, mut rows) = sample();
    // Swap everything but the id, digests included.
    let (a, b) = (rows[1].clone(), rows[3].clone());
    rows[1] = (
        AuditRecord {
            id: 2,
            last_id: 2,
            ..b.0
        },
        b.1,
    );
    rows[3] = (
        AuditRecord {
            id: 4,
            last_id: 4,
            ..a.0
        },
        a.1,
    );
    assert_eq!(verify(&chain, &rows, None).first_bad_id, Some(2));
}

#[test]
fn chain_tampering_is_found() {
    // An entry modified.
    let (mut chain, rows) = sample();
    chain[1].txns[0].record_count = 3;
    let v = verify(&chain, &rows, None);
    assert!(!v.ok);
    // An entry removed together with its rows.
    let (mut chain, mut rows) = sample();
    chain.remove(1);
    rows.retain(|(r, _)| r.txid != 901);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
    assert!(v.reason.unwrap().contains("follows position 1"));
    // Two entries swapped, positions renumbered.
    let (mut chain, rows) = sample();
    chain.swap(0, 1);
    chain[0].position = 1;
    chain[1].position = 2;
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(1));
    assert!(v.reason.unwrap().contains("does not follow"));
}

#[test]
fn a_cut_tail_is_found_only_with_a_stored_head() {
    let (chain, rows) = sample();
    let head = Head {
        position: 3,
        digest: chain[2].chain_digest.clone(),
    };
    let (short_chain, short_rows) = (&chain[..2], &rows[..5]);
    assert!(verify(short_chain, short_rows, None).ok);
    let v = verify(short_chain, short_rows, Some(&head));
    assert!(!v.ok);
    assert_eq!(v.first_bad_id, None);
    assert!(v.reason.unwrap().contains("tail"));
    // A rewritten chain does not have the stored digest at the head's position.
    let mut wrong = head.clone();
    wrong.digest[0] ^= 1;
    assert_eq!(verify(&chain, &rows, Some(&wrong)).first_bad_id, Some(6));
}

#[test]
fn the_verifying_transaction_own_rows_are_skipped() {
    let (chain, mut rows) = sample();
    let mine = row(9, 1234, "key_created", None);
    let d = mine.digest().to_vec();
    rows.push((mine, d));
    let v = feed(
        Verifier::new(GENESIS, None, Some(1234)),
        &chain,
        &rows,
        None,
    );
    assert!(v.ok);
}

#[test]
fn verification_can_start_after_an_archived_part() {
    let (chain, rows) = sample();
    // Entries 2.. with the stored digest of entry 1 as anchor (what a retained checkpoint gives).
    let anchor: AuditDigest = chain[0].chain_digest.as_slice().try_into().unwrap();
    let kept = rows.iter().filter(|(r, _)| r.txid != 900);
    let verdict = feed(Verifier::new(anchor, None, None), &chain[1..], kept, None);
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.checked, 3);
    // A wrong anchor breaks the first link.
    let v = feed(Verifier::new(GENESIS, None, None), &chain[1..], &[], None);
    assert!(!v.ok);
}

#[test]
fn a_statement_record_is_checked_whole() {
    // Transaction 950 wrote one statement of three events (ids 10..12) in one record (the
    // frames' contents do not matter to the digest).
    let record = AuditRecord {
        last_id: 12,
        event_count: 3,
        events: None,
        shape: Some(r#"{"columns":[["id","integer",-1,true,true,23]]}"#.into()),
        rows: Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ..row(10, 950, "insert", None)
    };
    let (chain, rows) = build(&[(950, vec![record])]);
    let v = verify(&chain, &rows, None);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 3, "checked counts events");
    // One byte of the rows changed: reported at the record's first event id.
    let mut bad = rows.clone();
    if let Some(r) = bad[0].0.rows.as_mut() {
        r[4] ^= 1;
    }
    let v = verify(&chain, &bad, None);
    assert_eq!(v.first_bad_id, Some(10));
    assert!(v
        .reason
        .unwrap()
        .contains("audit record 10..12 was modified"));
    // A record claiming ids beyond its transaction's.
    let mut bad = rows.clone();
    bad[0].0.last_id = 13;
    bad[0].0.event_count = 4;
    let v = verify(&chain, &bad, None);
    assert_eq!(v.first_bad_id, Some(10));
    assert!(v.reason.unwrap().contains("outside the ids"));
    // A count that does not match the ids.
    let mut bad = rows.clone();
    bad[0].0.event_count = 2;
    let v = verify(&chain, &bad, None);
    assert_eq!(v.first_bad_id, Some(10));
    assert!(v.reason.unwrap().contains("overlaps"));
}

#[test]
fn unsealed_records_are_checked_by_their_own_digest() {
    let (chain, mut rows) = sample();
    // Transaction 1005 committed after the last seal (horizon 1000; next id 2000).
    let late = row(9, 1005, "insert", Some("{}"));
    let d = late.digest().to_vec();
    rows.push((late, d));
    let run = |rows: &[(AuditRecord, Vec<u8>)], next: u64| {
        let v = Verifier::new(GENESIS, None, None).with_unsealed(1000, next);
        feed(v, &chain, rows, None)
    };
    let v = run(&rows, 2000);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 7);
    // Changed without its digest: found.
    let mut bad = rows.clone();
    bad[6].0.event = "delete".into();
    let v = run(&bad, 2000);
    assert_eq!(v.first_bad_id, Some(9));
    assert!(v.reason.unwrap().contains("not sealed yet"));
    // A transaction id the server has not assigned yet: forged.
    let v = run(&rows, 1004);
    assert_eq!(v.first_bad_id, Some(9));
    assert!(v.reason.unwrap().contains("not covered"));
    // Below the horizon and not in the chain: forged.
    let mut forged = rows.clone();
    forged[6].0.txid = 999;
    forged[6].1 = forged[6].0.digest().to_vec();
    assert_eq!(run(&forged, 2000).first_bad_id, Some(9));
}

#[test]
fn an_entry_at_or_above_its_horizon_is_forged() {
    // A transaction at or above its entry's horizon, with every digest recomputed.
    let (mut chain, rows) = sample();
    chain[2].horizon = chain[2].txns[0].txid;
    reseal(&mut chain, GENESIS);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
    assert!(v.reason.unwrap().contains("outside its range"));
    // Below where the entry starts.
    let (mut chain, rows) = sample();
    chain[2].from_horizon = 903;
    chain[2].horizon = 1000;
    reseal(&mut chain, GENESIS);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
    // An entry that does not start where the previous one ended leaves a gap in which
    // records could hide.
    let (mut chain, rows) = sample();
    chain[1].from_horizon = 800;
    reseal(&mut chain, GENESIS);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(2));
    assert!(v
        .reason
        .unwrap()
        .contains("not where the previous entry ended"));
}

#[test]
fn a_seal_of_several_transactions_pinpoints_the_bad_one() {
    // One entry sealing three transactions, another sealing one.
    let (chain, rows) = build_batches(&[
        vec![
            (
                700,
                vec![row(1, 700, "insert", None), row(4, 700, "insert", None)],
            ),
            (702, vec![row(2, 702, "insert", None)]),
            (705, vec![row(3, 705, "delete", None)]),
        ],
        vec![(710, vec![row(5, 710, "insert", None)])],
    ]);
    assert_eq!(chain.len(), 2);
    let v = verify(&chain, &rows, None);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 5);
    // A record of the entry's second transaction deleted: reported at that transaction.
    let kept: Vec<_> = rows.iter().filter(|(r, _)| r.id != 2).cloned().collect();
    let v = verify(&chain, &kept, None);
    assert_eq!(v.first_bad_id, Some(2));
    assert!(v.reason.unwrap().contains("transaction 702"));
    // A transaction dropped from the entry (digests recomputed): its record is not covered.
    let mut forged = chain.clone();
    forged[0].txns.remove(2);
    reseal(&mut forged, GENESIS);
    let v = verify(&forged, &rows, None);
    assert_eq!(v.first_bad_id, Some(3));
    assert!(v.reason.unwrap().contains("not covered"));
    // Transactions listed out of order (digests recomputed).
    let mut forged = chain.clone();
    forged[0].txns.swap(1, 2);
    reseal(&mut forged, GENESIS);
    let v = verify(&forged, &rows, None);
    assert_eq!(v.first_bad_id, Some(2));
    assert!(v.reason.unwrap().contains("out of order"));
    // The same transaction in two entries.
    let mut forged = chain.clone();
    let twice = forged[0].txns[0].clone();
    forged[1].txns.insert(0, SealedTxn { txid: 700, ..twice });
    forged[1].from_horizon = 700;
    forged[0].horizon = 700;
    reseal(&mut forged, GENESIS);
    assert!(!verify(&forged, &rows, None).ok);
}

#[test]
fn overlapping_or_unreserved_ids_are_found() {
    let (chain, mut rows) = sample();
    // A forged record reusing id 3's range, in a transaction not yet sealed.
    let forged = row(3, 1005, "insert", Some("{}"));
    let d = forged.digest().to_vec();
    rows.insert(3, (forged, d));
    let run = |rows: &[(AuditRecord, Vec<u8>)], max_id: i64| {
        let v = Verifier::new(GENESIS, None, None)
            .with_unsealed(1000, 2000)
            .with_max_id(max_id);
        feed(v, &chain, rows, None)
    };
    let v = run(&rows, 100);
    assert_eq!(v.first_bad_id, Some(3), "{v:?}");
    assert!(v.reason.unwrap().contains("overlaps"));
    // Beyond the ids reserved so far.
    let (_, mut rows) = sample();
    let late = row(9, 1005, "insert", Some("{}"));
    let d = late.digest().to_vec();
    rows.push((late, d));
    assert!(run(&rows, 9).ok);
    assert_eq!(run(&rows, 8).first_bad_id, Some(9));
}

#[test]
fn verification_in_chunks_gives_the_same_verdict() {
    let (chain, rows) = build_batches(&[
        vec![
            (
                700,
                vec![row(1, 700, "insert", None), row(4, 700, "insert", None)],
            ),
            (702, vec![row(2, 702, "insert", None)]),
        ],
        vec![(705, vec![row(3, 705, "delete", None)])],
        vec![(710, vec![row(5, 710, "insert", None)])],
    ]);
    // What the SQL layer does: each chunk's entries, then the records in their horizons.
    let chunked = |rows: &[(AuditRecord, Vec<u8>)]| {
        let mut v = Verifier::new(GENESIS, None, None).with_unsealed(1000, 2000);
        for (r, _) in rows {
            v.check_ids(r.id, r.last_id, r.event_count, r.txid);
        }
        for chunk in [&chain[..2], &chain[2..]] {
            let (from, to) = (chunk[0].from_horizon, chunk[chunk.len() - 1].horizon);
            for e in chunk {
                v.add_entry(e.clone());
            }
            for (r, d) in rows.iter().filter(|(r, _)| r.txid >= from && r.txid < to) {
                v.add_record(r, d);
            }
            v.end_chunk();
        }
        for (r, d) in rows.iter().filter(|(r, _)| r.txid >= 1000) {
            v.add_record(r, d);
        }
        v.finish(None)
    };
    let v = chunked(&rows);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 5);
    assert_eq!(v, verify(&chain, &rows, None));
    // A record deleted from the first chunk is found when that chunk ends.
    let kept: Vec<_> = rows.iter().filter(|(r, _)| r.id != 4).cloned().collect();
    let v = chunked(&kept);
    assert_eq!(v.first_bad_id, Some(1));
    assert!(v
        .reason
        .unwrap()
        .contains("committed 2 audit records, 1 remain"));
    // A record not sealed yet is checked by its own digest.
    let mut late = rows.clone();
    let r = row(6, 1500, "insert", None);
    let d = r.digest().to_vec();
    late.push((r, d));
    assert!(chunked(&late).ok);
    late[5].0.event = "delete".into();
    assert_eq!(chunked(&late).first_bad_id, Some(6));
}

#[test]
fn a_sealed_transaction_takes_its_records_in_id_order() {
    let (a, b) = ([1u8; 64], [2u8; 64]);
    let mut shuffled = [(7, 9, b), (3, 3, a)];
    let t = SealedTxn::of_records(42, &mut shuffled);
    assert_eq!(
        t.txn_digest,
        txn_digest(42, [(3, 3, &a), (7, 9, &b)]).to_vec()
    );
    assert_eq!((t.first_id, t.last_id, t.record_count), (3, 9, 2));
}
